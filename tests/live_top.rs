//! `fpm-exporter top` as a person uses it: in a real terminal (tmux, 160×48) against
//! the exporter running the demo engine. The screen must show the ranks, a sort key
//! must reorder them, `q` must leave the terminal as it was (exit status 0, cooked
//! mode, main screen, cursor shown), a restarted exporter must be reconnected to, and a
//! resized terminal must be redrawn cleanly. The capture is kept in
//! target/test-artifacts/ (the README's picture comes from it).

mod common;
mod live_support;

use live_support::tmux::Tmux;
use live_support::{artifacts, exporter_of, wait_for, Demo, Exporter};
use std::time::Duration;

/// One rank line of the screen.
#[derive(Debug)]
struct Rank {
    rank: u64,
    state: String,
    kv: f64,
    p50: f64,
    usage: String,
}

/// The rank lines of a capture, top to bottom, when every one of `n` ranks has a
/// frame rate (so at least two snapshots of the stream now connected).
fn ranks(screen: &str, n: usize) -> Result<Vec<Rank>, String> {
    let mut out = Vec::new();
    for line in screen.lines().filter(|l| l.starts_with("demo-engine-0 #")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let number = |s: &str| s.trim_end_matches("ms").replace(',', "").parse::<f64>();
        if f.len() < 12 || number(f[9]).is_err() {
            return Err(screen.to_string());
        }
        out.push(Rank {
            rank: f[1].trim_start_matches('#').parse().unwrap(),
            state: f[2].to_string(),
            kv: number(f[5]).unwrap(),
            p50: number(f[7]).unwrap(),
            usage: f[11].to_string(),
        });
    }
    if out.len() == n && screen.contains("● live") {
        Ok(out)
    } else {
        Err(screen.to_string())
    }
}

fn top(exporter: &Exporter) -> Tmux {
    let command = format!(
        "'{}' top {}; echo \"top exited $?\"; stty -a; echo stty-done; sleep 60",
        env!("CARGO_BIN_EXE_fpm-exporter"),
        exporter.url
    );
    Tmux::start(&command, 160, 48)
}

fn quit_cleanly(t: &Tmux) {
    t.keys("q");
    let screen = wait_for("top to exit", Duration::from_secs(10), || {
        let s = t.capture();
        // stty's lines reach the pane one by one: wait for the line after them.
        if s.contains("top exited") && s.contains("stty-done") {
            Ok(s)
        } else {
            Err(s)
        }
    });
    assert!(screen.contains("top exited 0"), "{screen}");
    // Back in cooked mode with echo, on the main screen, the cursor shown; nothing of
    // the view left behind.
    let words: Vec<&str> = screen.split_whitespace().collect();
    for flag in ["icanon", "echo", "isig"] {
        assert!(words.contains(&flag), "stty says {flag} is off:\n{screen}");
    }
    assert_eq!(
        t.format("#{alternate_on}"),
        "0",
        "still on the alternate screen"
    );
    assert_eq!(t.format("#{cursor_flag}"), "1", "the cursor is hidden");
    assert!(
        !screen.contains("RANK"),
        "the view was left on the screen:\n{screen}"
    );
}

