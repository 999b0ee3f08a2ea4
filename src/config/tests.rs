//! Flags and file into settings: the defaults, the precedence and the error locations.

use super::*;
use clap::Parser;
use std::time::Duration;

fn args(extra: &[&str]) -> RunArgs {
    let mut v = vec!["fpm-exporter"];
    v.extend(extra);
    Cli::parse_from(v).run
}

fn file(text: &str) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, text).unwrap();
    Settings::from_cli(&args(&["--config", p.to_str().unwrap()]))
}

#[test]
fn one_command_line_covers_all_ranks() {
    let s = Settings::from_cli(&args(&[
        "-e",
        "tcp://127.0.0.1:20380",
        "-r",
        "4",
        "--label",
        "model=m",
    ]))
    .unwrap();
    let addrs: Vec<_> = s.endpoints.iter().map(|e| e.address.as_str()).collect();
    assert_eq!(
        addrs,
        [
            "tcp://127.0.0.1:20380",
            "tcp://127.0.0.1:20381",
            "tcp://127.0.0.1:20382",
            "tcp://127.0.0.1:20383"
        ]
    );
    assert!(s.demo.is_none());
    assert_eq!(
        s.engines[0].labels,
        vec![("model".to_string(), "m".to_string())]
    );
}

#[test]
fn no_engine_means_demo() {
    let s = Settings::from_cli(&args(&[])).unwrap();
    assert!(s.demo.is_some());
    assert_eq!(s.endpoints.len(), 4);
}

#[test]
fn demo_skew_names_a_rank_of_the_demo_engine() {
    let s = Settings::from_cli(&args(&["--demo-skew", "3", "--demo-slow", "1"])).unwrap();
    let demo = s.demo.unwrap();
    assert_eq!((demo.heavy, demo.slow), (Some(3), Some(1)));
    let plain = Settings::from_cli(&args(&[])).unwrap().demo.unwrap();
    assert_eq!((plain.heavy, plain.slow), (None, None));
    let e = Settings::from_cli(&args(&["--demo-skew", "4"])).unwrap_err();
    assert!(e.to_string().contains("ranks 0 to 3"), "{e}");
    let e = Settings::from_cli(&args(&["--demo-ranks", "2", "--demo-slow", "2"])).unwrap_err();
    assert!(e.to_string().contains("--demo-slow names rank 2"), "{e}");
    // With an engine of one's own, the demo does not run: the flag would do nothing.
    let e = Settings::from_cli(&args(&[
        "--endpoint",
        "tcp://127.0.0.1:1",
        "--demo-skew",
        "0",
    ]))
    .unwrap_err();
    assert!(e.to_string().contains("add --demo"), "{e}");
    assert!(Settings::from_cli(&args(&[
        "--endpoint",
        "tcp://127.0.0.1:1",
        "--demo",
        "--demo-skew",
        "0"
    ]))
    .is_ok());
}

#[test]
fn file_with_several_engines() {
    let s = file(
        "windows = [\"5s\", \"30s\"]\n[[engine]]\nname = \"p\"\nendpoint = \"ipc:///tmp/x\"\nranks = \"0-1\"\nlabels = { role = \"prefill\" }\n\
         [[engine]]\nname = \"d\"\nendpoint = \"tcp://h:100\"\nranks = 3\n",
    )
    .unwrap();
    assert_eq!(s.state.windows, vec![5, 30]);
    assert_eq!(s.endpoints.len(), 5);
    assert_eq!(s.endpoints[1].address, "ipc:///tmp/x.1");
    assert_eq!(s.endpoints[4].address, "tcp://h:102");
}

#[test]
fn errors_name_the_key_and_line() {
    let e = file("[[engine]]\nname = \"a\"\nendpoint = \"udp://x\"\n")
        .unwrap_err()
        .0;
    assert!(e.contains("line 3") && e.contains("engine.endpoint"), "{e}");
    let e = file("[[engine]]\nname = \"a\"\nendpoit = \"tcp://x:1\"\n")
        .unwrap_err()
        .0;
    assert!(e.contains("endpoit") && e.contains("line 3"), "{e}");
    let e =
        file("[[engine]]\nname = \"a\"\nendpoint = \"tcp://x:1\"\nlabels = { dp_rank = \"1\" }\n")
            .unwrap_err()
            .0;
    assert!(
        e.contains("line 4") && e.contains("used by the exporter"),
        "{e}"
    );
    let e = file("reconnect_after = \"soon\"\n").unwrap_err().0;
    assert!(e.contains("line 1") && e.contains("reconnect_after"), "{e}");
    let e = file("stale_after = \"soon\"\n").unwrap_err().0;
    assert!(e.contains("line 1") && e.contains("stale_after"), "{e}");
    let e = Settings::from_cli(&args(&["-e", "tcp://h:65535", "-r", "2"]))
        .unwrap_err()
        .0;
    assert!(e.contains("--endpoint") && e.contains("65536"), "{e}");
}

