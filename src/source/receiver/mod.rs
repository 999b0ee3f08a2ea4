//! One thread reads every connected publisher socket, in rounds: it waits out a
//! delay, asks its own poll which sockets have bytes, reads each of them once and
//! hands every complete message to that endpoint's handler. Connecting, the
//! handshake and backing off stay in each endpoint's tokio task
//! ([`super::subscriber`]), which hands its connected socket over here and gets its
//! handler back, with why the session ended, when it does.
//!
//! Why a thread of its own and a delay: engines send tens of frames per second per
//! rank, so on tokio each frame arrived alone and paid for a whole wakeup (epoll,
//! unparking a worker, one read(), parking again): about 15 us of CPU per frame at
//! 1,000 frames/s, whoever parsed the bytes. Waiting up to `--receive-delay` between
//! rounds lets every rank's frames of that time come in one wakeup, one poll and one
//! read per socket. What a frame costs is then set by how many frames one read()
//! brings (a read of a loopback TCP socket costs ~5 us here, a wakeup 40-120 us):
//! 64 ranks at 1,000 frames/s in all is 15.6 frames/s per rank, under one frame per
//! read at 50 ms rounds (6-7 us of transport per frame) and eight at 500 ms (1.3 us),
//! so the default is 500 ms (docs/performance-real-rates.md has the figures).
//!
//! Nobody reads numbers that old: every reader of the state first asks for a round
//! ([`Receiver::catch_up`], through [`crate::state::intake`]) that reads every socket
//! until it is empty: HTTP reads, and the sweeper before it would age a rank. While
//! something consumes the event stream (`/v1/stream` clients, the NATS relay, the
//! recorder) the delay is at most [`PUSH_DELAY`].
//!
//! Nothing a prompt reader would get is lost to the delay either. A publisher's
//! frames wait in the kernel's socket buffer (about 169 FPM frames on ipc, 758 on
//! loopback tcp) and then in its own queue (`SNDHWM`, 1,000 by default) before it
//! drops any, so each round waits no longer than every connection allows
//! ([`conn::Conn::max_wait`]): a socket is read before it could be half full at the
//! highest rate it has shown lately (or 600 frames/s before it has shown one), a
//! read that came back nearly full brings the next round at once, and after a
//! quiet spell the waits start at [`PROBE`] and at most double per round, so a
//! burst out of idle is measured before the waits grow. A publisher with ZMTP
//! heartbeats (`ZMQ_HEARTBEAT_IVL`) gets its PONG within a third of its interval,
//! and one whose PING carries a TTL is dropped after that long a silence.
//!
//! Idle costs nothing: with no socket ready the thread blocks in its poll, waking once
//! a second (or sooner for a peer's TTL) to end connections silent for too long.

mod conn;

use crate::source::zmtp::{Subscription, ZmtpError};
use conn::{Conn, Socket};
use mio::{Events, Interest, Poll, Token, Waker};
use std::io;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Default of `--receive-delay` (why this long: the module's doc).
pub const DEFAULT_RECEIVE_DELAY: Duration = Duration::from_millis(500);

/// Longest delay while something consumes the event stream: a pushed frame must
/// reach a stream client within a couple of milliseconds (docs/performance.md).
pub const PUSH_DELAY: Duration = Duration::from_millis(1);

/// First wait after a quiet spell (no socket had bytes): the waits then at most
/// double per round, up to the delay and what every connection allows.
pub const PROBE: Duration = Duration::from_millis(2);

/// Most reads of one socket in a catch-up round: 16 MiB, far more than any socket
/// holds, so the bound only stops a peer that sends faster than we read.
const CATCH_UP_READS: usize = 64;

/// The buffer every connection reads into: room for several rounds' worth of one
/// socket, so a read rarely fills it.
const SHARED_BUFFER: usize = 256 * 1024;

/// How often connections are checked for a silence beyond the timeout (sooner for
/// a peer whose PING asked for a shorter one).
const HOUSEKEEPING: Duration = Duration::from_secs(1);

const WAKER: Token = Token(usize::MAX);

/// What the receiver does with one connection's messages.
pub trait Handler: Send + 'static {
    /// One complete message, as its parts.
    fn message(&mut self, parts: &[&[u8]]);
}

/// Why a session ended.
#[derive(Debug, Clone)]
pub enum End {
    /// The peer closed, the stream failed, or the peer broke the protocol.
    PeerGone(ZmtpError),
    /// Nothing arrived for the silence timeout: presumed half-open.
    Silent,
}

/// A session's end, with the handler handed back.
pub struct Ended<H> {
    /// The handler the session was given.
    pub handler: H,
    /// Why it ended.
    pub reason: End,
    /// Messages it received.
    pub received: u64,
}

