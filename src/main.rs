//! The `fpm-exporter` command.

use clap::Parser;
use fpm_exporter::config::{Cli, Command, LogFormat, Settings};
use std::process::ExitCode;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

fn init_logs(format: LogFormat) {
    // Quiet by default: startup, rank arrivals, stale/expired; RUST_LOG=debug for more.
    // async-nats logs every event and every failed connection attempt (several a second,
    // for ever, under a wrong token); the exporter logs those itself, rate-limited.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,zeromq=warn,async_nats=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `top` owns the terminal: a log line on stderr would scribble over its screen.
    if !matches!(cli.command, Some(Command::Top { .. })) {
        init_logs(cli.run.log_format);
    }
    let runtime = fpm_exporter::app::runtime().expect("tokio runtime");
    runtime.block_on(async move {
        match cli.command {
            Some(Command::Demo { endpoint, ranks, skew, slow, duration }) => {
                let (tx, rx) = tokio::sync::watch::channel(false);
                let skew = fpm_exporter::publisher::demo::Skew { heavy: skew, slow };
                let tasks = fpm_exporter::publisher::demo::spawn(&endpoint, ranks, skew, &rx);
                tracing::info!(%endpoint, ranks, "simulated engine publishing");
                match duration {
                    Some(d) => tokio::select! { _ = tokio::time::sleep(d) => {}, _ = wait_for_signal() => {} },
                    None => wait_for_signal().await,
                }
                let _ = tx.send(true);
                for t in tasks {
                    let _ = t.await;
                }
                ExitCode::SUCCESS
            }
            Some(Command::Replay { files, endpoint, speed, wait }) => {
                let options = fpm_exporter::publisher::replay::ReplayOptions { files, endpoint, speed, wait };
                let (tx, rx) = tokio::sync::watch::channel(false);
                let run = fpm_exporter::publisher::replay::run(&options, rx);
                tokio::pin!(run);
                let result = tokio::select! {
                    r = &mut run => r,
                    _ = wait_for_signal() => {
                        let _ = tx.send(true);
                        run.await
                    }
                };
                match result {
                    Ok(r) => {
                        tracing::info!(
                            frames = r.frames,
                            skipped_lines = r.skipped_lines,
                            ranks = ?r.ranks,
                            capture_s = r.capture_secs,
                            elapsed_s = r.elapsed_secs,
                            "replay finished"
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("fpm-exporter replay: {e}");
                        ExitCode::from(1)
                    }
                }
            }
            Some(Command::Top { url, api_token_file }) => {
                let options = fpm_exporter::top::Options { url, api_token_file };
                match fpm_exporter::top::run(options).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("fpm-exporter top: {e}");
                        ExitCode::from(1)
                    }
                }
            }
            None => {
                let settings = match Settings::from_cli(&cli.run) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("fpm-exporter: {e}");
                        return ExitCode::from(2);
                    }
                };
                let running = match fpm_exporter::app::start(settings).await {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("fpm-exporter: cannot listen: {e}");
                        return ExitCode::from(1);
                    }
                };
                wait_for_signal().await;
                tracing::info!("shutting down");
                running.stop(Duration::from_millis(900)).await;
                ExitCode::SUCCESS
            }
        }
    })
}
