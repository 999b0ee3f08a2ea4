//! `top`'s reading of a running exporter: `/v1/stream` snapshots, reconnecting with
//! backoff when the exporter goes away, and `/readyz` for the endpoints' health.

use super::model::{EngineSnapshot, RankLoads, RankSnapshot, StateEvent};
use std::sync::mpsc::Sender;
use std::time::Duration;

/// What the reader tells the screen.
pub enum Update {
    /// The stream is open.
    Connected,
    /// It closed or could not open; the next try is in `retry_in`.
    Disconnected {
        /// Why, in a few words.
        reason: String,
        /// Time until the next attempt.
        retry_in: Duration,
    },
    /// A rank's snapshot.
    Rank(Box<RankSnapshot>),
    /// An engine's aggregate.
    Engine(Box<EngineSnapshot>),
    /// A rank's liveness changed.
    State(StateEvent),
    /// The exporter skipped this many events for this client.
    Lagged(u64),
    /// `/v1/rank_loads`: the engines' own KV use.
    Loads(RankLoads),
    /// `/readyz`: endpoints configured and those not started.
    Readiness {
        /// Endpoints configured.
        endpoints: u64,
        /// Endpoints whose subscriber has not started.
        not_started: usize,
    },
}

/// A stream that sends nothing for this long (snapshots come every second) is dead.
const SILENCE: Duration = Duration::from_secs(5);
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Reads `base`'s stream until the screen hangs up (`tx` closed).
pub async fn run(base: String, token: Option<String>, tx: Sender<Update>) {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client without TLS settings builds");
    tokio::spawn(every_5s(
        client.clone(),
        base.clone(),
        token.clone(),
        tx.clone(),
    ));
    let url = format!("{base}/v1/stream?interval=1s&heartbeats=false");
    let mut retry = FIRST_RETRY;
    loop {
        let reason = match read(&client, &url, token.as_deref(), &tx, &mut retry).await {
            Ok(()) => "the exporter closed the stream".to_string(),
            Err(Failure::ScreenGone) => return,
            Err(Failure::Broke(why)) => why,
        };
        let update = Update::Disconnected {
            reason,
            retry_in: retry,
        };
        if tx.send(update).is_err() {
            return;
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(MAX_RETRY);
    }
}

/// Why one stream ended.
enum Failure {
    /// The exporter could not be read (said in a few words).
    Broke(String),
    /// The screen quit: stop reading.
    ScreenGone,
}

/// One connection: opens the stream and forwards its events until it ends.
async fn read(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    tx: &Sender<Update>,
    retry: &mut Duration,
) -> Result<(), Failure> {
    let mut request = client.get(url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| Failure::Broke(short(&e)))?;
    match response.status().as_u16() {
        200 => {}
        401 => {
            // A wrong token stays wrong: retry slowly.
            *retry = MAX_RETRY;
            return Err(Failure::Broke(
                "401: the exporter wants its API token (--api-token-file)".into(),
            ));
        }
        s => return Err(Failure::Broke(format!("HTTP {s}"))),
    }
    *retry = FIRST_RETRY;
    send(tx, Update::Connected)?;
    let mut events = Sse::default();
    loop {
        let chunk = match tokio::time::timeout(SILENCE, response.chunk()).await {
            Err(_) => return Err(Failure::Broke("no data for 5 s".into())),
            Ok(Err(e)) => return Err(Failure::Broke(short(&e))),
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(c))) => c,
        };
        for (event, data) in events.push(&chunk) {
            let update = match event.as_str() {
                "snapshot" => serde_json::from_str(&data).map(|s| Update::Rank(Box::new(s))),
                "engine_snapshot" => {
                    serde_json::from_str(&data).map(|s| Update::Engine(Box::new(s)))
                }
                "state" => serde_json::from_str(&data).map(Update::State),
                "lagged" => serde_json::from_str::<serde_json::Value>(&data)
                    .map(|v| Update::Lagged(v["missed"].as_u64().unwrap_or(1))),
                _ => continue,
            };
            // A document this build cannot read is skipped, never fatal.
            if let Ok(update) = update {
                send(tx, update)?;
            }
        }
    }
}

fn send(tx: &Sender<Update>, update: Update) -> Result<(), Failure> {
    tx.send(update).map_err(|_| Failure::ScreenGone)
}

/// A request error in a few words (reqwest's chain says which URL; the screen has it).
fn short(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "connection refused".into()
    } else if e.is_timeout() {
        "timed out".into()
    } else if e.is_body() || e.is_decode() {
        "the stream broke off".into()
    } else {
        "request failed".into()
    }
}

/// Every 5 s: `/readyz` (open) for the endpoints' health, and `/v1/rank_loads` for the
/// engines' own KV use (one light read; the stream's snapshots do not carry it).
async fn every_5s(
    client: reqwest::Client,
    base: String,
    token: Option<String>,
    tx: Sender<Update>,
) {
    loop {
        if let Some(v) =
            get_json::<serde_json::Value>(&client, &format!("{base}/readyz"), None).await
        {
            let update = Update::Readiness {
                endpoints: v["endpoints"].as_u64().unwrap_or(0),
                not_started: v["endpoints_not_started"].as_array().map_or(0, Vec::len),
            };
            if tx.send(update).is_err() {
                return;
            }
        }
        let url = format!("{base}/v1/rank_loads");
        if let Some(loads) = get_json::<RankLoads>(&client, &url, token.as_deref()).await {
            if tx.send(Update::Loads(loads)).is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// A JSON document, or None for any failure (the stream reports the exporter's state).
async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> Option<T> {
    let mut request = client.get(url).timeout(Duration::from_secs(2));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    serde_json::from_slice(&response.bytes().await.ok()?).ok()
}

/// Server-sent events cut out of a byte stream: `(event, data)` per blank-line-ended
/// block. Written out rather than taken from a crate: the exporter's events are one
/// `event:` and one `data:` line each, and this is all the format `top` needs.
#[derive(Default)]
struct Sse {
    buf: Vec<u8>,
}

impl Sse {
    fn push(&mut self, chunk: &[u8]) -> Vec<(String, String)> {
        self.buf.extend(chunk.iter().filter(|&&b| b != b'\r'));
        let mut out = Vec::new();
        while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.buf.drain(..end + 2).collect();
            let (mut event, mut data) = ("message".to_string(), String::new());
            for line in String::from_utf8_lossy(&block).lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if !data.is_empty() {
                out.push((event, data));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Sse;

    #[test]
    fn events_are_cut_at_blank_lines_whatever_the_chunking() {
        let text = b"event: snapshot\ndata: {\"a\":1}\n\n: comment\n\nevent: lagged\r\ndata: {\"missed\":3}\r\n\r\n";
        for split in 0..text.len() {
            let mut sse = Sse::default();
            let mut got = sse.push(&text[..split]);
            got.extend(sse.push(&text[split..]));
            assert_eq!(
                got,
                [
                    ("snapshot".to_string(), "{\"a\":1}".to_string()),
                    ("lagged".to_string(), "{\"missed\":3}".to_string())
                ],
                "split at {split}"
            );
        }
    }
}
