//! `top`'s screen: a status line, the exporter's health, the keys, then per engine its
//! balance and one line per rank. Drawn whole each time; ratatui sends only the cells
//! that changed and clears on a resize, so the terminal never keeps stale glyphs.

use super::board::HISTORY;
use super::model::{shortest, Measure, Row, State};
use super::{Link, Screen};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;
use std::time::Instant;

/// Lines above the scrolling part.
const HEAD: u16 = 3;
/// Sparkline cells per row (the latest points of the history).
const SPARK: usize = 30;
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// Draws the whole screen.
pub fn draw(f: &mut Frame, s: &Screen) {
    let now = Instant::now();
    let live = matches!(s.link, Link::Live);
    let area = f.area();
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let status = match &s.link {
        Link::Connecting => Span::styled(" connecting… ", Style::default().fg(Color::Yellow)),
        Link::Live => Span::styled(" ● live ", bold.fg(Color::Green)),
        Link::Reconnecting {
            reason,
            attempt,
            next,
        } => Span::styled(
            format!(
                " reconnecting (attempt {attempt}, next in {:.1} s): {reason} ",
                next.saturating_duration_since(now).as_secs_f64()
            ),
            bold.fg(Color::White).bg(Color::Red),
        ),
    };
    let mut first = vec![
        Span::styled("fpm-exporter top ", bold),
        Span::raw(format!("{}  ", s.url)),
        status,
    ];
    first.push(Span::raw(format!(
        "  sort: {} · engine: {}  ",
        s.sort.name(),
        s.engine.as_deref().unwrap_or("all")
    )));
    if s.paused {
        first.push(Span::styled(
            " PAUSED ",
            bold.fg(Color::Black).bg(Color::Yellow),
        ));
    }
    let t = s.board.totals(now, live);
    let endpoints = match s.endpoints {
        None => "–".to_string(),
        Some((n, 0)) => format!("{n} (all started)"),
        Some((n, waiting)) => format!("{n} ({waiting} not started)"),
    };
    let second = format!(
        "{} ranks: {} busy, {} idle, {} stale, {} down · endpoints {endpoints} · missed frames {} · duplicates {} · publisher restarts {} · lagged {}",
        t.states.iter().sum::<usize>(),
        t.states[0],
        t.states[1],
        t.states[2],
        t.states[3],
        t.missed,
        t.duplicates,
        t.restarts,
        s.board.lagged,
    );
    let keys = "keys: w work  t wall time  u queue  r rank  e engine  space pause  ↑↓ PgUp PgDn scroll  q quit";
    let mut lines = vec![
        Line::from(first),
        Line::raw(second),
        Line::styled(keys, Style::default().fg(Color::DarkGray)),
    ];
    let mut body = Vec::new();
    for (engine, rows) in s.board.rows(now, live, s.sort, s.engine.as_deref()) {
        body.push(Line::raw(""));
        body.push(Line::from(vec![
            Span::styled(format!("engine {engine}"), bold.fg(Color::Cyan)),
            Span::raw(format!("  {} ranks  ", rows.len())),
            Span::raw(balance(s, &engine)),
        ]));
        body.push(Line::styled(
            format!(
                "{:<24} {:<10} {:>7} {:>7} {:>10} {:>10} {:>9} {:>9} {:>7} {:>9} {:>6}  WALL TIME, LAST {SPARK} S",
                "RANK", "STATE", "RUNNING", "QUEUED", "KV TOKENS", "PREFILL/IT", "WALL p50", "WALL p99", "FRAME/S", "STRAGGLER", "KV USE"
            ),
            bold.add_modifier(Modifier::REVERSED),
        ));
        let top = rows
            .iter()
            .flat_map(|r| r.history.iter().copied())
            .fold(0.0, f64::max);
        body.extend(rows.iter().map(|r| rank_line(r, top)));
    }
    if body.is_empty() {
        body.push(Line::raw(""));
        body.push(Line::raw(if live {
            "no rank yet: waiting for the engines' frames"
        } else {
            "no data yet"
        }));
    }
    let room = area.height.saturating_sub(HEAD) as usize;
    s.max_scroll.set(body.len().saturating_sub(room));
    let scroll = s.scroll.min(s.max_scroll.get());
    lines.extend(body.into_iter().skip(scroll).take(room));
    f.render_widget(Paragraph::new(lines), area);
}

