//! The live page at `/` as a person sees it: the real Chromium (headless) loads it from
//! the exporter running the demo engine, and the rows must show the ranks and move,
//! come back after the exporter restarts, stay usable with 256 ranks, and show nothing
//! without the API token when one is set. A screenshot is kept in
//! target/test-artifacts/ (the README's picture comes from it).

mod common;
mod live_support;

use live_support::cdp::Browser;
use live_support::{artifacts, exporter_of, Demo, Exporter};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// Every rank row on the page: key -> (state, figures by column, straggler flagged, sparkline drawn).
const ROWS: &str = r#"Object.fromEntries([...document.querySelectorAll('tr.rank')].map(r => [r.dataset.rank, {
    state: r.dataset.state,
    cells: Object.fromEntries([...r.querySelectorAll('td[data-k]')].map(td => [td.dataset.k, td.textContent])),
    slow: !!r.querySelector('td.slow'), spark: !!r.querySelector('svg polyline')}]))"#;

/// Rows once every one of `n` ranks is busy with a frame rate (its second snapshot).
fn moving_rows(b: &mut Browser, n: usize) -> BTreeMap<String, Value> {
    let ready = format!(
        "(() => {{ const rows = {ROWS}; const v = Object.values(rows);
           return v.length === {n} && v.every(r => r.state === 'busy' && r.cells.fps !== '–') ? rows : null; }})()"
    );
    let v = b.wait(
        "every rank busy with a frame rate",
        &ready,
        Duration::from_secs(20),
    );
    serde_json::from_value(v).unwrap()
}

#[test]
fn the_page_shows_the_demo_ranks_moving_and_reconnects_after_a_restart() {
    let mut exporter = Exporter::skewed_demo();
    let mut b = Browser::launch();
    b.goto(&format!("{}/", exporter.url));
    let first = moving_rows(&mut b, 4);
    let keys: Vec<&str> = first.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "demo/demo-engine-0/0",
            "demo/demo-engine-0/1",
            "demo/demo-engine-0/2",
            "demo/demo-engine-0/3"
        ]
    );
    std::thread::sleep(Duration::from_millis(2500));
    let second = moving_rows(&mut b, 4);
    for (key, was) in &first {
        let now = &second[key];
        let figures = |r: &Value| {
            ["running", "queued", "kv", "fps", "p50", "p99"].map(|k| r["cells"][k].clone())
        };
        assert_ne!(
            figures(was),
            figures(now),
            "{key}: the same figures 2.5 s later: the page is not live"
        );
        assert!(
            now["spark"].as_bool().unwrap(),
            "{key}: no wall-time sparkline"
        );
    }
    // The demo's slow rank is flagged as the straggler (once its window has settled:
    // the ratio is over the last 10 s), and only it; its heavy rank is the heaviest.
    b.wait(
        "rank 2 alone flagged as the straggler",
        "[...document.querySelectorAll('tr.rank')].filter(r => r.querySelector('td.slow')).map(r => r.dataset.rank).join() === 'demo/demo-engine-0/2'",
        Duration::from_secs(15),
    );
    let text = b
        .eval("document.body.innerText")
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.contains("heaviest demo-engine-0 #1"), "{text}");
    assert!(text.contains("endpoints 4 (all started)"), "{text}");
    b.screenshot(&artifacts().join("live-page.png"), false);

    // Killed: the page says it is reconnecting and keeps the last rows.
    exporter.kill();
    b.wait(
        "the page reconnecting",
        "document.body.dataset.conn === 'reconnecting'",
        Duration::from_secs(10),
    );
    assert_eq!(b.eval("document.querySelectorAll('tr.rank').length"), 4);
    // Back on the same port: live again, and its rates start from the new stream, so
    // rows with a frame rate are the new exporter's.
    exporter.restart();
    b.wait(
        "the page live again",
        "document.body.dataset.conn === 'live' && document.getElementById('health').innerText.includes('reconnects 1')",
        Duration::from_secs(15),
    );
    let again = moving_rows(&mut b, 4);
    assert!(again.values().all(|r| r["state"] == "busy"), "{again:?}");
}

