//! One connection on the receiver thread: its socket, what it has read of a split
//! message, and the handler its messages go to.

use super::{End, Ended, Handler};
use crate::source::zmtp::frames::Reader;
use crate::source::zmtp::{StdStream, ZmtpError};
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};
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

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            let r = match self {
                Socket::Tcp(s) => s.write(buf),
                Socket::Unix(s) => s.write(buf),
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    /// Bytes of kernel buffer that hold what a publisher sent before the publisher's
    /// own queue (`SNDHWM`) starts to drop: measured with ~420-byte FPM frames,
    /// about 72 KB on ipc (a Unix stream socket) and 321 KB on loopback tcp
    /// (docs/performance-real-rates.md); a little below both, so the rule that
    /// reads a socket before it is half full errs early.
    fn capacity(&self) -> usize {
        match self {
            Socket::Tcp(_) => 256 * 1024,
            Socket::Unix(_) => 64 * 1024,
        }
    }
}

/// The rate a connection is assumed able to reach before it has shown one: 600 FPM
/// frames/s of ~420 bytes, so an idle loopback tcp socket is read at least every
/// half second and an idle ipc one every 125 ms while frames flow (why: the
/// receiver's module doc).
const PRIOR_RATE: f64 = 256.0 * 1024.0;

/// How fast a connection's peak rate is forgotten: it halves every this long, so a
/// rank that bursts every few seconds keeps being read at its burst's pace, and one
/// that went quiet for a minute is back to the prior.
const PEAK_HALF_LIFE: Duration = Duration::from_secs(10);

/// Shortest wait any rule asks for (a heartbeat of a few milliseconds, a socket
/// filling at line rate): below it a round would spin.
pub(super) const MIN_WAIT: Duration = Duration::from_millis(1);

/// Most bytes of PONG kept unsent for a peer that does not read them.
const MAX_OUTBOX: usize = 1024;

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
    /// When the session started (a heartbeating peer's first PING comes one
    /// interval after it).
    connected_at: Instant,
    /// The peer's heartbeat interval as seen from here, once it has sent a PING.
    heartbeat: Option<Duration>,
    /// When the last PING was read.
    last_ping: Option<Instant>,
    /// The silence after which the peer asked (PING TTL) to be dropped.
    pub(super) ttl: Option<Duration>,
    /// PONG bytes the socket did not take yet.
    outbox: Vec<u8>,
    /// The highest rate this connection has shown (bytes/s) and when.
    peak: (f64, Instant),
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
            connected_at: Instant::now(),
            heartbeat: None,
            last_ping: None,
            ttl: None,
            outbox: Vec::new(),
            peak: (0.0, Instant::now()),
        }
    }

    /// Longest the next round may wait for this connection's sake: before a PING
    /// could go unanswered past the peer's heartbeat timeout, and before the socket
    /// could be half full at the highest rate it is assumed to reach.
    ///
    /// A PING is answered within a third of the interval seen between PINGs (libzmq's
    /// timeout defaults to the interval). Before the first PING the interval is at
    /// least the session's age, so waiting at most half the age answers the first
    /// one in time too; it costs only the first rounds of a new connection.
    pub(super) fn max_wait(&self, now: Instant) -> Duration {
        let heartbeat = match self.heartbeat {
            Some(interval) => interval / 3,
            None => now.duration_since(self.connected_at) / 2,
        };
        let rate = self.peak_rate(now).max(PRIOR_RATE);
        let fill = Duration::from_secs_f64(self.socket.capacity() as f64 / 2.0 / rate);
        heartbeat.min(fill).max(MIN_WAIT)
    }

    /// Notes that `bytes` arrived over `elapsed` (since the previous round); true
    /// when the read was nearly full: the socket may already be dropping, so the
    /// next round must come at once.
    pub(super) fn note_rate(&mut self, bytes: usize, elapsed: Duration, now: Instant) -> bool {
        let rate = bytes as f64 / elapsed.as_secs_f64().max(1e-4);
        if rate >= self.peak_rate(now) {
            self.peak = (rate, now);
        }
        bytes >= self.socket.capacity() / 2
    }

    /// The highest rate this connection has shown, faded by its age (bytes/s).
    fn peak_rate(&self, now: Instant) -> f64 {
        let faded = now.duration_since(self.peak.1).as_secs_f64() / PEAK_HALF_LIFE.as_secs_f64();
        self.peak.0 * (-faded).exp2()
    }

    /// Answers the latest PING read, if any, and learns the peer's heartbeat.
    fn answer_ping(&mut self, now: Instant) -> Result<(), ZmtpError> {
        if let Some(ping) = self.reader.take_ping() {
            let since = self.last_ping.unwrap_or(self.connected_at);
            let interval = now.duration_since(since).max(MIN_WAIT);
            self.heartbeat = Some(self.heartbeat.map_or(interval, |h| h.min(interval)));
            self.last_ping = Some(now);
            self.ttl = (ping.ttl_deciseconds > 0)
                .then(|| Duration::from_millis(u64::from(ping.ttl_deciseconds) * 100));
            let (pong, len) = ping.pong();
            if self.outbox.len() + len > MAX_OUTBOX {
                return Err(ZmtpError::Protocol("peer does not read our PONGs"));
            }
            self.outbox.extend_from_slice(&pong[..len]);
        }
        while !self.outbox.is_empty() {
            match self.socket.write(&self.outbox) {
                Ok(0) => return Err(ZmtpError::Closed),
                Ok(n) => drop(self.outbox.drain(..n)),
                // Sent with the next read: a PONG is a few bytes into an idle send
                // buffer, so this is all but impossible.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Hands over the messages the handshake's reads already carried.
    pub(super) fn drain_pending(&mut self) -> Result<(), ZmtpError> {
        let Conn {
            reader, handler, ..
        } = self;
        self.received += reader.drain(|parts| handler.message(parts))?;
        reader.release();
        self.answer_ping(Instant::now())
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
        self.answer_ping(now)?;
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
