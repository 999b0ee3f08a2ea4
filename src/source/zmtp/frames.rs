//! ZMTP 3.0 frames parsed straight out of the bytes read: every complete message is
//! handed over as slices of the buffer it was read into (the receiver's shared one,
//! or a connection's own while a message is split across reads), with no copy, no
//! allocation and no channel in between.
//!
//! Framing (RFC 23): one flags byte (bit 0 MORE, bit 1 LONG, bit 2 COMMAND, the other
//! bits reserved and zero), then the body size as one byte or, with LONG, eight bytes
//! big-endian, then the body. A message is the frames up to the first without MORE.

use super::ZmtpError;

/// Largest message accepted (all its parts with their frame headers, so neither big
/// parts nor a flood of empty ones get past it). The size a peer announces is
/// checked against it before anything is buffered, so a hostile header never makes
/// the exporter allocate what it claims. Far above the largest payload the decoder
/// accepts ([`crate::wire::MAX_PAYLOAD_BYTES`], 64 KiB), so an oversized FPM payload
/// (a runaway worker_id of a mebibyte, say) is still counted by its decode reason and
/// the connection kept; beyond this it is a counted receive error and a reconnect.
/// The buffer grows to it only while such a message is in flight.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Most parts kept of one message; further parts are read and dropped. An FPM message
/// has three, so a longer one is skipped by the decoder's frame-count check anyway.
pub const MAX_PARTS: usize = 8;

/// Size of a connection's own buffer when it first needs one (the handshake, or the
/// tail of a message split across reads). At rest a connection holds none: the
/// receiver reads into a buffer shared by every connection ([`Reader::drain_from`]).
const INITIAL_BUFFER: usize = 4 * 1024;

/// Free space below which the buffer is compacted (or grown) before a read.
const MIN_READ: usize = 1024;

/// Largest the buffer grows: one maximal message, room for a header and a read.
const BUFFER_CAP: usize = MAX_MESSAGE_BYTES + 2 * MIN_READ;

const MORE: u8 = 0x01;
const LONG: u8 = 0x02;
const COMMAND: u8 = 0x04;

/// One parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Flags byte (MORE, LONG, COMMAND).
    pub flags: u8,
    /// Bytes of header before the body.
    pub header_len: usize,
    /// Bytes of body.
    pub body_len: usize,
}

impl Header {
    /// Whether more frames of the same message follow.
    pub fn more(&self) -> bool {
        self.flags & MORE != 0
    }
    /// Whether this is a command frame (READY, ERROR, PING...) rather than a message part.
    pub fn command(&self) -> bool {
        self.flags & COMMAND != 0
    }
    /// Header plus body.
    pub fn total(&self) -> usize {
        self.header_len + self.body_len
    }
}

/// Parses the frame header at the start of `bytes`: None when it is not all there yet.
pub fn parse_header(bytes: &[u8]) -> Result<Option<Header>, ZmtpError> {
    let Some(&flags) = bytes.first() else {
        return Ok(None);
    };
    if flags & !(MORE | LONG | COMMAND) != 0 {
        return Err(ZmtpError::Protocol("reserved flag bits set"));
    }
    if flags & COMMAND != 0 && flags & MORE != 0 {
        return Err(ZmtpError::Protocol("command frame with MORE"));
    }
    let (header_len, size) = if flags & LONG != 0 {
        let Some(size) = bytes.get(1..9) else {
            return Ok(None);
        };
        (9, u64::from_be_bytes(size.try_into().expect("8 bytes")))
    } else {
        let Some(&size) = bytes.get(1) else {
            return Ok(None);
        };
        (2, u64::from(size))
    };
    if size > MAX_MESSAGE_BYTES as u64 {
        return Err(ZmtpError::TooLarge(size));
    }
    Ok(Some(Header {
        flags,
        header_len,
        body_len: size as usize,
    }))
}

/// What one connection has read but not yet handed over: usually nothing (and then
/// no memory), otherwise the start of a message split across reads.
#[derive(Debug, Default)]
pub struct Reader {
    buf: Vec<u8>,
    /// First byte not yet consumed (the start of an incomplete message, if any).
    start: usize,
    /// End of the bytes read so far.
    end: usize,
    partial: Partial,
    /// The latest PING not yet answered.
    ping: Option<Ping>,
}

