//! One connection on the receiver thread: its socket, what it has read of a split
//! message, and the handler its messages go to.

use super::{End, Ended, Handler};
use crate::source::zmtp::frames::Reader;
use crate::source::zmtp::{StdStream, ZmtpError};
use std::io::{self, Read};
use std::time::Instant;
use tokio::sync::oneshot;

/// A connected socket registered with the receiver's poll.
#[derive(Debug)]
pub(super) enum Socket {
    /// tcp://
    Tcp(mio::net::TcpStream),
    /// ipc://
    Unix(mio::net::UnixStream),
}

impl Socket {
    pub(super) fn from_std(s: StdStream) -> Socket {
        match s {
            StdStream::Tcp(s) => Socket::Tcp(mio::net::TcpStream::from_std(s)),
            StdStream::Unix(s) => Socket::Unix(mio::net::UnixStream::from_std(s)),
        }
    }

    pub(super) fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Socket::Tcp(s) => s,
            Socket::Unix(s) => s,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let r = match self {
                Socket::Tcp(s) => s.read(buf),
                Socket::Unix(s) => s.read(buf),
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

/// What one read of a connection did.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Read1 {
    /// Bytes read.
    pub(super) bytes: usize,
    /// Whether the read filled its buffer, so more may be waiting (the socket stays
    /// ready: edge-triggered polling will not say so again).
    pub(super) more: bool,
}

/// A connection the receiver owns for the length of its session.
pub(super) struct Conn<H> {
    pub(super) socket: Socket,
    reader: Reader,
    handler: H,
    done: oneshot::Sender<Ended<H>>,
    pub(super) last_rx: Instant,
    received: u64,
    /// Whether it is in the round's ready list.
    pub(super) ready: bool,
    /// Whether the poll said the peer closed (or the socket failed): read until the
    /// end, since no further readiness will be reported.
    pub(super) peer_closed: bool,
}

impl<H: Handler> Conn<H> {
    pub(super) fn new(
        socket: Socket,
        reader: Reader,
        handler: H,
        done: oneshot::Sender<Ended<H>>,
    ) -> Conn<H> {
        Conn {
            socket,
            reader,
            handler,
            done,
            last_rx: Instant::now(),
            received: 0,
            ready: false,
            peer_closed: false,
        }
    }

    /// Hands over the messages the handshake's reads already carried.
    pub(super) fn drain_pending(&mut self) -> Result<(), ZmtpError> {
        let Conn {
            reader, handler, ..
        } = self;
        self.received += reader.drain(|parts| handler.message(parts))?;
        reader.release();
        Ok(())
    }

    /// One read() of what has arrived, every complete message to the handler. With
    /// nothing pending it reads into `shared` (one buffer for every connection, so an
    /// idle connection holds none); the tail of a split message is kept, and read
    /// onto in the connection's own buffer until the message is whole.
    pub(super) fn read_once(
        &mut self,
        shared: &mut [u8],
        now: Instant,
    ) -> Result<Read1, ZmtpError> {
        let Conn {
            socket,
            reader,
            handler,
            ..
        } = self;
        let own = !reader.pending().is_empty();
        let buf: &mut [u8] = if own { reader.spare() } else { shared };
        let room = buf.len();
        let n = match socket.read(buf) {
            Ok(0) => {
                return Err(if own {
                    ZmtpError::ClosedMidMessage
                } else {
                    ZmtpError::Closed
                })
            }
            Ok(n) => n,
            // A peer said to be closed yet nothing to read: nothing more will come.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.peer_closed => {
                return Err(ZmtpError::Closed)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Read1::default()),
            Err(e) => return Err(e.into()),
        };
        let messages = if own {
            reader.filled(n);
            let m = reader.drain(|parts| handler.message(parts))?;
            reader.release();
            m
        } else {
            reader.drain_from(&shared[..n], |parts| handler.message(parts))?
        };
        self.received += messages;
        self.last_rx = now;
        Ok(Read1 {
            bytes: n,
            more: n == room,
        })
    }

    /// Whether the endpoint's task still waits for this session (it stops waiting
    /// when the exporter shuts down).
    pub(super) fn abandoned(&self) -> bool {
        self.done.is_closed()
    }

    /// The handler, for a session that never started.
    pub(super) fn into_handler(self) -> H {
        self.handler
    }

    /// Ends the session: the handler goes back to the endpoint's task with why.
    pub(super) fn finish(self, reason: End) {
        // The task may be gone (shutdown); then there is no one to tell.
        let _ = self.done.send(Ended {
            handler: self.handler,
            reason,
            received: self.received,
        });
    }
}
