//! HTTP routes: `GET /healthz` and `POST /run`, plus the JSON 404/405 fallbacks.

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::protocol::{RunRequest, RunResult};
use crate::{AppState, auth, request_id};

/// Largest request body accepted (a base64 module of about 12 MiB).
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// Asks `POST /run` only to check the request (api/jobs.md): 204 if it would run, else the
/// same 400 as a real call.
const VALIDATE_ONLY_HEADER: &str = "x-trine-validate-only";

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
    headers: HeaderMap,
    body: Result<Json<RunRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    let job = request.into_job(state.sandbox.policy())?;
    let sandbox = state.sandbox.clone();
    if headers.get(VALIDATE_ONLY_HEADER).is_some_and(|v| v == "1") {
        // Compiling a module is CPU work: keep it off the async workers.
        tokio::task::spawn_blocking(move || sandbox.validate(&job))
            .await
            .map_err(|e| ApiError::Internal(format!("validation task: {e}")))??;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let result: RunResult = state
        .pool
        .run(move |cancel| sandbox.execute(&job, cancel))
        .await??;
    Ok(Json(result).into_response())
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