/// A ZMTP 3.1 PING command: the peer's heartbeat, which it expects an answer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping {
    /// How long the peer asks us to keep the connection without hearing from it
    /// (0: no limit), in the wire's tenths of a second.
    pub ttl_deciseconds: u16,
    context: [u8; MAX_PING_CONTEXT],
    context_len: u8,
}

/// Longest PING context a peer may send (RFC 37: up to 16 octets).
pub const MAX_PING_CONTEXT: usize = 16;

impl Ping {
    /// Parses a command body that is a PING; None for any other command.
    fn parse(body: &[u8]) -> Result<Option<Ping>, ZmtpError> {
        let Some(rest) = body.strip_prefix(b"\x04PING") else {
            return Ok(None);
        };
        let (ttl, context) = rest
            .split_first_chunk::<2>()
            .ok_or(ZmtpError::Protocol("PING without a TTL"))?;
        if context.len() > MAX_PING_CONTEXT {
            return Err(ZmtpError::Protocol("PING context over 16 bytes"));
        }
        let mut ping = Ping {
            ttl_deciseconds: u16::from_be_bytes(*ttl),
            context: [0; MAX_PING_CONTEXT],
            context_len: context.len() as u8,
        };
        ping.context[..context.len()].copy_from_slice(context);
        Ok(Some(ping))
    }

    /// The PONG command frame that answers this PING: the same context echoed.
    pub fn pong(&self) -> ([u8; 7 + MAX_PING_CONTEXT], usize) {
        let ctx = &self.context[..usize::from(self.context_len)];
        let mut frame = [0u8; 7 + MAX_PING_CONTEXT];
        frame[0] = COMMAND;
        frame[1] = (5 + ctx.len()) as u8;
        frame[2..7].copy_from_slice(b"\x04PONG");
        frame[7..7 + ctx.len()].copy_from_slice(ctx);
        (frame, 7 + ctx.len())
    }
}

