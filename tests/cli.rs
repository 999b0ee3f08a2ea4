//! The binary as a user runs it: clear errors for bad flags and files, and a clean
//! stop on SIGTERM / SIGINT that does not wait out the shutdown grace.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fpm-exporter");

#[test]
fn bad_config_names_the_key_and_line_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("engines.toml");
    std::fs::write(
        &cfg,
        "[[engine]]\nname = \"a\"\nendpoint = \"tcp://h:1\"\nranks = \"7-2\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 4") && err.contains("engine.ranks"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["--stale-after", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--stale-after"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How long the test waits for the exit. The exporter's own bound is its 0.9 s
/// shutdown grace; a clean stop (no grace elapsed) is what is asserted, and the wall
/// time from `kill` to the reaped exit also holds process scheduling, which on a
/// loaded 2-core machine can add seconds.
const EXIT_LIMIT: Duration = Duration::from_secs(10);

fn stops_cleanly_on(signal: &str) {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(BIN)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Wait until it serves (the demo engine is running too).
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "exporter never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    // An open stream must not hold the shutdown up: wait until it has begun (its
    // response head arrived), not for a guessed delay.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::{Read, Write};
    write!(stream, "GET /v1/stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "stream closed early");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    let sent = Instant::now();
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let took = loop {
        if let Some(code) = child.try_wait().unwrap() {
            assert_eq!(code.code(), Some(0), "exit status after {signal}");
            break sent.elapsed();
        }
        assert!(
            sent.elapsed() < EXIT_LIMIT,
            "still running {EXIT_LIMIT:?} after {signal}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = std::fs::read_to_string(&log).unwrap();
    // The open stream ended by itself: shutdown did not wait out its grace period.
    assert!(
        !log.contains("grace period elapsed"),
        "shutdown after {signal} waited for the grace period:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    eprintln!("exit after {signal} took {took:?}");
}

#[test]
fn sigterm_stops_cleanly_without_waiting_out_the_grace() {
    stops_cleanly_on("-TERM");
}

#[test]
fn sigint_stops_cleanly_without_waiting_out_the_grace() {
    stops_cleanly_on("-INT");
}
