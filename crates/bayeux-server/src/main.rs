//! `bayeux-server`: runs the Bayeux engine, its transports and the voice API on one port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bayeux_server::{App, ServerConfig};
use clap::Parser;
use tokio::net::TcpListener;

#[cfg(feature = "jemalloc")]
mod allocator;

/// A Bayeux/CometD notification server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on (overrides the config file); port 0 picks a free port.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// TOML configuration file; every setting has a default.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `debug` (overrides the config file).
    #[arg(long)]
    log_level: Option<String>,
    /// Origin allowed to use the Bayeux endpoint cross-origin (repeatable; default: any).
    #[arg(long = "allow-origin")]
    allow_origin: Vec<String>,
    /// Session expiry after the last connect, ms (overrides the config file).
    #[arg(long)]
    max_interval_ms: Option<u64>,
    /// Connect hold time, ms (overrides the config file).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Redis URL of the backplane joining several nodes, e.g. `redis://127.0.0.1:6379`
    /// (overrides the config file's `[redis] url`). Without it: a single node, no Redis.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Serve the voice API's test-control routes under `/api/v2/test` (as `[voice]
    /// test_control = true`); off by default.
    #[arg(long)]
    voice_test_control: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let mut config = match &cli.config {
        Some(path) => match ServerConfig::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("bayeux-server: {e}");
                return std::process::ExitCode::from(2);
            }
        },
        None => ServerConfig::default(),
    };
    if let Some(l) = cli.listen {
        config.listen = l;
    }
    if let Some(l) = cli.log_level {
        config.log = l;
    }
    if !cli.allow_origin.is_empty() {
        config.bayeux.allow_origins = cli.allow_origin;
    }
    if let Some(m) = cli.max_interval_ms {
        config.bayeux.max_interval_ms = m;
    }
    if let Some(t) = cli.timeout_ms {
        config.bayeux.timeout_ms = t;
    }
    if let Some(url) = cli.redis {
        config.redis.url = Some(url);
    }
    config.voice.test_control |= cli.voice_test_control;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    #[cfg(feature = "jemalloc")]
    allocator::init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bayeux-server: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bayeux-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: ServerConfig) -> Result<(), String> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = App::build_for(&config, addr)?;
    #[cfg(feature = "jemalloc")]
    let app = app.with_metrics(allocator::render_metrics);
    // Scripts and tests read this line to find the port.
    println!(
        "bayeux-server listening on http://{addr} (Bayeux endpoint {})",
        config.bayeux.path
    );
    tracing::info!(%addr, path = %config.bayeux.path, "listening");
    app.run(
        listener,
        shutdown_signal(),
        Duration::from_secs(config.shutdown_grace_secs),
    )
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal received");
}