impl Reader {
    /// Bytes read but not yet consumed.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks `n` pending bytes consumed (only between messages: the handshake's).
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Free space to read into (at least a KiB as long as [`Reader::drain`]
    /// runs after every read), made by compacting and, for a large message, growing
    /// (never beyond one maximal message).
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            // A large message is gone: give its memory back.
            if self.buf.len() > 4 * INITIAL_BUFFER {
                self.buf = Vec::new();
            }
        }
        if self.buf.len() - self.end < MIN_READ {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < MIN_READ {
                // Pending bytes are at most one incomplete message (checked against
                // the limit as its headers arrive) plus a header, so this always fits.
                let len = (self.buf.len() * 2).clamp(INITIAL_BUFFER, BUFFER_CAP);
                self.buf.resize(len, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were read into [`Reader::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Takes the latest PING read and not yet answered: the caller owes the peer a
    /// PONG ([`Ping::pong`]) before the peer's heartbeat timeout.
    pub fn take_ping(&mut self) -> Option<Ping> {
        self.ping.take()
    }

    /// Hands every complete message in the buffer to `f` as its parts (at most
    /// [`MAX_PARTS`]). Commands between messages are not messages: a PING is kept
    /// for [`Reader::take_ping`] (a libzmq PUB with `ZMQ_HEARTBEAT_IVL` sends one
    /// every interval, whatever version we announced, and drops a peer that sends
    /// nothing back within its timeout), an ERROR ends the connection, and any other
    /// command (a PONG, a 3.1 SUBSCRIBE) is skipped. Returns how many messages were handed over; an incomplete one stays buffered,
    /// with the frames parsed so far remembered, so a message trickling in is parsed
    /// once, not once per read.
    pub fn drain(&mut self, mut f: impl FnMut(&[&[u8]])) -> Result<u64, ZmtpError> {
        let (messages, used) = parse(
            &self.buf[self.start..self.end],
            &mut self.partial,
            &mut self.ping,
            &mut f,
        )?;
        self.consume(used);
        Ok(messages)
    }

    /// Like [`Reader::drain`] for bytes read somewhere else (the receiver's shared
    /// buffer) while nothing is pending here: complete messages go to `f` straight
    /// from `bytes`, and only an incomplete tail is copied into this reader.
    pub fn drain_from(
        &mut self,
        bytes: &[u8],
        mut f: impl FnMut(&[&[u8]]),
    ) -> Result<u64, ZmtpError> {
        debug_assert!(
            self.pending().is_empty(),
            "bytes would overtake pending ones"
        );
        let (messages, used) = parse(bytes, &mut self.partial, &mut self.ping, &mut f)?;
        let tail = &bytes[used..];
        if !tail.is_empty() {
            // The partial parse's offsets are relative to the tail's start, which
            // becomes the start of the pending bytes: they stay valid.
            let room = (tail.len() + MIN_READ).clamp(INITIAL_BUFFER, BUFFER_CAP);
            if self.buf.len() < room {
                self.buf.resize(room, 0);
            }
            self.buf[..tail.len()].copy_from_slice(tail);
            self.start = 0;
            self.end = tail.len();
        }
        Ok(messages)
    }

    /// Frees the buffer when nothing is pending, so an idle connection holds none.
    pub fn release(&mut self) {
        if self.start == self.end {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
        }
    }

    /// Bytes of buffer this connection holds (for the tests' memory bounds).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// Parses the complete messages at the start of `bytes` into `f`, resuming the
/// message `p` describes; returns how many and the bytes they (and commands) took.
/// What follows is an incomplete message, with `p` remembering its frames. The
/// latest PING goes to `ping`; an ERROR command is the peer's end of the connection.
fn parse(
    bytes: &[u8],
    p: &mut Partial,
    ping: &mut Option<Ping>,
    f: &mut impl FnMut(&[&[u8]]),
) -> Result<(u64, usize), ZmtpError> {
    let mut messages = 0;
    let mut base = 0;
    loop {
        let msg = &bytes[base..];
        let complete = loop {
            let Some(h) = parse_header(&msg[p.pos..])? else {
                break false;
            };
            if h.command() {
                if p.parts > 0 {
                    return Err(ZmtpError::Protocol("command inside a multipart message"));
                }
                if msg.len() - p.pos < h.total() {
                    break false;
                }
                command(&msg[p.pos + h.header_len..p.pos + h.total()], ping)?;
                p.pos += h.total();
                break true;
            }
            if p.size + h.total() > MAX_MESSAGE_BYTES {
                return Err(ZmtpError::TooLarge((p.size + h.total()) as u64));
            }
            if msg.len() - p.pos < h.total() {
                break false;
            }
            if p.parts < MAX_PARTS {
                p.ranges[p.parts] = (p.pos + h.header_len, p.pos + h.total());
            }
            p.parts += 1;
            p.size += h.total();
            p.pos += h.total();
            if !h.more() {
                break true;
            }
        };
        if !complete {
            return Ok((messages, base));
        }
        if p.parts > 0 {
            let mut parts: [&[u8]; MAX_PARTS] = [&[]; MAX_PARTS];
            let n = p.parts.min(MAX_PARTS);
            for (part, &(a, b)) in parts.iter_mut().zip(&p.ranges[..n]) {
                *part = &msg[a..b];
            }
            f(&parts[..n]);
            messages += 1;
        }
        base += p.pos;
        *p = Partial::default();
    }
}

/// Acts on a command frame's body read between messages.
fn command(body: &[u8], ping: &mut Option<Ping>) -> Result<(), ZmtpError> {
    if let Some(p) = Ping::parse(body)? {
        *ping = Some(p);
    } else if let Some(reason) = body.strip_prefix(b"\x05ERROR") {
        let reason = reason.get(1..).unwrap_or_default();
        return Err(ZmtpError::PeerError(
            String::from_utf8_lossy(reason).into_owned(),
        ));
    }
    Ok(())
}

/// How far the message at the start of the buffer has been parsed (offsets from the
/// start of the pending bytes, so they survive compaction).
#[derive(Debug, Default, Clone, Copy)]
struct Partial {
    pos: usize,
    parts: usize,
    size: usize,
    ranges: [(usize, usize); MAX_PARTS],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(more: bool, body: &[u8]) -> Vec<u8> {
        let mut f = if body.len() < 256 {
            vec![u8::from(more), body.len() as u8]
        } else {
            let mut f = vec![u8::from(more) | LONG];
            f.extend((body.len() as u64).to_be_bytes());
            f
        };
        f.extend(body);
        f
    }

    /// Reads `bytes` as the network would hand them over (at most the spare room per
    /// read, a drain after each) and returns the messages.
    fn feed(r: &mut Reader, mut bytes: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ZmtpError> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let spare = r.spare();
            assert!(!spare.is_empty(), "no room to read into");
            let n = spare.len().min(bytes.len());
            spare[..n].copy_from_slice(&bytes[..n]);
            r.filled(n);
            bytes = &bytes[n..];
            r.drain(|parts| out.push(parts.iter().map(|p| p.to_vec()).collect()))?;
        }
        Ok(out)
    }

    #[test]
    fn messages_split_across_reads_come_out_whole_and_in_order() {
        let mut wire = Vec::new();
        for i in 0..3u8 {
            wire.extend(frame(true, b""));
            wire.extend(frame(true, &[i; 8]));
            wire.extend(frame(false, &vec![i; 300]));
        }
        // Every split point, one byte at a time: nothing lost, nothing twice.
        let mut r = Reader::default();
        let mut got = Vec::new();
        for b in &wire {
            got.extend(feed(&mut r, std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(got.len(), 3);
        for (i, m) in got.iter().enumerate() {
            assert_eq!(m, &vec![vec![], vec![i as u8; 8], vec![i as u8; 300]]);
        }
        assert!(r.pending().is_empty());
        // And all at once.
        assert_eq!(feed(&mut Reader::default(), &wire).unwrap(), got);
    }

    fn command_frame(body: &[u8]) -> Vec<u8> {
        let mut f = vec![COMMAND, body.len() as u8];
        f.extend(body);
        f
    }

    #[test]
    fn a_ping_between_messages_is_kept_for_its_pong_and_other_commands_are_skipped() {
        // libzmq's PING: TTL 0x0102 (25.8 s) and a context, then a PONG and a message.
        let mut wire = command_frame(b"\x04PING\x01\x02ctx");
        wire.extend(command_frame(b"\x04PONG"));
        wire.extend(frame(false, b"x"));
        let mut r = Reader::default();
        let got = feed(&mut r, &wire).unwrap();
        assert_eq!(got, vec![vec![b"x".to_vec()]]);
        let ping = r.take_ping().expect("the PING is owed an answer");
        assert_eq!(ping.ttl_deciseconds, 0x0102);
        let (pong, len) = ping.pong();
        assert_eq!(
            &pong[..len],
            b"\x04\x08\x04PONGctx",
            "PONG echoes the context"
        );
        assert_eq!(r.take_ping(), None, "answered once");
        // Of two PINGs read together, the latest is answered (any byte resets the
        // peer's timer, and its context is the one a strict peer checks).
        let mut wire = command_frame(b"\x04PING\x00\x00a");
        wire.extend(command_frame(b"\x04PING\x00\x00bb"));
        feed(&mut r, &wire).unwrap();
        let (pong, len) = r.take_ping().unwrap().pong();
        assert_eq!(&pong[..len], b"\x04\x07\x04PONGbb");
        // An empty context, the most a PING may carry, and what breaks the rules.
        let (pong, len) = Ping::parse(b"\x04PING\x00\x00").unwrap().unwrap().pong();
        assert_eq!(&pong[..len], b"\x04\x05\x04PONG");
        let long = [&b"\x04PING\x00\x00"[..], &[7u8; 16]].concat();
        assert_eq!(Ping::parse(&long).unwrap().unwrap().pong().1, 7 + 16);
        for bad in [
            &b"\x04PING"[..],
            &b"\x04PING\x00"[..],
            &[&long[..], b"!"].concat(),
        ] {
            let got = feed(&mut Reader::default(), &command_frame(bad));
            assert!(matches!(got, Err(ZmtpError::Protocol(_))), "{bad:?}");
        }
    }

    #[test]
    fn an_error_command_after_the_handshake_ends_the_connection_with_its_reason() {
        let got = feed(&mut Reader::default(), &command_frame(b"\x05ERROR\x03bye"));
        assert!(matches!(got, Err(ZmtpError::PeerError(r)) if r == "bye"));
    }

    #[test]
    fn an_announced_size_beyond_the_limit_is_refused_before_buffering() {
        let mut r = Reader::default();
        let mut wire = vec![LONG];
        wire.extend(u64::MAX.to_be_bytes());
        assert!(matches!(
            feed(&mut r, &wire),
            Err(ZmtpError::TooLarge(u64::MAX))
        ));
        assert!(r.buf.len() <= INITIAL_BUFFER);
    }

    #[test]
    fn parts_adding_up_beyond_the_limit_are_refused_with_bounded_memory() {
        // Big parts, and a flood of empty ones (only their headers count).
        for (part, count) in [(100_000, 50), (0, MAX_MESSAGE_BYTES)] {
            let mut r = Reader::default();
            let mut wire = Vec::new();
            for _ in 0..count {
                wire.extend(frame(true, &vec![0; part]));
            }
            assert!(matches!(feed(&mut r, &wire), Err(ZmtpError::TooLarge(_))));
            assert!(r.buf.len() <= BUFFER_CAP);
        }
        // A message of exactly the limit still fits.
        let mut r = Reader::default();
        let body = vec![1; MAX_MESSAGE_BYTES - 9];
        let got = feed(&mut r, &frame(false, &body)).unwrap();
        assert_eq!(got, vec![vec![body]]);
    }

    #[test]
    fn extra_parts_are_dropped_and_the_stream_stays_in_step() {
        let mut wire = Vec::new();
        for _ in 0..MAX_PARTS + 4 {
            wire.extend(frame(true, b"p"));
        }
        wire.extend(frame(false, b"last"));
        wire.extend(frame(false, b"next"));
        let got = feed(&mut Reader::default(), &wire).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), MAX_PARTS);
        assert_eq!(got[1], vec![b"next".to_vec()]);
    }

    #[test]
    fn malformed_headers_are_errors() {
        for wire in [
            vec![0x80u8, 0],
            vec![COMMAND | MORE, 0],
            vec![MORE, 1, b'a', COMMAND, 0],
        ] {
            let got = feed(&mut Reader::default(), &wire);
            assert!(matches!(got, Err(ZmtpError::Protocol(_))), "{wire:?}");
        }
    }

    #[test]
    fn a_large_message_grows_the_buffer_which_shrinks_back_after() {
        let mut r = Reader::default();
        let wire = frame(false, &vec![7; 200_000]);
        assert_eq!(feed(&mut r, &wire).unwrap().len(), 1);
        r.spare();
        assert_eq!(r.buf.len(), INITIAL_BUFFER);
        r.release();
        assert_eq!(r.capacity(), 0);
    }

    #[test]
    fn bytes_read_elsewhere_leave_only_an_incomplete_tail_behind() {
        let mut wire = Vec::new();
        for i in 0..4u8 {
            wire.extend(frame(true, &[i; 8]));
            wire.extend(frame(false, &vec![i; 300]));
        }
        // Every split point: the first chunk read into a shared buffer, the rest
        // through the reader's own; the same four messages, in order, each time.
        for cut in 0..=wire.len() {
            let mut r = Reader::default();
            let mut got = Vec::new();
            let mut push =
                |parts: &[&[u8]]| got.push(parts.iter().map(|p| p.to_vec()).collect::<Vec<_>>());
            r.drain_from(&wire[..cut], &mut push).unwrap();
            if r.pending().is_empty() {
                assert_eq!(r.capacity(), 0, "no buffer without a tail (cut {cut})");
            }
            let mut rest = &wire[cut..];
            while !rest.is_empty() {
                let spare = r.spare();
                let n = spare.len().min(rest.len());
                spare[..n].copy_from_slice(&rest[..n]);
                r.filled(n);
                rest = &rest[n..];
                r.drain(&mut push).unwrap();
            }
            assert_eq!(got.len(), 4, "cut {cut}");
            for (i, m) in got.iter().enumerate() {
                assert_eq!(m, &vec![vec![i as u8; 8], vec![i as u8; 300]]);
            }
        }
    }
}