/// When the receiver reads.
#[derive(Debug, Clone, Copy)]
pub struct ReceiveSettings {
    /// Longest a frame waits in its socket (`--receive-delay`); zero reads every
    /// arrival at once.
    pub delay: Duration,
    /// Silence after which a connection is ended as half-open (`--reconnect-after`).
    pub silence_timeout: Duration,
}

enum Command<H> {
    Add(Box<Conn<H>>),
    /// Read what has arrived now, then answer (a reader wants fresh state).
    CatchUp(oneshot::Sender<()>),
    Stop,
}

/// The handle of a receiver thread. Dropping it stops the thread.
pub struct Receiver<H> {
    commands: mpsc::Sender<Command<H>>,
    waker: Arc<Waker>,
}

impl<H: Handler> Receiver<H> {
    /// Starts the thread. `pushing` tells whether something consumes the event
    /// stream now (asked once per round).
    pub fn start(
        settings: ReceiveSettings,
        pushing: impl Fn() -> bool + Send + 'static,
    ) -> io::Result<Receiver<H>> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (commands, rx) = mpsc::channel();
        let worker = Worker {
            poll,
            commands: rx,
            conns: Vec::new(),
            free: Vec::new(),
            ready: Vec::new(),
            shared: vec![0; SHARED_BUFFER],
            settings,
            pushing: Box::new(pushing),
            last_round: Instant::now(),
            last_delay: Duration::ZERO,
            housekeeping: HOUSEKEEPING,
            early: None,
            waiting: Vec::new(),
        };
        std::thread::Builder::new()
            .name("fpm-receiver".into())
            .spawn(move || worker.run())?;
        Ok(Receiver { commands, waker })
    }

    /// Takes over a connected subscription; the returned channel yields the handler
    /// back when the session ends. Fails (handing the handler back) only when the
    /// socket cannot leave tokio or the receiver has stopped.
    pub fn add(&self, sub: Subscription, handler: H) -> Result<oneshot::Receiver<Ended<H>>, H> {
        let Ok((stream, reader)) = sub.into_std() else {
            return Err(handler);
        };
        let (done, ended) = oneshot::channel();
        let conn = Box::new(Conn::new(Socket::from_std(stream), reader, handler, done));
        if let Err(mpsc::SendError(Command::Add(conn))) = self.commands.send(Command::Add(conn)) {
            return Err(conn.into_handler());
        }
        // A lost wake (only if the thread is gone) is the same as a stopped receiver:
        // the session's channel closes.
        let _ = self.waker.wake();
        Ok(ended)
    }

    /// Asks for a round now; the answer comes once every socket that had bytes has
    /// been read and its messages handed over. `None` if the thread has stopped.
    pub fn catch_up(&self) -> Option<oneshot::Receiver<()>> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::CatchUp(tx)).ok()?;
        self.waker.wake().ok()?;
        Some(rx)
    }

    /// Stops the thread (its connections close) within one round.
    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
        let _ = self.waker.wake();
    }
}

impl<H> Drop for Receiver<H> {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        let _ = self.waker.wake();
    }
}

/// The delay before the next round: the configured `base`, no more than twice the
/// previous wait (from [`PROBE`] after a quiet spell), no more than the tightest
/// connection allows (`allowed`), and none when a socket may hold more (`more`).
pub fn next_delay(base: Duration, previous: Duration, allowed: Duration, more: bool) -> Duration {
    if more {
        Duration::ZERO
    } else {
        base.min(previous.saturating_mul(2).max(PROBE)).min(allowed)
    }
}

struct Worker<H> {
    poll: Poll,
    commands: mpsc::Receiver<Command<H>>,
    /// Connections by token; `None` slots are reused.
    conns: Vec<Option<Conn<H>>>,
    free: Vec<usize>,
    /// Tokens with bytes to read this round.
    ready: Vec<usize>,
    shared: Vec<u8>,
    settings: ReceiveSettings,
    pushing: Box<dyn Fn() -> bool + Send>,
    /// When the last round started (the rate of the next round's bytes is over this).
    last_round: Instant,
    /// The wait before this round (zero after a quiet spell): the next at most doubles it.
    last_delay: Duration,
    /// How often housekeeping runs (shorter while a peer asked for a short TTL).
    housekeeping: Duration,
    /// A command that cut the delay short, handled with the next ones.
    early: Option<Command<H>>,
    /// Readers waiting for the next round.
    waiting: Vec<oneshot::Sender<()>>,
}

