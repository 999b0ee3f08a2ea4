//! The binary as a user runs it: clear errors for bad flags and files, and a clean
//! stop on SIGTERM / SIGINT within a second.

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

fn stops_cleanly_on(signal: &str) {
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Wait until it serves (the demo engine is running too).
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "exporter never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    // An open stream must not hold the shutdown up.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::Write;
    write!(stream, "GET /v1/stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    loop {
        if let Some(code) = child.try_wait().unwrap() {
            assert_eq!(code.code(), Some(0), "exit status after {signal}");
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "still running 1 s after {signal}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_stops_within_a_second() {
    stops_cleanly_on("-TERM");
}

#[test]
fn sigint_stops_within_a_second() {
    stops_cleanly_on("-INT");
}
