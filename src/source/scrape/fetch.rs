//! One scrape of one target: a GET asking for text 0.0.4 (gzip welcome), a body read
//! in chunks up to the byte limit (a longer body is cut off, never buffered whole),
//! parsed by its `Content-Type` on the blocking pool.

use super::{parse, Kept, ScrapeError, ScrapeSettings, Target};
use crate::wire::exposition::Scrape;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// Text 0.0.4, and nothing else by name: asked for OpenMetrics, prometheus_client 0.26
/// (SGLang's and vLLM's library) writes `sglang:x` samples as `sglang_x` under
/// `# TYPE sglang:x`, while in text 0.0.4 it keeps the names the engines define and
/// their own dashboards query. prometheus_client answers OpenMetrics whenever the
/// header names it, whatever its `q`, so it is not named. A server that answers
/// OpenMetrics anyway is parsed as such (docs/engine-fan-in.md, "Format").
pub const ACCEPT: &str = "text/plain;version=0.0.4;q=1.0,*/*;q=0.1";

/// The scrape client: no redirects to other hosts' metrics, no proxy from the
/// environment (workers are local or on the cluster network), OS root certificates,
/// gzip asked for and decoded (prometheus_client compresses when asked).
pub fn client(settings: &ScrapeSettings) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("fpm-exporter/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(settings.timeout)
        .timeout(settings.timeout)
        .pool_max_idle_per_host(1)
        .build()
}

/// Scrapes `t` once and records the outcome on it.
pub async fn scrape_one(client: &reqwest::Client, t: &Arc<Target>, settings: &ScrapeSettings) {
    let start = Instant::now();
    let fetched = tokio::time::timeout(settings.timeout, fetch(client, t, settings.max_body_bytes))
        .await
        .unwrap_or_else(|_| {
            Err((
                ScrapeError::Timeout,
                "no complete answer within the timeout".into(),
            ))
        });
    let (body, openmetrics) = match fetched {
        Ok(b) => b,
        Err((reason, msg)) => return t.failed(reason, msg, start.elapsed()),
    };
    let target = t.clone();
    let parsed = tokio::task::spawn_blocking(move || {
        let text = std::str::from_utf8(&body).map_err(|e| format!("body is not UTF-8: {e}"))?;
        let p = parse::parse(text, openmetrics).map_err(|e| e.to_string())?;
        let scrape = Scrape {
            at: SystemTime::now(),
            families: p.families,
        };
        let rendered =
            crate::wire::exposition::render::render(&target.own_labels(), &scrape.families);
        Ok::<_, String>((scrape, rendered, p.duplicates))
    })
    .await;
    match parsed {
        Ok(Ok((scrape, rendered, dups))) => t.succeeded(
            Kept {
                scrape: Arc::new(scrape),
                rendered: Arc::new(rendered),
            },
            start.elapsed(),
            dups,
        ),
        Ok(Err(msg)) => t.failed(ScrapeError::Parse, msg, start.elapsed()),
        Err(e) => t.failed(
            ScrapeError::Parse,
            format!("parser panicked: {e}"),
            start.elapsed(),
        ),
    }
}

type Fetched = Result<(Vec<u8>, bool), (ScrapeError, String)>;

async fn fetch(client: &reqwest::Client, t: &Target, max: u64) -> Fetched {
    let classify = |e: reqwest::Error| {
        if e.is_timeout() {
            (ScrapeError::Timeout, e.to_string())
        } else {
            (ScrapeError::Connect, error_chain(&e))
        }
    };
    let mut resp = client
        .get(t.url.clone())
        .header(reqwest::header::ACCEPT, ACCEPT)
        .send()
        .await
        .map_err(classify)?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err((
            ScrapeError::HttpStatus,
            format!("HTTP status {}", resp.status()),
        ));
    }
    let openmetrics = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/openmetrics-text"));
    let too_big = || {
        (
            ScrapeError::BodyLimit,
            format!("body longer than {max} bytes"),
        )
    };
    if resp.content_length().is_some_and(|n| n > max) {
        return Err(too_big());
    }
    // reqwest's `gzip` feature asks for gzip and inflates as the body is read: the
    // chunks are decoded bytes, so the limit bounds the inflated size (a gzip bomb
    // stops at it) and a gzip answer has no Content-Length here.
    let mut body = Vec::with_capacity(resp.content_length().unwrap_or(0).min(max) as usize);
    while let Some(chunk) = resp.chunk().await.map_err(classify)? {
        if body.len() as u64 + chunk.len() as u64 > max {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, openmetrics))
}

/// An error with its causes (reqwest's own message hides "connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