impl<H: Handler> Worker<H> {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        // Some(d): a round read bytes, so look again after d. None: block until a
        // socket has bytes (or housekeeping is due).
        let mut next: Option<Duration> = None;
        let mut housekept = Instant::now();
        loop {
            let timeout = match next {
                Some(d) => {
                    // Waiting on the command channel, not the poll: bytes arriving
                    // meanwhile wait for the round, a reader's catch-up does not.
                    if !d.is_zero() && self.waiting.is_empty() {
                        match self.commands.recv_timeout(d) {
                            Ok(c) => self.early = Some(c),
                            Err(mpsc::RecvTimeoutError::Timeout) => {}
                            Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    Duration::ZERO
                }
                None => self.housekeeping,
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "receiver poll failed; retrying");
                    std::thread::sleep(HOUSEKEEPING);
                }
                continue;
            }
            for event in events.iter() {
                let token = event.token();
                if token == WAKER {
                    continue;
                }
                // The peer's close may come in the same edge as its last bytes: a
                // short read then says nothing of it, and no edge comes again.
                let closed = event.is_read_closed() || event.is_error();
                self.mark_ready(token.0, closed);
            }
            if !self.take_commands() {
                return;
            }
            next = if !self.ready.is_empty() {
                Some(self.round())
            } else if next.is_some() && self.last_delay > Duration::ZERO {
                // Nothing this round. While the waits are still growing, keep to
                // rounds (a steady trickle must not wake the thread per frame);
                // once a round at the longest wait found nothing, block until bytes
                // come, and the next burst starts the waits from PROBE again.
                let previous = self.last_delay;
                let delay = self.schedule(false, Instant::now());
                (delay > previous).then_some(delay)
            } else {
                None
            };
            if next.is_none() {
                self.last_delay = Duration::ZERO;
            }
            // Every socket with bytes when they asked has been read once.
            for w in self.waiting.drain(..) {
                let _ = w.send(());
            }
            if housekept.elapsed() >= self.housekeeping {
                housekept = Instant::now();
                self.housekeeping(housekept);
            }
        }
    }

    fn mark_ready(&mut self, token: usize, closed: bool) {
        if let Some(Some(c)) = self.conns.get_mut(token) {
            c.peer_closed |= closed;
            if !c.ready {
                c.ready = true;
                self.ready.push(token);
            }
        }
    }

    /// Adds new connections; false once told to stop.
    fn take_commands(&mut self) -> bool {
        loop {
            let command = match self.early.take() {
                Some(c) => c,
                None => match self.commands.try_recv() {
                    Ok(c) => c,
                    Err(mpsc::TryRecvError::Disconnected) => return false,
                    Err(mpsc::TryRecvError::Empty) => return true,
                },
            };
            match command {
                Command::Add(conn) => self.add(*conn),
                Command::CatchUp(w) => self.waiting.push(w),
                Command::Stop => return false,
            }
        }
    }

    fn add(&mut self, mut conn: Conn<H>) {
        let token = self.free.pop().unwrap_or(self.conns.len());
        let registered =
            self.poll
                .registry()
                .register(conn.socket.source(), Token(token), Interest::READABLE);
        if let Err(e) = registered {
            if token < self.conns.len() {
                self.free.push(token);
            }
            conn.finish(End::PeerGone(e.into()));
            return;
        }
        // Bytes that came with the handshake, and any already in the socket (the
        // registration may not report those: read once regardless).
        if let Err(e) = conn.drain_pending() {
            if token < self.conns.len() {
                self.free.push(token);
            }
            self.close(conn, End::PeerGone(e));
            return;
        }
        if token == self.conns.len() {
            self.conns.push(Some(conn));
        } else {
            self.conns[token] = Some(conn);
        }
        self.mark_ready(token, false);
    }

    /// Reads every ready socket once (until it is empty when a reader is waiting for
    /// fresh state); returns the delay before the next round.
    fn round(&mut self) -> Duration {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last_round);
        self.last_round = now;
        let reads = if self.waiting.is_empty() {
            1
        } else {
            CATCH_UP_READS
        };
        let mut more = false;
        let ready = std::mem::take(&mut self.ready);
        for &token in &ready {
            let Some(conn) = self.conns[token].as_mut() else {
                continue;
            };
            match read_socket(conn, &mut self.shared, now, reads) {
                Ok(r) => {
                    let full = conn.note_rate(r.bytes, elapsed, now);
                    // A closed peer is read on until its end shows.
                    if r.more || full || conn.peer_closed {
                        more = true;
                        self.ready.push(token);
                    } else {
                        conn.ready = false;
                    }
                }
                Err(e) => {
                    let conn = self.conns[token].take().expect("present");
                    self.free.push(token);
                    self.close(conn, End::PeerGone(e));
                }
            }
        }
        self.schedule(more, now)
    }

    /// The wait before the next round (see [`next_delay`]), remembered for the next.
    fn schedule(&mut self, more: bool, now: Instant) -> Duration {
        let base = if (self.pushing)() {
            self.settings.delay.min(PUSH_DELAY)
        } else {
            self.settings.delay
        };
        let allowed = self
            .conns
            .iter()
            .flatten()
            .map(|c| c.max_wait(now))
            .min()
            .unwrap_or(base);
        let delay = next_delay(base, self.last_delay, allowed, more);
        self.last_delay = delay;
        delay
    }

    fn housekeeping(&mut self, now: Instant) {
        self.housekeeping = HOUSEKEEPING;
        for token in 0..self.conns.len() {
            let Some(conn) = self.conns[token].as_ref() else {
                continue;
            };
            let timeout = match conn.ttl {
                Some(ttl) => {
                    // Checked four times per TTL, so a drop comes within 1.25 TTL.
                    self.housekeeping = self.housekeeping.min((ttl / 4).max(conn::MIN_WAIT));
                    ttl.min(self.settings.silence_timeout)
                }
                None => self.settings.silence_timeout,
            };
            let silent = now.duration_since(conn.last_rx) >= timeout;
            if silent || conn.abandoned() {
                let mut conn = self.conns[token].take().expect("present");
                conn.ready = false;
                self.ready.retain(|&t| t != token);
                self.free.push(token);
                self.close(conn, End::Silent);
            }
        }
    }

    fn close(&mut self, mut conn: Conn<H>, reason: End) {
        let _ = self.poll.registry().deregister(conn.socket.source());
        conn.finish(reason);
    }
}

