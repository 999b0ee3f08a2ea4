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
//! ([`Receiver::catch_up`], through [`crate::state::intake`]): HTTP reads, and the
//! sweeper before it would age a rank. While something consumes the event stream
//! (`/v1/stream` clients, the NATS relay, the recorder) the delay is at most
//! [`PUSH_DELAY`]. When a round reads much, the next comes sooner ([`next_delay`]),
//! so a burst never waits long in the socket.
//!
//! Idle costs nothing: with no socket ready the thread blocks in its poll, waking once
//! a second to end connections silent for longer than the re-create timeout.

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

/// Bytes one round should read from one socket at most: far below a socket's
/// receive buffer, so a burst is read before the kernel makes the publisher wait.
const ROUND_BYTES: usize = 64 * 1024;

/// The buffer every connection reads into: room for several rounds' worth of one
/// socket, so a read rarely fills it.
const SHARED_BUFFER: usize = 256 * 1024;

/// How often connections are checked for a silence beyond the timeout.
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

/// The delay before the next round, after one whose busiest socket gave `max_bytes`
/// over `elapsed` (since the round before) and where some socket may hold more
/// (`more`): the configured delay, or less if at that socket's rate it would gather
/// more than `ROUND_BYTES` (64 KiB) by then, or none when a socket has more.
pub fn next_delay(base: Duration, max_bytes: usize, elapsed: Duration, more: bool) -> Duration {
    if more {
        Duration::ZERO
    } else if max_bytes > 0 {
        base.min(elapsed.mul_f64(ROUND_BYTES as f64 / max_bytes as f64))
    } else {
        base
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
                None => HOUSEKEEPING,
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
            next = if self.ready.is_empty() {
                None
            } else {
                Some(self.round())
            };
            // Every socket with bytes when they asked has been read once.
            for w in self.waiting.drain(..) {
                let _ = w.send(());
            }
            if housekept.elapsed() >= HOUSEKEEPING {
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

    /// Reads every ready socket once; returns the delay before the next round.
    fn round(&mut self) -> Duration {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last_round);
        self.last_round = now;
        let mut max_bytes = 0;
        let mut more = false;
        let ready = std::mem::take(&mut self.ready);
        for &token in &ready {
            let Some(conn) = self.conns[token].as_mut() else {
                continue;
            };
            match conn.read_once(&mut self.shared, now) {
                Ok(r) => {
                    max_bytes = max_bytes.max(r.bytes);
                    // A closed peer is read on until its end shows.
                    if r.more || conn.peer_closed {
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
        let base = if (self.pushing)() {
            self.settings.delay.min(PUSH_DELAY)
        } else {
            self.settings.delay
        };
        next_delay(base, max_bytes, elapsed, more)
    }

    fn housekeeping(&mut self, now: Instant) {
        for token in 0..self.conns.len() {
            let Some(conn) = self.conns[token].as_ref() else {
                continue;
            };
            let silent = now.duration_since(conn.last_rx) >= self.settings.silence_timeout;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_filling_fast_shortens_the_next_delay_and_a_full_read_cancels_it() {
        let base = Duration::from_millis(50);
        let ms = Duration::from_millis;
        assert_eq!(next_delay(base, 0, ms(50), false), base);
        // At 64 KiB per 50 ms the next round may wait the whole delay.
        assert_eq!(next_delay(base, ROUND_BYTES, ms(50), false), base);
        // Four times that rate: a quarter of the delay.
        assert_eq!(next_delay(base, 4 * ROUND_BYTES, ms(50), false), ms(50) / 4);
        // A burst that began just before a short round: judged by its rate.
        assert_eq!(next_delay(base, ROUND_BYTES, ms(1), false), ms(1));
        assert_eq!(next_delay(base, 100, ms(50), true), Duration::ZERO);
    }
}
