//! HTTP routes: `GET /healthz` and `POST /run`, plus the JSON 404/405 fallbacks.

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::protocol::{RunRequest, RunResult};
use crate::{AppState, auth, request_id};

/// Largest request body accepted (a base64 module of about 12 MiB).
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// The service's router.
pub fn router(state: AppState) -> Router {
    let run = post(run).route_layer(from_fn_with_state(state.clone(), auth::require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/run", run)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(from_fn(request_id::propagate))
        .with_state(state)
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn run(
    State(state): State<AppState>,
    body: Result<Json<RunRequest>, JsonRejection>,
) -> Result<Json<RunResult>, ApiError> {
    let Json(request) = body?;
    let job = request.into_job(state.sandbox.policy())?;
    let sandbox = state.sandbox.clone();
    let result = state
        .pool
        .run(move |cancel| sandbox.execute(&job, cancel))
        .await??;
    Ok(Json(result))
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
