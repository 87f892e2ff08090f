//! `trine-sandbox`: serve the sandbox API, or run one request from stdin.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::io::AsyncReadExt as _;
use trine_sandbox::{AppState, InternalToken, SandboxConfig, app, request_id};

#[derive(Parser)]
#[command(
    name = "trine-sandbox",
    version,
    about = "Runs untrusted WebAssembly under limits"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (needs TRINE_INTERNAL_TOKEN).
    Serve {
        /// Address to listen on; keep it on loopback or an internal network.
        #[arg(long, env = "TRINE_SANDBOX_ADDR", default_value = "127.0.0.1:8200")]
        addr: SocketAddr,
    },
    /// Read one run request (the JSON body of POST /run) on stdin and print the result.
    Run,
    /// Compile the configured interpreters into the on-disk cache, so that `serve` starts in
    /// moments and no request ever waits for a compilation.
    Warm,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = matches!(cli.command, Command::Run | Command::Warm);
    init_logging(quiet);
    let outcome = match cli.command {
        Command::Serve { addr } => serve(addr).await,
        Command::Run => run_once().await,
        Command::Warm => warm(),
    };
    trine_sandbox::scratch::remove_own_parent();
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("trine-sandbox: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(quiet: bool) {
    let default = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(addr: SocketAddr) -> anyhow::Result<ExitCode> {
    let config = SandboxConfig::from_env()?;
    let token = InternalToken::from_lookup(&trine_sandbox::config::ProcessEnv)?;
    let state = AppState::new(&config, token)
        .map_err(|e| anyhow::anyhow!("starting the WebAssembly engine: {e:#}"))?;
    for (language, variable) in [
        ("python", "TRINE_SANDBOX_PYTHON_WASM"),
        ("javascript", "TRINE_SANDBOX_JS_WASM"),
    ] {
        if !state.has_language(language) {
            tracing::warn!(
                language,
                "{variable} is not set: {language} runs will be refused"
            );
        }
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(
        %addr,
        concurrency = config.concurrency,
        queue = config.queue,
        python = state.has_language("python"),
        javascript = state.has_language("javascript"),
        "listening"
    );
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")?;
    Ok(ExitCode::SUCCESS)
}

fn warm() -> anyhow::Result<ExitCode> {
    let config = SandboxConfig::from_env()?;
    let runtimes = &config.runtimes;
    if runtimes.python_wasm.is_none() && runtimes.javascript_wasm.is_none() {
        anyhow::bail!(
            "no interpreter configured: set TRINE_SANDBOX_PYTHON_WASM with \
             TRINE_SANDBOX_PYTHON_STDLIB, and/or TRINE_SANDBOX_JS_WASM"
        );
    }
    if let Some(dir) = &config.cache_dir {
        println!("trine-sandbox warm: cache {}", dir.display());
    }
    let progress = |line: &str| println!("trine-sandbox warm: {line}");
    trine_sandbox::build_sandbox(&config, &progress)
        .map_err(|e| anyhow::anyhow!("warming the interpreters: {e:#}"))?;
    println!("trine-sandbox warm: ready");
    Ok(ExitCode::SUCCESS)
}

async fn run_once() -> anyhow::Result<ExitCode> {
    let config = SandboxConfig::from_env()?;
    let mut input = Vec::new();
    tokio::io::stdin()
        .read_to_end(&mut input)
        .await
        .context("reading the request from stdin")?;
    let id = request_id::generate();
    let outcome = request_id::scope(id.clone(), trine_sandbox::run_json(&config, &input)).await;
    let (body, code) = match outcome {
        Ok(result) => (serde_json::to_string(&result)?, ExitCode::SUCCESS),
        Err(err) => {
            err.log();
            (err.envelope(&id).to_string(), ExitCode::from(1))
        }
    };
    println!("{body}");
    Ok(code)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down");
}
