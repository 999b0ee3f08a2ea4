//! `fpm-exporter top`: a terminal view of a running exporter, the live page's figures
//! in a terminal. A client of the public HTTP API only (`/v1/stream`, `/readyz`): it
//! reads their JSON and imports nothing of the exporter's own stages.

mod board;
mod feed;
pub mod model;
mod view;

use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use feed::Update;
use model::SortKey;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// What `top` is pointed at.
#[derive(Debug, Clone)]
pub struct Options {
    /// The exporter's base URL, e.g. `http://127.0.0.1:9380`.
    pub url: String,
    /// A file holding the API's bearer token (else the env `FPM_API_TOKEN`, if set).
    pub api_token_file: Option<PathBuf>,
}

/// The state of the stream, as the status line says it.
enum Link {
    Connecting,
    Live,
    Reconnecting {
        reason: String,
        attempt: u32,
        next: Instant,
    },
}

/// Everything the screen shows.
struct Screen {
    url: String,
    board: board::Board,
    link: Link,
    sort: SortKey,
    engine: Option<String>,
    paused: bool,
    scroll: usize,
    /// The furthest scroll the last drawn screen allowed (the view knows its height).
    max_scroll: std::cell::Cell<usize>,
    endpoints: Option<(u64, usize)>,
}

/// Runs the view until `q`; the terminal is restored however it ends.
pub async fn run(options: Options) -> Result<(), String> {
    let token = token(&options)?;
    let url = options.url.trim_end_matches('/').to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "{url}: give the exporter's http:// or https:// URL"
        ));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let feed = tokio::spawn(feed::run(url.clone(), token, tx));
    let shown = tokio::task::spawn_blocking(move || show(url, rx)).await;
    feed.abort();
    shown.map_err(|e| format!("the screen failed: {e}"))?
}

/// The token of `--api-token-file`, else of the env `FPM_API_TOKEN`, as the exporter
/// takes it.
fn token(options: &Options) -> Result<Option<String>, String> {
    let Some(path) = &options.api_token_file else {
        let env = std::env::var("FPM_API_TOKEN").unwrap_or_default();
        return Ok(Some(env.trim().to_string()).filter(|t| !t.is_empty()));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--api-token-file {}: {e}", path.display()))?;
    match text.trim() {
        "" => Err(format!(
            "--api-token-file {}: the file is empty",
            path.display()
        )),
        t => Ok(Some(t.to_string())),
    }
}

/// The screen's loop, on a thread of its own (terminal input blocks).
fn show(url: String, rx: Receiver<Update>) -> Result<(), String> {
    let mut terminal = ratatui::try_init().map_err(|e| format!("cannot use the terminal: {e}"))?;
    let mut screen = Screen {
        url,
        board: Default::default(),
        link: Link::Connecting,
        sort: SortKey::Rank,
        engine: None,
        paused: false,
        scroll: 0,
        max_scroll: Default::default(),
        endpoints: None,
    };
    let result = (|| -> std::io::Result<()> {
        let mut drawn = Instant::now() - Duration::from_secs(1);
        let mut dirty = true;
        loop {
            while let Ok(update) = rx.try_recv() {
                screen.apply(update);
                dirty = true;
            }
            if dirty || drawn.elapsed() >= Duration::from_millis(500) {
                screen.board.forget(Instant::now());
                terminal.draw(|f| view::draw(f, &screen))?;
                (drawn, dirty) = (Instant::now(), false);
            }
            if !event::poll(Duration::from_millis(100))? {
                continue;
            }
            match event::read()? {
                Event::Key(k) if k.kind == KeyEventKind::Press => {
                    let ctrl_c =
                        k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) {
                        return Ok(());
                    }
                    screen.key(k.code);
                }
                // ratatui's next draw sees the new size and clears the screen.
                Event::Resize(..) => terminal.autoresize()?,
                _ => {}
            }
            dirty = true;
        }
    })();
    ratatui::restore();
    result.map_err(|e| format!("terminal: {e}"))
}

impl Screen {
    fn apply(&mut self, update: Update) {
        let now = Instant::now();
        match update {
            Update::Connected => {
                self.link = Link::Live;
                self.board.new_stream();
            }
            Update::Disconnected { reason, retry_in } => {
                let attempt = match &self.link {
                    Link::Reconnecting { attempt, .. } => attempt + 1,
                    _ => 1,
                };
                let next = now + retry_in;
                self.link = Link::Reconnecting {
                    reason,
                    attempt,
                    next,
                };
            }
            Update::Readiness {
                endpoints,
                not_started,
            } => self.endpoints = Some((endpoints, not_started)),
            // Paused: the figures stay as they were; the link state still shows.
            _ if self.paused => {}
            Update::Rank(s) => self.board.rank(*s, now),
            Update::Engine(e) => self.board.engine(*e),
            Update::State(e) => self.board.state(e),
            Update::Lagged(n) => self.board.lagged += n,
            Update::Loads(l) => self.board.loads(l),
        }
    }

    fn key(&mut self, code: KeyCode) {
        match code {
            KeyCode::Char('w') => self.sort = SortKey::Work,
            KeyCode::Char('t') => self.sort = SortKey::Wall,
            KeyCode::Char('u') => self.sort = SortKey::Queue,
            KeyCode::Char('r') => self.sort = SortKey::Rank,
            KeyCode::Char(' ') | KeyCode::Char('p') => self.paused = !self.paused,
            KeyCode::Char('e') => {
                // all engines, then each in turn, then all again
                let names = self.board.engine_names();
                let at = self
                    .engine
                    .as_ref()
                    .and_then(|e| names.iter().position(|n| n == e));
                self.engine = match at {
                    None => names.first().cloned(),
                    Some(i) => names.get(i + 1).cloned(),
                };
                self.scroll = 0;
            }
            KeyCode::Up | KeyCode::Char('k') => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => {
                self.scroll = (self.scroll + 1).min(self.max_scroll.get())
            }
            KeyCode::PageUp => self.scroll = self.scroll.saturating_sub(20),
            KeyCode::PageDown => self.scroll = (self.scroll + 20).min(self.max_scroll.get()),
            KeyCode::Home => self.scroll = 0,
            _ => {}
        }
    }
}
