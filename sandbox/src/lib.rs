//! trine's sandbox service: runs untrusted WebAssembly in Wasmtime under fuel, memory, time and
//! output limits, behind an internal HTTP API that only the gateway calls.

pub mod auth;
pub mod config;
pub mod error;
pub mod guest;
pub mod limits;
pub mod module_cache;
pub mod output;
pub mod pool;
pub mod protocol;
pub mod request_id;
pub mod routes;
pub mod runner;
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
    /// Builds the engine, the run pool and the credential check from validated configuration.
    pub fn new(config: &SandboxConfig, token: InternalToken) -> wasmtime::Result<Self> {
        Ok(AppState {
            sandbox: Arc::new(Sandbox::new(config.limits)?),
            pool: Arc::new(pool::RunPool::new(config.concurrency, config.queue)),
            token: Arc::new(token),
        })
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

/// Runs one request given as JSON, outside HTTP (for `trine-sandbox run`).
pub async fn run_json(config: &SandboxConfig, input: &[u8]) -> Result<RunResult, ApiError> {
    let request: RunRequest = serde_json::from_slice(input)
        .map_err(|e| ApiError::InvalidRequest(format!("invalid request JSON: {e}")))?;
    let job = request.into_job(&config.limits)?;
    let sandbox = Arc::new(
        Sandbox::new(config.limits).map_err(|e| ApiError::Internal(format!("engine: {e:#}")))?,
    );
    let pool = pool::RunPool::new(1, 0);
    pool.run(move |cancel| sandbox.execute(&job, cancel))
        .await?
}
