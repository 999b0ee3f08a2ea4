//! The ZMTP 3.0 handshake of a SUB socket with the NULL mechanism: greetings, READY
//! commands both ways, then the subscription to everything.

use super::frames::parse_header;
use super::{Stream, ZmtpError};

/// Length of a ZMTP 3.x greeting.
pub const GREETING_LEN: usize = 64;

/// Our greeting: signature, version 3.0, mechanism NULL, as-server 0. Announcing 3.0
/// (not 3.1) makes every publisher take the subscription as a message (below). It
/// does not stop a libzmq PUB with `ZMQ_HEARTBEAT_IVL` from sending PINGs, which the
/// receiver answers (`frames::Ping`).
pub fn greeting() -> [u8; GREETING_LEN] {
    let mut g = [0u8; GREETING_LEN];
    g[0] = 0xFF;
    g[9] = 0x7F;
    g[10] = 3;
    g[11] = 0;
    g[12..16].copy_from_slice(b"NULL");
    g
}

/// Checks a peer's greeting: the signature, a major version of at least 3 (a newer
/// peer speaks ours, RFC 23), and the NULL mechanism (no CURVE/PLAIN on FPM sockets).
pub fn check_greeting(g: &[u8; GREETING_LEN]) -> Result<(), ZmtpError> {
    if g[0] != 0xFF || g[9] & 0x01 != 0x01 {
        return Err(ZmtpError::Greeting);
    }
    if g[10] < 3 {
        return Err(ZmtpError::Version(g[10], g[11]));
    }
    let mechanism = &g[12..32];
    let len = mechanism.iter().position(|&b| b == 0).unwrap_or(20);
    if &mechanism[..len] != b"NULL" || mechanism[len..].iter().any(|&b| b != 0) {
        let name = String::from_utf8_lossy(&mechanism[..len]).into_owned();
        return Err(ZmtpError::Mechanism(name));
    }
    Ok(())
}

/// Our READY command (a short command frame) announcing a SUB socket.
pub fn ready_sub() -> Vec<u8> {
    let mut body = vec![5u8];
    body.extend(b"READY");
    body.push(11);
    body.extend(b"Socket-Type");
    body.extend(3u32.to_be_bytes());
    body.extend(b"SUB");
    let mut frame = vec![0x04, body.len() as u8];
    frame.extend(body);
    frame
}

/// The subscription to every topic in its ZMTP 3.0 form: a one-part message whose body
/// is 0x01 followed by the (empty) prefix. libzmq's PUB and the `zeromq` crate's PUB
/// both take it from a 3.0 peer.
pub const SUBSCRIBE_ALL: [u8; 3] = [0x00, 0x01, 0x01];

/// Checks the body of the peer's first command: READY with Socket-Type PUB or XPUB.
pub fn check_ready(body: &[u8]) -> Result<(), ZmtpError> {
    let short = ZmtpError::Protocol("truncated READY command");
    let (&name_len, rest) = body.split_first().ok_or(short.clone())?;
    let name = rest.get(..name_len as usize).ok_or(short.clone())?;
    let mut props = &rest[name_len as usize..];
    if name == b"ERROR" {
        let reason = props.get(1..).unwrap_or_default();
        return Err(ZmtpError::PeerError(
            String::from_utf8_lossy(reason).into_owned(),
        ));
    }
    if name != b"READY" {
        return Err(ZmtpError::Protocol("first command is not READY"));
    }
    let mut socket_type = None;
    while let Some((&len, rest)) = props.split_first() {
        let key = rest.get(..len as usize).ok_or(short.clone())?;
        let rest = &rest[len as usize..];
        let size = rest.get(..4).ok_or(short.clone())?;
        let size = u32::from_be_bytes(size.try_into().expect("4 bytes")) as usize;
        let value = rest.get(4..4 + size).ok_or(short.clone())?;
        if key.eq_ignore_ascii_case(b"Socket-Type") {
            socket_type = Some(value);
        }
        props = &rest[4 + size..];
    }
    match socket_type {
        Some(b"PUB") | Some(b"XPUB") => Ok(()),
        Some(other) => Err(ZmtpError::SocketType(
            String::from_utf8_lossy(other).into_owned(),
        )),
        None => Err(ZmtpError::Protocol("READY without Socket-Type")),
    }
}

/// Runs the handshake on a fresh stream. It reads exactly the peer's greeting and
/// READY, so whatever the peer publishes at once stays in the socket for the reader
/// that takes it over, and a PUB's READY (25 bytes) is read into the greeting's
/// buffer: no heap buffer per connection attempt (one used to be allocated for the
/// handshake and freed at hand-over, amid the connection's long-lived state).
pub async fn run(stream: &mut Stream) -> Result<(), ZmtpError> {
    stream.write_all(&greeting()).await?;
    let mut buf = [0u8; GREETING_LEN];
    read_greeting(stream, &mut buf).await?;
    check_greeting(&buf)?;
    stream.write_all(&ready_sub()).await?;
    stream.read_exact(&mut buf[..2]).await?;
    let mut header = parse_header(&buf[..2])?;
    if header.is_none() {
        // A long frame: eight bytes of size.
        stream.read_exact(&mut buf[2..9]).await?;
        header = parse_header(&buf[..9])?;
    }
    let h = header.ok_or(ZmtpError::Protocol("truncated frame header"))?;
    if !h.command() {
        return Err(ZmtpError::Protocol("message before READY"));
    }
    let mut long = Vec::new();
    let body = if h.body_len <= buf.len() {
        &mut buf[..h.body_len]
    } else {
        // Only a peer with unusual metadata sends more (bounded by the message limit
        // parse_header checked).
        long.resize(h.body_len, 0);
        &mut long[..]
    };
    stream.read_exact(body).await?;
    check_ready(body)?;
    stream.write_all(&SUBSCRIBE_ALL).await?;
    Ok(())
}

