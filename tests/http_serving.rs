//! The HTTP serving path under stress: readiness that follows the listeners, `Accept`
//! negotiation with q-values, and stalled `/metrics` clients that can hold neither a
//! connection nor a render for long, while the JSON endpoints stay fast.

mod common;

use common::{sample, wait_for, Exporter};
use fpm_exporter::config::HttpSettings;
use fpm_exporter::http::{self, AppState, Routes};
use fpm_exporter::publisher::FramePublisher;
use fpm_exporter::state::{Registry, StateConfig};
use fpm_exporter::wire::{Count, ForwardPassMetrics, Real, ScheduledRequests};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

async fn readyz(addr: std::net::SocketAddr) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_every_listener_being_in_its_accept_loop() {
    let registry = Registry::new(StateConfig::default(), Vec::new());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let state = AppState::new(registry, &HttpSettings::default(), stop_rx);
    state.listening.expect(2);
    assert!(!state.listening.all_serving(), "nothing serves yet");

    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = api.local_addr().unwrap();
    let s = state.clone();
    let api_task = tokio::spawn(async move {
        http::serve::serve(api, http::router_for(s.clone(), Routes::Api), &s).await
    });
    // One of two listeners serving: not ready, and it says why.
    let (status, body) = readyz(api_addr).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["http"], false, "{body}");

    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let s = state.clone();
    let metrics_task = tokio::spawn(async move {
        http::serve::serve(metrics, http::router_for(s.clone(), Routes::Metrics), &s).await
    });
    let (status, body) = wait_for("ready", Duration::from_secs(5), || async {
        let (status, body) = readyz(api_addr).await;
        (status == 200).then_some((status, body))
    })
    .await;
    assert_eq!(body["http"], true, "{status} {body}");

    // At shutdown the listeners leave their accept loops: not ready any more.
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        api_task.await.unwrap();
        metrics_task.await.unwrap();
    })
    .await
    .expect("servers stop");
    assert!(!state.listening.all_serving());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_q_values_choose_the_exposition_format() {
    let exp = Exporter::start(&["--demo", "--demo-ranks", "1"]).await;
    let client = reqwest::Client::new();
    let text = "text/plain; version=0.0.4; charset=utf-8";
    let om = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    for (accept, want) in [
        ("application/openmetrics-text;q=0, text/plain", text),
        ("application/openmetrics-text;q=0,*/*", text),
        ("text/plain;q=0.9, application/openmetrics-text;q=0.5", text),
        ("text/plain;q=0.5, application/openmetrics-text;q=0.9", om),
        ("application/*", om),
        ("*/*", text),
        (
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            om,
        ),
    ] {
        let r = client
            .get(format!("{}/metrics", exp.url))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        let body = r.text().await.unwrap();
        assert_eq!(ct, want, "Accept: {accept}");
        assert_eq!(body.ends_with("# EOF\n"), want == om, "Accept: {accept}");
    }
    exp.stop().await;
}