#[test]
fn top_shows_the_ranks_sorts_on_a_key_and_quits_cleanly() {
    let exporter = Exporter::skewed_demo();
    let t = top(&exporter);
    let rows = wait_for("four moving ranks", Duration::from_secs(20), || {
        ranks(&t.capture(), 4)
    });
    let order: Vec<u64> = rows.iter().map(|r| r.rank).collect();
    assert_eq!(order, [0, 1, 2, 3], "sorted by rank at first");
    assert!(rows.iter().all(|r| r.state == "busy"), "{rows:?}");
    std::fs::write(artifacts().join("top.txt"), t.capture()).unwrap();

    // `t`: slowest wall time first. The demo's heavy rank (1) and slow rank (2) lead.
    t.keys("t");
    // Every screen is in order; the demo's heavy and slow ranks lead once the
    // shortest window has settled.
    wait_for("the wall-time order", Duration::from_secs(15), || {
        let s = t.capture();
        if !s.contains("sort: wall time") {
            return Err(s);
        }
        let rows = ranks(&s, 4)?;
        assert!(rows.windows(2).all(|w| w[0].p50 >= w[1].p50), "{rows:?}");
        let mut lead = [rows[0].rank, rows[1].rank];
        lead.sort();
        if lead == [1, 2] {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    });

    // `w`: most work (KV tokens) first.
    t.keys("w");
    let rows = wait_for("the work order", Duration::from_secs(5), || {
        let s = t.capture();
        if s.contains("sort: work") {
            ranks(&s, 4)
        } else {
            Err(s)
        }
    });
    assert!(rows.windows(2).all(|w| w[0].kv >= w[1].kv), "{rows:?}");
    quit_cleanly(&t);
}

/// The screen redrawn whole at its new size: the title on the first line, the column
/// header once, each rank once, and nothing below the last rank.
fn clean(screen: &str, width: usize) -> Result<(), String> {
    let lines: Vec<&str> = screen.lines().collect();
    let last = lines.iter().rposition(|l| l.starts_with("demo-engine-0 #"));
    let ok = lines
        .first()
        .is_some_and(|l| l.starts_with("fpm-exporter top"))
        && lines.iter().filter(|l| l.starts_with("RANK")).count() == 1
        && (0..4).all(|r| {
            lines
                .iter()
                .filter(|l| l.starts_with(&format!("demo-engine-0 #{r} ")))
                .count()
                == 1
        })
        && last.is_some_and(|i| lines[i + 1..].iter().all(|l| l.trim().is_empty()))
        && lines.iter().all(|l| l.chars().count() <= width);
    if ok {
        Ok(())
    } else {
        Err(screen.to_string())
    }
}

#[test]
fn top_redraws_cleanly_on_resize_and_reconnects_after_an_exporter_restart() {
    let mut exporter = Exporter::start(&["--demo", "--demo-ranks", "4"]);
    let t = top(&exporter);
    wait_for("four moving ranks", Duration::from_secs(20), || {
        ranks(&t.capture(), 4)
    });
    t.resize(110, 30);
    wait_for("a clean redraw at 110×30", Duration::from_secs(5), || {
        clean(&t.capture(), 110)
    });
    t.resize(200, 56);
    wait_for("a clean redraw at 200×56", Duration::from_secs(5), || {
        clean(&t.capture(), 200)
    });

    exporter.kill();
    let screen = wait_for("reconnecting", Duration::from_secs(10), || {
        let s = t.capture();
        if s.contains("reconnecting (attempt") {
            Ok(s)
        } else {
            Err(s)
        }
    });
    assert!(
        screen.contains("demo-engine-0 #0"),
        "the last figures stay up:\n{screen}"
    );
    exporter.restart();
    wait_for("data again", Duration::from_secs(15), || {
        ranks(&t.capture(), 4)
    });
    quit_cleanly(&t);
}

#[test]
fn top_shows_the_ranks_of_an_engine_that_stops_stale_then_down() {
    let mut demo = Demo::start(2);
    let exporter = exporter_of(&demo);
    let t = top(&exporter);
    wait_for("two moving ranks", Duration::from_secs(20), || {
        ranks(&t.capture(), 2)
    });
    demo.kill();
    let stale = |r: &Rank| r.state.starts_with("STALE:");
    wait_for("both ranks STALE", Duration::from_secs(10), || {
        let rows = ranks(&t.capture(), 2)?;
        if rows.iter().all(stale) {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    });
    let screen = wait_for("both ranks DOWN", Duration::from_secs(10), || {
        let s = t.capture();
        let rows = ranks(&s, 2)?;
        if rows.iter().all(|r| r.state == "DOWN") {
            Ok(s)
        } else {
            Err(format!("{rows:?}"))
        }
    });
    assert!(
        screen.contains("2 ranks: 0 busy, 0 idle, 0 stale, 2 down"),
        "{screen}"
    );
    quit_cleanly(&t);
}

#[test]
fn top_shows_the_engines_own_kv_use_from_its_load_snapshots() {
    let kv = live_support::KvUse::start();
    let t = top(&kv.exporter);
    wait_for("KV use on both ranks", Duration::from_secs(20), || {
        let rows = ranks(&t.capture(), 2)?;
        let shown = |u: &str| u.ends_with('%') && u.trim_end_matches('%').parse::<f64>().is_ok();
        if rows.iter().all(|r| shown(&r.usage)) {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    });
    quit_cleanly(&t);
}

/// The dp ranks of the rank lines on a screen, top to bottom.
fn shown(screen: &str) -> Vec<u64> {
    screen
        .lines()
        .filter_map(|l| l.strip_prefix("demo-engine-0 #"))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn top_scrolls_through_256_ranks_and_no_further() {
    let exporter = Exporter::start(&["--demo", "--demo-ranks", "256"]);
    let t = top(&exporter);
    let first = wait_for("256 ranks", Duration::from_secs(30), || {
        let s = t.capture();
        let ranks = shown(&s);
        if s.contains("256 ranks: ") && ranks.len() > 30 {
            Ok(ranks)
        } else {
            Err(s)
        }
    });
    assert_eq!(first[..3], [0, 1, 2], "{first:?}");
    // Far past the end: the last rank is on the last line, no blank page after it.
    for _ in 0..20 {
        t.keys("PageDown");
    }
    wait_for(
        "the last rank at the bottom",
        Duration::from_secs(5),
        || {
            let s = t.capture();
            if shown(&s).last() == Some(&255)
                && s.lines().last().is_some_and(|l| l.contains("#255"))
            {
                Ok(())
            } else {
                Err(s)
            }
        },
    );
    // One line up moves at once (the scroll never ran past the end).
    t.keys("Up");
    wait_for("one line up", Duration::from_secs(5), || {
        let s = t.capture();
        if shown(&s).last() == Some(&254) {
            Ok(())
        } else {
            Err(s)
        }
    });
    quit_cleanly(&t);
}