#[test]
fn with_256_ranks_every_row_renders_and_the_filter_box_narrows_them() {
    let exporter = Exporter::start(&["--demo", "--demo-ranks", "256"]);
    let mut b = Browser::launch();
    b.goto(&format!("{}/", exporter.url));
    let count = "document.querySelectorAll('tr.rank').length";
    b.wait(
        "256 rows",
        &format!("{count} === 256"),
        Duration::from_secs(30),
    );
    assert_eq!(
        b.eval("document.querySelectorAll('section.engine').length"),
        1
    );
    let summary = b.eval("document.getElementById('summary').textContent");
    assert!(
        summary.as_str().unwrap().starts_with("256 ranks"),
        "{summary}"
    );
    b.screenshot(&artifacts().join("live-page-256.png"), false);
    // Typed into the filter box: `#12` is rank 12 and ranks 120 to 129.
    b.eval("document.getElementById('filter').focus()");
    b.type_text("#12");
    let shown = b.wait(
        "the filter applied",
        &format!("{count} === 11 && {count}"),
        Duration::from_secs(5),
    );
    assert_eq!(shown, 11);
    let ranks = b.eval("[...document.querySelectorAll('tr.rank')].map(r => r.dataset.rank.split('/')[2]).join(' ')");
    assert_eq!(ranks, "12 120 121 122 123 124 125 126 127 128 129");
    // A sort is a choice in the same bar: by queue, the most queued rank first.
    b.eval("const s = document.getElementById('sort'); s.value = 'queue'; s.dispatchEvent(new Event('change')); 1");
    let queued: Vec<f64> = serde_json::from_value(b.eval(
        "[...document.querySelectorAll('tr.rank td[data-k=queued]')].map(td => +td.textContent.replace(/,/g, ''))",
    ))
    .unwrap();
    assert!(queued.windows(2).all(|w| w[0] >= w[1]), "{queued:?}");
}

#[test]
fn with_an_api_token_the_page_shows_nothing_until_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-live\n").unwrap();
    let exporter = Exporter::start(&["--demo", "--api-token-file", token_file.to_str().unwrap()]);
    let mut b = Browser::launch();
    b.goto(&format!("{}/", exporter.url));
    b.wait(
        "the token prompt",
        "document.body.dataset.conn === 'token' && !document.getElementById('auth').hidden",
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(b.eval("document.querySelectorAll('tr.rank').length"), 0);
    let text = b
        .eval("document.body.innerText")
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        !text.contains("demo-engine"),
        "data shown without the token:\n{text}"
    );
    // A wrong token is refused, and says so.
    b.eval("document.getElementById('token').focus()");
    b.type_text("wrong");
    b.eval("document.getElementById('auth').requestSubmit(); 1");
    b.wait(
        "the refusal",
        "document.getElementById('autherr').textContent.includes('refused')",
        Duration::from_secs(10),
    );
    assert_eq!(b.eval("document.querySelectorAll('tr.rank').length"), 0);
    // The right one opens the stream; it stays in this tab's sessionStorage only.
    b.eval("document.getElementById('token').focus()");
    b.type_text("s3cret-live");
    b.eval("document.getElementById('auth').requestSubmit(); 1");
    moving_rows(&mut b, 4);
    assert_eq!(b.eval("sessionStorage.getItem('fpm-token')"), "s3cret-live");
    assert_eq!(b.eval("localStorage.length"), 0);
}

#[test]
fn an_engine_that_stops_shows_its_ranks_stale_then_down() {
    let mut demo = Demo::start(2);
    let exporter = exporter_of(&demo);
    let mut b = Browser::launch();
    b.goto(&format!("{}/", exporter.url));
    moving_rows(&mut b, 2);
    demo.kill();
    let states = "[...document.querySelectorAll('tr.rank')].map(r => r.dataset.state).join(' ')";
    b.wait(
        "both ranks stale",
        &format!("{states} === 'stale stale'"),
        Duration::from_secs(10),
    );
    let text = b.eval("document.querySelector('tr.rank td.state').textContent");
    assert!(
        text.as_str().unwrap().starts_with("stale "),
        "the age is shown: {text}"
    );
    b.wait(
        "both ranks down",
        &format!("{states} === 'down down'"),
        Duration::from_secs(10),
    );
    let summary = b.eval("document.getElementById('summary').textContent");
    assert!(summary.as_str().unwrap().contains("2 down"), "{summary}");
    b.screenshot(&artifacts().join("live-page-down.png"), false);
}

#[test]
fn the_engines_own_kv_use_shows_where_it_has_a_load_snapshot() {
    // The demo's FPM joined per (engine, dp_rank) with SGLang's own snapshot writer's.
    let kv = live_support::KvUse::start();
    let exporter = &kv.exporter;
    let mut b = Browser::launch();
    b.goto(&format!("{}/", exporter.url));
    moving_rows(&mut b, 2);
    let usage = b.wait(
        "KV use from the snapshots",
        "(() => { const u = [...document.querySelectorAll('tr.rank td[data-k=usage]')].map(td => td.textContent);
                  return u.length === 2 && u.every(t => /^\\d+\\.\\d%$/.test(t)) ? u : null; })()",
        Duration::from_secs(15),
    );
    // What the writer wrote is what /v1/ranks joins; the page shows that share.
    let (_, body) = live_support::get(&format!("{}/v1/ranks", exporter.url)).unwrap();
    let ranks: Value = serde_json::from_str(&body).unwrap();
    for r in ranks["ranks"].as_array().unwrap() {
        let share = r["load_snapshot"]["load"]["token_usage"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&share), "{r}");
    }
    assert!(usage
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u.as_str().unwrap().ends_with('%')));
}