fn iteration(worker_id: String) -> ForwardPassMetrics {
    ForwardPassMetrics {
        version: 1,
        worker_id,
        wall_time: Real(0.02),
        scheduled_requests: ScheduledRequests {
            num_decode_requests: Count(8),
            sum_decode_kv_tokens: Count(4096),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Sends `GET /metrics` with a tiny receive buffer and never reads the answer.
async fn stalled_scraper(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_scrapers_are_bounded_and_cut_off_while_json_stays_fast() {
    let port = common::free_port_range(1);
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let mut p = FramePublisher::bind(&endpoint).await.unwrap();
    let exp = Exporter::start(&[
        "--endpoint",
        &endpoint,
        "--engine",
        "big",
        "--max-scrapes",
        "2",
        "--http-write-timeout",
        "6s",
        "--stale-after",
        "60s",
        "--rank-detail",
        "full",
    ])
    .await;
    // Enough ranks that one exposition is far larger than the socket buffers and the
    // render's hand-over queue, so a scraper that reads nothing stalls its render.
    let ranks = 600;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sample(&exp.metrics().await, "fpm_exporter_ranks_tracked", &[]) != Some(1.0) {
        assert!(Instant::now() < deadline, "never subscribed");
        p.send(&mut iteration("w-0".into())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..ranks {
        p.send(&mut iteration(format!("w-{i}"))).await.unwrap();
    }
    // Window series appear once the second the frames fell in has completed.
    let body = wait_for(
        "all ranks with windows",
        Duration::from_secs(15),
        || async {
            let m = exp.metrics().await;
            (sample(&m, "fpm_exporter_ranks_tracked", &[]) == Some(ranks as f64)
                && m.len() > 6 << 20)
                .then_some(m)
        },
    )
    .await;
    eprintln!("exposition: {} bytes for {ranks} ranks", body.len());
    assert!(
        body.len() > 6 << 20,
        "exposition too small to stall: {}",
        body.len()
    );

    let client = reqwest::Client::new();
    let before = json_slowest(&client, &exp.url).await;
    let addr: std::net::SocketAddr = exp.url.trim_start_matches("http://").parse().unwrap();
    let mut stalled = Vec::new();
    for _ in 0..6 {
        stalled.push(stalled_scraper(addr).await);
    }
    // Two renders are held by stalled scrapers; past the budget, scrapes get 503.
    let rejected = wait_for("scrapes rejected", Duration::from_secs(20), || async {
        let r = client
            .get(format!("{}/metrics", exp.url))
            .send()
            .await
            .unwrap();
        (r.status() == 503).then_some(r)
    })
    .await;
    assert_eq!(rejected.headers()["retry-after"], "1");

    // The JSON endpoints have their own budget: as fast as before the scrapes got stuck
    // (a debug build renders 600 ranks slowly, so the bound follows the baseline).
    // Measured once the stuck renders have filled the socket buffers and wait: until
    // then they take CPU, which is not what this checks.
    wait_for("renders stalled", Duration::from_secs(20), || async {
        let t0 = cpu_ticks();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // At most 20 % of a core (clock ticks are 10 ms).
        (cpu_ticks() - t0 <= 4).then_some(())
    })
    .await;
    let slowest = json_slowest(&client, &exp.url).await;
    eprintln!(
        "slowest /v1/ranks or /v1/rank_loads: {before:?} before, {slowest:?} with stalled scrapers"
    );
    let bound = (before * 3).max(Duration::from_secs(2));
    assert!(
        slowest < bound,
        "JSON took {slowest:?} (before: {before:?})"
    );

    // The write timeout cuts both stalled renders' scrapers off and frees their renders.
    let m = wait_for("scrapes served again", Duration::from_secs(20), || async {
        let r = client
            .get(format!("{}/metrics", exp.url))
            .send()
            .await
            .unwrap();
        if r.status() != 200 {
            return None;
        }
        let m = r.text().await.unwrap();
        (sample(&m, "fpm_exporter_http_write_timeouts_total", &[])? >= 2.0).then_some(m)
    })
    .await;
    let refused = sample(&m, "fpm_exporter_scrapes_rejected_total", &[]).unwrap();
    assert!(
        refused >= 5.0,
        "{refused} scrapes rejected (4 stalled + 1 probe)"
    );
    drop(stalled);
    p.close().await;
    exp.stop().await;
}

/// The slowest of ten `/v1/ranks?worker_id=` and ten `/v1/rank_loads` requests.
async fn json_slowest(client: &reqwest::Client, url: &str) -> Duration {
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        for path in [
            format!("/v1/ranks?worker_id=w-{i}"),
            "/v1/rank_loads".to_owned(),
        ] {
            let t = Instant::now();
            let r = client.get(format!("{url}{path}")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            let v: serde_json::Value = r.json().await.unwrap();
            assert!(v.is_object(), "{path}");
            slowest = slowest.max(t.elapsed());
        }
    }
    slowest
}

/// CPU time of this process (the exporter runs in it), in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime, fields 14 and 15 of proc(5).
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}
