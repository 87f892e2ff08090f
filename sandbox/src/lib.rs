//! trine's sandbox service: runs untrusted WebAssembly in Wasmtime under fuel, memory, time and
//! output limits, behind an internal HTTP API that only the gateway calls.

pub mod auth;
pub mod compiled_cache;
pub mod config;
pub mod engine;
pub mod error;
pub mod guest;
pub mod interpreters;
pub mod limits;
pub mod module_cache;
pub mod output;
pub mod pool;
pub mod protocol;
pub mod quota;
pub mod request_id;
pub mod routes;
pub mod runner;
pub mod scratch;
pub mod sleep;

use std::sync::Arc;

pub use auth::InternalToken;
pub use config::{ConfigError, SandboxConfig};
pub use error::ApiError;
pub use protocol::{RunRequest, RunResult, RunStatus};
pub use runner::Sandbox;

/// Shared state of the HTTP service; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    sandbox: Arc<Sandbox>,
    pool: Arc<pool::RunPool>,
    token: Arc<InternalToken>,
}

impl AppState {
    /// Builds the engine, the interpreters, the run pool and the credential check from
    /// validated configuration, after removing scratch directories that killed sandbox
    /// processes left behind. Loading interpreters may compile them (see `build_sandbox`).
    pub fn new(config: &SandboxConfig, token: InternalToken) -> wasmtime::Result<Self> {
        let progress = |line: &str| tracing::info!("{line}");
        scratch::sweep_stale();
        Ok(AppState {
            sandbox: Arc::new(build_sandbox(config, &progress)?),
            pool: Arc::new(pool::RunPool::new(config.concurrency, config.queue)),
            token: Arc::new(token),
        })
    }

    /// Whether runs in `language` (`python` or `javascript`) can be served.
    pub fn has_language(&self, language: &str) -> bool {
        let interpreters = self.sandbox.interpreters();
        match language {
            "python" => interpreters.python().is_some(),
            "javascript" => interpreters.javascript().is_some(),
            _ => false,
        }
    }

    /// Runs currently executing or waiting for a slot.
    pub fn busy_runs(&self) -> usize {
        self.pool.busy()
    }
}

/// The HTTP application: `GET /healthz` and `POST /run`.
pub fn app(state: AppState) -> axum::Router {
    routes::router(state)
}

/// The sandbox for `config`: the engine, then each configured interpreter, loaded compiled
/// from the on-disk cache or, on a miss, compiled and stored there first (slow: `progress`
/// hears about it). After this no request compiles an interpreter.
pub fn build_sandbox(config: &SandboxConfig, progress: &dyn Fn(&str)) -> wasmtime::Result<Sandbox> {
    let mut sandbox = Sandbox::new(config.limits, config.concurrency)?;
    let runtimes = &config.runtimes;
    if runtimes.python_wasm.is_none() && runtimes.javascript_wasm.is_none() {
        return Ok(sandbox);
    }
    let dir = config
        .cache_dir
        .as_deref()
        .ok_or_else(|| wasmtime::format_err!("no cache directory for compiled interpreters"))?;
    let cache = compiled_cache::CompiledCache::open(dir)
        .map_err(|e| wasmtime::format_err!("opening the cache {}: {e}", dir.display()))?;
    sandbox.load_interpreters(runtimes, &cache, progress)?;
    Ok(sandbox)
}

/// Runs one request given as JSON, outside HTTP (for `trine-sandbox run`).
pub async fn run_json(config: &SandboxConfig, input: &[u8]) -> Result<RunResult, ApiError> {
    let request: RunRequest = serde_json::from_slice(input)
        .map_err(|e| ApiError::InvalidRequest(format!("invalid request JSON: {e}")))?;
    let job = request.into_job(&config.limits)?;
    let progress = |line: &str| tracing::info!("{line}");
    let sandbox = Arc::new(
        build_sandbox(config, &progress)
            .map_err(|e| ApiError::Internal(format!("starting the sandbox: {e:#}")))?,
    );
    let pool = pool::RunPool::new(1, 0);
    pool.run(move |cancel| sandbox.execute(&job, cancel))
        .await?
}