/// An engine's imbalance over its shortest window (docs/metrics.md#imbalance-and-stragglers).
fn balance(s: &Screen, engine: &str) -> String {
    let Some(e) = s.board.engine_snapshot(engine) else {
        return String::new();
    };
    let Some(b) = shortest(&e.balance).and_then(|w| e.balance[w].as_ref().map(|b| (w, b))) else {
        return String::new();
    };
    let (window, b) = b;
    let part =
        |name: &str, m: &Option<Measure>| m.as_ref().map(|m| format!("{name} {:.2}×", m.ratio));
    let mut parts: Vec<String> = [
        part("prefill tokens", &b.prefill_tokens),
        part("decode KV tokens", &b.decode_kv_tokens),
        part("queue", &b.queued_requests),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let Some(m) = b.decode_kv_tokens.as_ref().or(b.prefill_tokens.as_ref()) {
        parts.push(format!(
            "heaviest {} #{}",
            m.heaviest.worker_id, m.heaviest.dp_rank
        ));
        if let Some(w) = m.lockstep_wait_ratio {
            parts.push(format!("lockstep wait {:.0}%", 100.0 * w));
        }
    }
    if parts.is_empty() {
        parts.push("balanced, no work".into());
    }
    format!(
        "imbalance over {window} ({} ranks): {}",
        b.ranks,
        parts.join(" · ")
    )
}

fn rank_line(r: &Row, top: f64) -> Line<'static> {
    let (word, style) = match r.state {
        State::Busy => ("busy".to_string(), Style::default().fg(Color::Green)),
        State::Idle => ("idle".to_string(), Style::default().fg(Color::Blue)),
        State::Stale => (
            format!("STALE:{}s", r.age_ms / 1000),
            Style::default()
                .fg(Color::Black)
                .bg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        ),
        State::Down => (
            "DOWN".to_string(),
            Style::default()
                .fg(Color::White)
                .bg(Color::Red)
                .add_modifier(Modifier::BOLD),
        ),
    };
    let dim = if matches!(r.state, State::Down) {
        Style::default().fg(Color::DarkGray)
    } else {
        Style::default()
    };
    let id = format!("{} #{}", r.worker_id, r.dp_rank);
    let figures = format!(
        " {:>7} {:>7} {:>10} {:>10} {:>9} {:>9} {:>7} {:>9} {:>6}  ",
        int(r.running),
        int(r.queued),
        int(r.kv),
        r.prefill.map_or("–".into(), int),
        r.p50.map_or("–".into(), ms),
        r.p99.map_or("–".into(), ms),
        r.fps.map_or("–".into(), |v| format!("{v:.1}")),
        r.straggler.map_or("–".into(), |v| format!("{v:.2}×")),
        r.usage.map_or("–".into(), |v| format!("{:.1}%", 100.0 * v)),
    );
    let slow = r.straggler.is_some_and(|v| v >= 1.5);
    Line::from(vec![
        Span::styled(format!("{:<24} ", clip(&id, 24)), dim),
        Span::styled(format!("{word:<10}"), style),
        Span::styled(figures, if slow { dim.fg(Color::Red) } else { dim }),
        Span::styled(spark(&r.history, top), Style::default().fg(Color::Cyan)),
    ])
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let head: String = s.chars().take(n - 1).collect();
        head + "…"
    }
}

/// A whole number with thousands separators.
fn int(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Seconds as milliseconds, one decimal below 100 ms.
fn ms(s: f64) -> String {
    let m = s * 1000.0;
    if m < 100.0 {
        format!("{m:.1}ms")
    } else {
        format!("{m:.0}ms")
    }
}

fn spark(history: &[f64], top: f64) -> String {
    let start = history.len().saturating_sub(SPARK.min(HISTORY));
    history[start..]
        .iter()
        .map(|v| {
            if top <= 0.0 {
                BARS[0]
            } else {
                BARS[((v / top) * 7.0).round().clamp(0.0, 7.0) as usize]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_read_like_the_page_shows_them() {
        assert_eq!(super::int(69594.4), "69,594");
        assert_eq!(super::int(999.0), "999");
        assert_eq!(super::ms(0.00705), "7.0ms");
        assert_eq!(super::ms(0.4301), "430ms");
        assert_eq!(super::spark(&[0.0, 0.5, 1.0], 1.0), "▁▅█");
    }
}
