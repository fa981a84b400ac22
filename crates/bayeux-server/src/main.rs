//! `bayeux-server`: runs the Bayeux engine, its transports and the voice API on one port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bayeux_server::App;
use bayeux_server::ServerConfig;
use bayeux_server::config::{LogFilter, LogFormat};
use clap::Parser;
use tokio::net::TcpListener;

#[cfg(feature = "jemalloc")]
mod allocator;

/// A Bayeux/CometD notification server.
///
/// Settings come from, in order of precedence: these flags, `BAYEUX_*` environment variables
/// (`BAYEUX_LISTEN`, `BAYEUX_TIMEOUT_MS`, `BAYEUX_VOICE_PUBLIC_BASE_URL`, `BAYEUX_REDIS_URL`,
/// ...), the `--config` file, the defaults. `RUST_LOG` is honoured below `--log-level`.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on; port 0 picks a free port [env: BAYEUX_LISTEN].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// TOML configuration file; every setting has a default.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `warn,bayeux_transport=debug` [env: RUST_LOG, BAYEUX_LOG].
    #[arg(long)]
    log_level: Option<String>,
    /// Log line format: `text` or `json` [env: BAYEUX_LOG_FORMAT].
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Separate listener for /metrics, /healthz and /readyz, e.g. 127.0.0.1:9090; /metrics
    /// then leaves the public port [env: BAYEUX_ADMIN_LISTEN].
    #[arg(long, value_name = "ADDR:PORT")]
    admin_listen: Option<SocketAddr>,
    /// Origin allowed to use the Bayeux endpoint cross-origin (repeatable; default: any)
    /// [env: BAYEUX_ALLOW_ORIGINS, comma-separated].
    #[arg(long = "allow-origin")]
    allow_origin: Vec<String>,
    /// Mount path of the Bayeux endpoint [env: BAYEUX_PATH].
    #[arg(long)]
    path: Option<String>,
    /// Session expiry after the client's last message, ms [env: BAYEUX_MAX_INTERVAL_MS].
    #[arg(long)]
    max_interval_ms: Option<u64>,
    /// Connect hold time, ms [env: BAYEUX_TIMEOUT_MS].
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Maximum concurrent connections [env: BAYEUX_MAX_CONNECTIONS].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Per-session queue bound, messages [env: BAYEUX_MAX_QUEUE].
    #[arg(long)]
    max_queue: Option<usize>,
    /// `Secure` on the browser cookie (serve or proxy over HTTPS) [env: BAYEUX_COOKIE_SECURE].
    #[arg(long)]
    cookie_secure: bool,
    /// Redis URL of the backplane joining several nodes, e.g. `redis://127.0.0.1:6379`.
    /// Without it: a single node, no Redis [env: BAYEUX_REDIS_URL].
    #[arg(long, value_name = "URL", hide = !cfg!(feature = "redis"))]
    redis: Option<String>,
    /// The URL clients reach this server at, for the voice API's URIs and default allowed
    /// origin, e.g. `https://voice.example.com` [env: BAYEUX_VOICE_PUBLIC_BASE_URL].
    #[arg(long, value_name = "URL", hide = !cfg!(feature = "voice"))]
    public_base_url: Option<String>,
    /// Certificate chain (PEM) for HTTPS on the listening port; with --tls-key
    /// [env: BAYEUX_TLS_CERT]. SIGHUP reloads it.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert [env: BAYEUX_TLS_KEY].
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Do not serve the voice API emulation [env: BAYEUX_VOICE_ENABLED=false].
    #[arg(long)]
    no_voice: bool,
    /// Check the configuration (file, environment, flags) and exit: 0 when valid, 2 with the
    /// reason otherwise.
    #[arg(long)]
    check_config: bool,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Serve the voice API's test-control routes under `/api/v2/test` (as `[voice]
    /// test_control = true`); off by default.
    #[arg(long)]
    voice_test_control: bool,
}

/// Exit status of a configuration error.
const CONFIG_ERROR: u8 = 2;