/// Reads a socket up to `reads` times, stopping once a read leaves it empty.
fn read_socket<H: Handler>(
    conn: &mut Conn<H>,
    shared: &mut [u8],
    now: Instant,
    reads: usize,
) -> Result<conn::Read1, ZmtpError> {
    let mut total = conn::Read1::default();
    for _ in 0..reads {
        let r = conn.read_once(shared, now)?;
        total.bytes += r.bytes;
        total.more = r.more;
        if !r.more {
            break;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_the_probe_up_to_what_every_connection_allows() {
        let base = Duration::from_millis(500);
        let ms = Duration::from_millis;
        let any = Duration::MAX;
        // Out of a quiet spell: 2, 4, 8 ... ms, never past the delay.
        let mut d = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..10 {
            d = next_delay(base, d, any, false);
            seen.push(d.as_millis());
        }
        assert_eq!(seen, [2, 4, 8, 16, 32, 64, 128, 256, 500, 500]);
        // A connection that must be read within 40 ms caps it at once, not by a
        // fraction per round.
        assert_eq!(next_delay(base, ms(500), ms(40), false), ms(40));
        // A nearly full read: the next round comes at once.
        assert_eq!(next_delay(base, ms(500), any, true), Duration::ZERO);
        // The stream's push delay is the base then.
        assert_eq!(next_delay(PUSH_DELAY, ms(500), any, false), PUSH_DELAY);
    }

    struct Count(u64);

    impl Handler for Count {
        fn message(&mut self, _parts: &[&[u8]]) {
            self.0 += 1;
        }
    }

    #[test]
    fn a_catch_up_reads_a_socket_until_it_is_empty_not_once() {
        // 1,000 one-part messages of 100 bytes (102 KB) waiting in a socket, read
        // through a 4 KiB buffer: one read takes ~40 of them, a catch-up takes all.
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut wire = Vec::new();
        for _ in 0..1000 {
            wire.extend([0x00, 100]);
            wire.extend([7u8; 100]);
        }
        // A Unix socket pair holds about 200 KB: the whole write waits in it.
        use std::io::Write;
        theirs.write_all(&wire).unwrap();
        let (done, _ended) = oneshot::channel();
        let socket = Socket::from_std(crate::source::zmtp::StdStream::Unix(ours));
        let mut conn = Conn::new(socket, Default::default(), Count(0), done);
        let mut shared = vec![0u8; 4096];
        let now = Instant::now();
        let once = read_socket(&mut conn, &mut shared, now, 1).unwrap();
        assert_eq!(once.bytes, 4096, "one read is one buffer");
        let rest = read_socket(&mut conn, &mut shared, now, CATCH_UP_READS).unwrap();
        assert_eq!(once.bytes + rest.bytes, 102_000);
        assert!(!rest.more, "the socket is empty");
        assert_eq!(conn.into_handler().0, 1000, "every message handed over");
    }
}