#[test]
fn rank_detail_is_lean_by_default_and_set_per_engine() {
    use crate::state::detail::RankDetail::{Full, Lean};
    let s = Settings::from_cli(&args(&["--demo"])).unwrap();
    assert_eq!(s.state.rank_detail.of(0), Lean);
    let s = Settings::from_cli(&args(&["--demo", "--rank-detail", "full"])).unwrap();
    assert_eq!(s.state.rank_detail.of(0), Full);
    let toml = "rank_detail = \"full\"\n[[engine]]\nname = \"a\"\nendpoint = \"tcp://h:1\"\nrank_detail = \"lean\"\n\
                [[engine]]\nname = \"b\"\nendpoint = \"tcp://h:2\"\n";
    let s = file(toml).unwrap();
    assert_eq!(
        (s.state.rank_detail.of(0), s.state.rank_detail.of(1)),
        (Lean, Full)
    );
    // Engines a source adds later (NATS scopes) take the default.
    assert_eq!(s.state.rank_detail.of(7), Full);
    let e = file("[[engine]]\nname = \"a\"\nendpoint = \"tcp://h:1\"\nrank_detail = \"max\"\n")
        .unwrap_err()
        .0;
    assert!(e.contains("line 4") && e.contains("lean"), "{e}");
    assert!(Cli::try_parse_from(["fpm-exporter", "--rank-detail", "max"]).is_err());
}

#[test]
fn reconnect_after_defaults_to_30s_and_never_undercuts_stale_after() {
    let s = Settings::from_cli(&args(&["--demo"])).unwrap();
    assert_eq!(s.reconnect_after, Duration::from_secs(30));
    let s = Settings::from_cli(&args(&["--stale-after", "45s"])).unwrap();
    assert_eq!(
        s.reconnect_after,
        Duration::from_secs(45),
        "follows a long stale_after"
    );
    let s = file("stale_after = \"2s\"\nreconnect_after = \"5s\"\n").unwrap();
    assert_eq!(s.reconnect_after, Duration::from_secs(5));
    let s = Settings::from_cli(&args(&["--reconnect-after", "4s"])).unwrap();
    assert_eq!(s.reconnect_after, Duration::from_secs(4));
    let e = Settings::from_cli(&args(&["--stale-after", "5s", "--reconnect-after", "2s"]))
        .unwrap_err()
        .0;
    assert!(
        e.contains("reconnect_after") && e.contains("stale_after"),
        "{e}"
    );
}

#[test]
fn receive_delay_defaults_to_500ms_takes_zero_and_refuses_beyond_a_second() {
    let s = Settings::from_cli(&args(&["--demo"])).unwrap();
    assert_eq!(s.receive_delay, Duration::from_millis(500));
    let s = Settings::from_cli(&args(&["--demo", "--receive-delay", "0s"])).unwrap();
    assert_eq!(s.receive_delay, Duration::ZERO);
    let s = file("receive_delay = \"2ms\"\n").unwrap();
    assert_eq!(s.receive_delay, Duration::from_millis(2));
    let e = file("receive_delay = \"later\"\n").unwrap_err().0;
    assert!(e.contains("line 1") && e.contains("receive_delay"), "{e}");
    let e = Settings::from_cli(&args(&["--demo", "--receive-delay", "2s"]))
        .unwrap_err()
        .0;
    assert!(
        e.contains("receive_delay") && e.contains("at most 1s"),
        "{e}"
    );
}

#[test]
fn a_central_has_room_for_one_engine_per_node_up_to_the_rank_bound() {
    // 1,250 nodes x 8 ranks: every node is an engine of its own at the central.
    let central = Settings::from_cli(&args(&[
        "--nats",
        "nats://127.0.0.1:4222",
        "--max-ranks",
        "16384",
    ]))
    .unwrap();
    assert_eq!(central.state.dynamic_engines, 16_384);
    let edge = Settings::from_cli(&args(&["--demo", "--max-ranks", "16384"])).unwrap();
    assert_eq!(
        edge.state.dynamic_engines,
        crate::state::StateConfig::default().dynamic_engines,
        "no NATS ingest, no engines discovered at run time beyond the default room"
    );
}
