//! Helpers shared by the integration tests: build the app from a test environment and drive
//! it with `oneshot`, no socket involved.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use trine_sandbox::{AppState, InternalToken, RunResult, SandboxConfig, app};

/// The internal token the test apps accept.
pub const TOKEN: &str = "test-internal-token-0123";

/// An app configured from `env` (unset variables take their defaults) and its state.
pub fn app_with(env: &[(&str, &str)]) -> (Router, AppState) {
    let map: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let config = SandboxConfig::from_lookup(&move |name: &str| map.get(name).cloned())
        .expect("test configuration is valid");
    let state = AppState::new(&config, InternalToken::new(TOKEN).unwrap()).unwrap();
    (app(state.clone()), state)
}

/// An app with default configuration.
pub fn default_app() -> Router {
    app_with(&[]).0
}

/// The text of `tests/fixtures/<name>.wat`.
pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}.wat", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// A `wat` run request for a fixture, with optional limits.
pub fn wat_request(name: &str, limits: Value) -> Value {
    json!({"language": "wat", "code": fixture(name), "limits": limits})
}

/// A POST /run request carrying the right token.
pub fn run_request(body: &Value) -> Request<Body> {
    Request::post("/run")
        .header("content-type", "application/json")
        .header("x-trine-internal-token", TOKEN)
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// Sends `request` and returns the status, headers and JSON body.
pub async fn send(app: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("non-JSON body ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, headers, body)
}

/// Runs `body` and expects a 200 result.
pub async fn run_ok(app: &Router, body: &Value) -> RunResult {
    let (status, _, json) = send(app, run_request(body)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    serde_json::from_value(json).unwrap()
}

/// Checks an error response has the shared envelope with the given type.
pub fn assert_envelope(body: &Value, kind: &str) {
    let error = &body["error"];
    assert_eq!(error["type"], kind, "{body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        error["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{body}"
    );
}
