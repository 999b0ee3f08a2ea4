//! A ZMTP 3.0 SUB receiver on tokio, for the one thing the exporter does with ZMQ:
//! connect to a PUB, subscribe to everything, read multipart messages.
//!
//! Why hand-rolled rather than the `zeromq` crate (which the publisher side, the
//! loadgen and the bench's bare-SUB baseline still use): at the rates engines send
//! (tens of frames per second per rank) the crate's receive path was the floor of the
//! exporter's CPU. It runs a reader task per connection, a fair queue whose waker does
//! a SipHash map insert per message, a codec allocating each part and a task switch
//! per message; `fpm-bench --only rates` measured a bare crate SUB that only counts at
//! 18 us/frame at 1,000 frames/s and 6 us at 10,000/s, above the exporter's budget of
//! 3 us. This client only connects and does the handshake; the connected socket is
//! then read by the shared receiver thread ([`super::receiver`]), which takes every
//! frame that arrived in one read() per socket per round and hands each complete
//! message over as slices of one shared buffer ([`frames::Reader`]). Figures, against
//! the crate and Python, in docs/performance-real-rates.md.
//!
//! Scope, on purpose: ZMTP 3.0 framing, the NULL mechanism, a SUB talking to PUB or
//! XPUB, over tcp:// (IPv4, `[v6]` and host names) and ipc://. Limits: a message of at
//! most [`frames::MAX_MESSAGE_BYTES`], [`frames::MAX_PARTS`] parts kept, the whole
//! connect and handshake within the caller's timeout. A protocol violation ends the
//! connection with a [`ZmtpError`]; the caller counts it and reconnects.

pub mod frames;
pub mod handshake;

use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Why a connection attempt or a connected stream ended.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ZmtpError {
    /// An I/O error (refused, reset...).
    #[error("{0}")]
    Io(io::ErrorKind),
    /// Connect and handshake did not finish in time.
    #[error("handshake timed out")]
    Timeout,
    /// The peer closed the stream.
    #[error("peer closed the connection")]
    Closed,
    /// The peer closed in the middle of a message (what it had sent of it is lost).
    #[error("peer closed the connection mid-message")]
    ClosedMidMessage,
    /// Not a ZMTP 3.x greeting.
    #[error("not a ZMTP greeting")]
    Greeting,
    /// A ZMTP version older than 3.0.
    #[error("unsupported ZMTP version {0}.{1}")]
    Version(u8, u8),
    /// A security mechanism other than NULL.
    #[error("unsupported mechanism {0:?}")]
    Mechanism(String),
    /// The peer closed after this many bytes of its greeting, having seen ours: how
    /// a libzmq publisher with CURVE (10 bytes) or PLAIN (none) refuses NULL.
    #[error("publisher closed during the greeting after {0} bytes: it requires a security mechanism (CURVE or PLAIN) and refuses NULL")]
    GreetingCut(usize),
    /// A peer that is not a publisher.
    #[error("peer socket type {0:?} is not PUB or XPUB")]
    SocketType(String),
    /// The peer sent an ERROR command.
    #[error("peer sent ERROR: {0}")]
    PeerError(String),
    /// A frame or message beyond [`frames::MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(u64),
    /// Bytes that break the framing rules.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

impl From<io::Error> for ZmtpError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => ZmtpError::Closed,
            kind => ZmtpError::Io(kind),
        }
    }
}

impl ZmtpError {
    /// Whether the peer broke the protocol (worth telling an operator), as opposed to
    /// it being absent, slow or gone.
    pub fn is_protocol(&self) -> bool {
        !matches!(
            self,
            ZmtpError::Io(_) | ZmtpError::Timeout | ZmtpError::Closed | ZmtpError::ClosedMidMessage
        )
    }

    /// Why a handshake failed, as the `reason` of `fpm_endpoint_handshake_failures_total`:
    /// `security` (the publisher requires CURVE or PLAIN), `denied` (it sent ERROR,
    /// e.g. its ZAP handler refused us) or `protocol` (not a ZMTP 3 PUB); None for
    /// an absent or slow peer, which is no failure of the handshake itself.
    pub fn handshake_reason(&self) -> Option<HandshakeFailure> {
        match self {
            ZmtpError::GreetingCut(_) | ZmtpError::Mechanism(_) => Some(HandshakeFailure::Security),
            ZmtpError::PeerError(_) => Some(HandshakeFailure::Denied),
            ZmtpError::Greeting
            | ZmtpError::Version(..)
            | ZmtpError::SocketType(_)
            | ZmtpError::TooLarge(_)
            | ZmtpError::Protocol(_) => Some(HandshakeFailure::Protocol),
            ZmtpError::Io(_)
            | ZmtpError::Timeout
            | ZmtpError::Closed
            | ZmtpError::ClosedMidMessage => None,
        }
    }
}