/// Reads the peer's greeting. A publisher that closes (or resets) before its
/// greeting is whole refused ours: a libzmq PUB with CURVE sends its 10-byte
/// signature and closes on seeing NULL, one with PLAIN closes without a byte, so
/// the mechanism name never arrives to be checked ([`ZmtpError::GreetingCut`]).
async fn read_greeting(stream: &mut Stream, buf: &mut [u8; GREETING_LEN]) -> Result<(), ZmtpError> {
    let mut got = 0;
    while got < GREETING_LEN {
        match stream.read(&mut buf[got..]).await {
            Ok(0) => return Err(ZmtpError::GreetingCut(got)),
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                return Err(ZmtpError::GreetingCut(got))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(props: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut body = vec![5u8];
        body.extend(b"READY");
        for (k, v) in props {
            body.push(k.len() as u8);
            body.extend(*k);
            body.extend((v.len() as u32).to_be_bytes());
            body.extend(*v);
        }
        body
    }

    #[test]
    fn our_greeting_and_ready_are_what_a_peer_checks() {
        check_greeting(&greeting()).unwrap();
        let r = ready_sub();
        assert_eq!(r[0], 0x04);
        assert_eq!(r[1] as usize, r.len() - 2);
        assert!(matches!(
            check_ready(&r[2..]),
            Err(ZmtpError::SocketType(t)) if t == "SUB"
        ));
    }

    #[test]
    fn greetings_are_checked() {
        let mut g = greeting();
        g[0] = b'G';
        assert!(matches!(check_greeting(&g), Err(ZmtpError::Greeting)));
        let mut g = greeting();
        g[10] = 2;
        assert!(matches!(check_greeting(&g), Err(ZmtpError::Version(2, 0))));
        let mut g = greeting();
        g[10..12].copy_from_slice(&[3, 1]);
        check_greeting(&g).unwrap();
        let mut g = greeting();
        g[12..17].copy_from_slice(b"CURVE");
        assert!(matches!(check_greeting(&g), Err(ZmtpError::Mechanism(m)) if m == "CURVE"));
    }

    #[test]
    fn ready_needs_a_publishing_socket_type() {
        check_ready(&ready(&[(b"Socket-Type", b"PUB")])).unwrap();
        check_ready(&ready(&[(b"Identity", b""), (b"socket-type", b"XPUB")])).unwrap();
        assert!(matches!(
            check_ready(&ready(&[(b"Socket-Type", b"REP")])),
            Err(ZmtpError::SocketType(t)) if t == "REP"
        ));
        assert!(matches!(
            check_ready(&ready(&[])),
            Err(ZmtpError::Protocol(_))
        ));
        let mut cut = ready(&[(b"Socket-Type", b"PUB")]);
        cut.truncate(cut.len() - 1);
        assert!(matches!(check_ready(&cut), Err(ZmtpError::Protocol(_))));
        let mut huge = ready(&[(b"Socket-Type", b"PUB")]);
        let at = huge.len() - 7;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(check_ready(&huge), Err(ZmtpError::Protocol(_))));
        let mut error = vec![5u8];
        error.extend(b"ERROR\x04busy");
        assert!(matches!(check_ready(&error), Err(ZmtpError::PeerError(r)) if r == "busy"));
    }

    /// A peer playing a PUB on the other end of a socket pair: greeting, then `ready`
    /// and `after` in one write, then the end of what it sends.
    async fn peer_run(ready_frame: Vec<u8>, after: &[u8]) -> (Result<(), ZmtpError>, Vec<u8>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
        let mut wire = greeting().to_vec();
        wire.extend(ready_frame);
        wire.extend(after);
        theirs.write_all(&wire).await.unwrap();
        theirs.shutdown().await.unwrap();
        let mut stream = Stream::Unix(ours);
        let result = run(&mut stream).await;
        // What the handshake left in the socket.
        let mut left = Vec::new();
        if let Stream::Unix(mut s) = stream {
            let _ = s.read_to_end(&mut left).await;
        }
        (result, left)
    }

    #[tokio::test]
    async fn bytes_after_ready_stay_in_the_socket_and_a_long_ready_is_read_whole() {
        let message = [0x00, 3, b'a', b'b', b'c'];
        let body = ready(&[(b"Socket-Type", b"PUB")]);
        let mut short = vec![0x04, body.len() as u8];
        short.extend(&body);
        let (result, left) = peer_run(short, &message).await;
        result.unwrap();
        assert_eq!(left, message, "the first message is the receiver's to read");
        // A READY with 300 bytes of metadata: a long command frame.
        let body = ready(&[(b"Socket-Type", b"XPUB"), (b"Identity", &[7u8; 300])]);
        let mut long = vec![0x06];
        long.extend((body.len() as u64).to_be_bytes());
        long.extend(&body);
        let (result, left) = peer_run(long, &message).await;
        result.unwrap();
        assert_eq!(left, message);
    }

    #[tokio::test]
    async fn a_message_before_ready_or_a_truncated_ready_fails_the_handshake() {
        let (result, _) = peer_run(vec![0x00, 1, b'x'], &[]).await;
        assert!(matches!(result, Err(ZmtpError::Protocol(_))), "{result:?}");
        let body = ready(&[(b"Socket-Type", b"PUB")]);
        let mut cut = vec![0x04, body.len() as u8];
        cut.extend(&body[..body.len() - 3]);
        let (result, _) = peer_run(cut, &[]).await;
        assert!(matches!(result, Err(ZmtpError::Closed)), "{result:?}");
    }
}