/// The effective configuration: defaults, file, environment, `RUST_LOG`, flags. Also the
/// `BAYEUX_*` variables that name no setting, to warn about once logging is up.
fn configure(cli: Cli) -> Result<(ServerConfig, Vec<String>), String> {
    let file = match &cli.config {
        Some(path) => Some((
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            path.display().to_string(),
        )),
        None => None,
    };
    let (mut config, ignored) = ServerConfig::from_sources(
        file.as_ref().map(|(t, n)| (t.as_str(), n.as_str())),
        std::env::vars(),
    )?;
    if let Some(filter) = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| !f.trim().is_empty())
    {
        config.log = LogFilter::new(&filter).map_err(|e| format!("RUST_LOG: {e}"))?;
    }
    if let Some(l) = cli.listen {
        config.listen = l;
    }
    if let Some(l) = cli.log_level {
        config.log = LogFilter::new(&l).map_err(|e| format!("--log-level: {e}"))?;
    }
    if let Some(f) = cli.log_format {
        config.log_format = if f == "json" {
            LogFormat::Json
        } else {
            LogFormat::Text
        };
    }
    if let Some(a) = cli.admin_listen {
        config.admin.listen = Some(a);
    }
    if !cli.allow_origin.is_empty() {
        config.bayeux.allow_origins = cli.allow_origin;
    }
    if let Some(p) = cli.path {
        config.bayeux.path = p;
    }
    if let Some(m) = cli.max_interval_ms {
        config.bayeux.max_interval_ms = m;
    }
    if let Some(t) = cli.timeout_ms {
        config.bayeux.timeout_ms = t;
    }
    if let Some(m) = cli.max_connections {
        config.bayeux.max_connections = m;
    }
    if let Some(m) = cli.max_queue {
        config.bayeux.max_queue = m;
    }
    if cli.cookie_secure {
        config.bayeux.cookie_secure = true;
    }
    if let Some(url) = cli.redis {
        #[cfg(feature = "redis")]
        {
            config.redis.url = Some(url);
        }
        #[cfg(not(feature = "redis"))]
        return Err(format!(
            "--redis {url}: this bayeux-server was built without the Redis backplane (cargo \
             feature `redis`)"
        ));
    }
    if let Some(url) = cli.public_base_url {
        #[cfg(feature = "voice")]
        {
            config.voice.public_base_url = url;
        }
        #[cfg(not(feature = "voice"))]
        return Err(format!(
            "--public-base-url {url}: this bayeux-server was built without the voice API \
             (cargo feature `voice`)"
        ));
    }
    if let Some(cert) = cli.tls_cert {
        config.tls.cert = Some(cert);
    }
    if let Some(key) = cli.tls_key {
        config.tls.key = Some(key);
    }
    if cli.voice_test_control {
        #[cfg(feature = "voice")]
        {
            config.voice.test_control = true;
        }
        #[cfg(not(feature = "voice"))]
        return Err(
            "--voice-test-control: this bayeux-server was built without the voice API \
                    (cargo feature `voice`)"
                .into(),
        );
    }
    if cli.no_voice {
        config.voice_enabled = false;
    }
    config.validate()?;
    Ok((config, ignored))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let (check, print) = (cli.check_config, cli.print_config);
    let (config, ignored) = match configure(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bayeux-server: {e}");
            return std::process::ExitCode::from(CONFIG_ERROR);
        }
    };
    for var in &ignored {
        eprintln!("bayeux-server: ignoring environment variable {var}: it names no setting");
    }
    if print {
        match config.to_toml() {
            Ok(text) => print!("{text}"),
            Err(e) => {
                eprintln!("bayeux-server: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
        return std::process::ExitCode::SUCCESS;
    }
    if check {
        println!("bayeux-server: configuration OK");
        return std::process::ExitCode::SUCCESS;
    }
    let filter = match config.log.directives() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("bayeux-server: {e}");
            return std::process::ExitCode::from(CONFIG_ERROR);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
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
    #[cfg(feature = "tls")]
    let tls = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => Some(
            bayeux_server::TlsConfig::from_pem_files(cert, key).map_err(|e| format!("tls: {e}"))?,
        ),
        _ => None,
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = App::build_for(&config, addr)?;
    #[cfg(feature = "jemalloc")]
    let app = app.with_metrics(allocator::render_metrics);
    let scheme = if config.tls.enabled() {
        "https"
    } else {
        "http"
    };
    // Scripts and tests read this line to find the port.
    println!(
        "bayeux-server listening on {scheme}://{addr} (Bayeux endpoint {})",
        config.bayeux.path
    );
    tracing::info!(%addr, %scheme, path = %config.bayeux.path, "listening");
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    if let Some(admin_addr) = config.admin.listen {
        let admin = TcpListener::bind(admin_addr)
            .await
            .map_err(|e| format!("cannot listen on {admin_addr} (admin): {e}"))?;
        let admin_addr = admin.local_addr().map_err(|e| e.to_string())?;
        println!(
            "bayeux-server admin listening on http://{admin_addr} (/metrics, /healthz, /readyz)"
        );
        tracing::info!(addr = %admin_addr, "admin listening");
        // Serves until the process exits, so that during a graceful stop `/readyz` answers
        // 503 "shutting down" while the public port drains.
        tokio::spawn(app.clone().serve_admin(admin, std::future::pending()));
    }
    #[cfg(feature = "tls")]
    let served = match tls {
        Some(tls) => {
            reload_on_sighup(tls.clone());
            app.run_tls(listener, tls, shutdown_signal(), grace).await
        }
        None => app.run(listener, shutdown_signal(), grace).await,
    };
    #[cfg(not(feature = "tls"))]
    let served = app.run(listener, shutdown_signal(), grace).await;
    served.map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

/// Reloads the certificate and key files on each SIGHUP (after a renewal); a failed reload is
/// logged and the current certificate stays.
#[cfg(feature = "tls")]
fn reload_on_sighup(tls: bayeux_server::TlsConfig) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler: certificates reload only on restart");
                return;
            }
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match tls.reload() {
                    Ok(()) => {
                        tracing::info!(cert = %tls.cert_path().display(), "TLS certificate reloaded")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificate reload failed; keeping the current one")
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = tls;
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