/// Why a handshake with a publisher failed (a label value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The publisher requires a security mechanism (CURVE, PLAIN) the exporter does
    /// not speak.
    Security,
    /// The publisher sent ERROR (its ZAP handler refused us).
    Denied,
    /// Not a ZMTP 3 publisher (garbage greeting, old version, not PUB/XPUB).
    Protocol,
}

impl HandshakeFailure {
    /// Every reason, in label order.
    pub const ALL: [HandshakeFailure; 3] = [
        HandshakeFailure::Security,
        HandshakeFailure::Denied,
        HandshakeFailure::Protocol,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Security => "security",
            HandshakeFailure::Denied => "denied",
            HandshakeFailure::Protocol => "protocol",
        }
    }

    /// Index into per-reason counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A connected byte stream, tcp or ipc.
#[derive(Debug)]
pub enum Stream {
    /// tcp://host:port
    Tcp(TcpStream),
    /// ipc://path (a Unix domain socket)
    Unix(UnixStream),
}

impl Stream {
    /// Opens the transport of a `tcp://` or `ipc://` address.
    async fn open(address: &str) -> Result<Stream, ZmtpError> {
        if let Some(hostport) = address.strip_prefix("tcp://") {
            // ToSocketAddrs takes "127.0.0.1:p", "[::1]:p" and "host:p" (resolved).
            let s = TcpStream::connect(hostport).await?;
            // FPM frames are small and must go out one by one; only the handshake
            // and the subscription are ever written, so this costs nothing.
            s.set_nodelay(true)?;
            Ok(Stream::Tcp(s))
        } else if let Some(path) = address.strip_prefix("ipc://") {
            Ok(Stream::Unix(UnixStream::connect(path).await?))
        } else {
            Err(ZmtpError::Protocol("address is neither tcp:// nor ipc://"))
        }
    }

    pub(crate) async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf).await,
            Stream::Unix(s) => s.read(buf).await,
        }
    }

    pub(crate) async fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.read_exact(buf).await.map(drop),
            Stream::Unix(s) => s.read_exact(buf).await.map(drop),
        }
    }

    pub(crate) async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(buf).await,
            Stream::Unix(s) => s.write_all(buf).await,
        }
    }
}

/// A subscribed connection to one publisher.
#[derive(Debug)]
pub struct Subscription {
    stream: Stream,
    reader: frames::Reader,
}

impl Subscription {
    /// Connects to `address`, completes the handshake and subscribes to everything,
    /// all within `timeout`.
    pub async fn connect(address: &str, timeout: Duration) -> Result<Subscription, ZmtpError> {
        let attempt = async {
            let mut stream = Stream::open(address).await?;
            handshake::run(&mut stream).await?;
            Ok(Subscription {
                stream,
                reader: frames::Reader::default(),
            })
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| ZmtpError::Timeout)?
    }

    /// Waits for bytes and reads what has arrived (cancel-safe: nothing is lost if the
    /// future is dropped). Tokio clears the socket's readiness after a short read, so
    /// a wake costs one read() syscall, not a second one returning EAGAIN.
    pub async fn read(&mut self) -> Result<(), ZmtpError> {
        let n = self.stream.read(self.reader.spare()).await?;
        if n == 0 {
            return Err(if self.reader.pending().is_empty() {
                ZmtpError::Closed
            } else {
                ZmtpError::ClosedMidMessage
            });
        }
        self.reader.filled(n);
        Ok(())
    }

    /// Hands every complete message read so far to `f`; returns how many.
    pub fn drain(&mut self, f: impl FnMut(&[&[u8]])) -> Result<u64, ZmtpError> {
        self.reader.drain(f)
    }

    /// The connected socket, out of tokio's reactor (non-blocking), and what was read
    /// past the handshake: for a receiver that polls sockets itself.
    pub fn into_std(self) -> io::Result<(StdStream, frames::Reader)> {
        let stream = match self.stream {
            Stream::Tcp(s) => StdStream::Tcp(s.into_std()?),
            Stream::Unix(s) => StdStream::Unix(s.into_std()?),
        };
        Ok((stream, self.reader))
    }
}

/// A connected, non-blocking socket outside tokio.
#[derive(Debug)]
pub enum StdStream {
    /// tcp://host:port
    Tcp(std::net::TcpStream),
    /// ipc://path
    Unix(std::os::unix::net::UnixStream),
}
