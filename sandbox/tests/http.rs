//! The HTTP contract: credential, error envelope, request ID, limits, admission and
//! cancellation, and validate-only requests.

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use common::*;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use trine_sandbox::RunStatus;

#[tokio::test]
async fn healthz_needs_no_credential() {
    let request = Request::get("/healthz").body(Body::empty()).unwrap();
    let (status, _, body) = send(&default_app(), request).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"status": "ok"}));
}

#[tokio::test]
async fn run_without_a_token_is_unauthorized() {
    let request = Request::post("/run")
        .header("content-type", "application/json")
        .body(Body::from(wat_request("hello", json!({})).to_string()))
        .unwrap();
    let (status, _, body) = send(&default_app(), request).await;
    assert_eq!(status, 401);
    assert_envelope(&body, "unauthorized");
}

#[tokio::test]
async fn run_with_a_wrong_token_is_unauthorized() {
    let request = Request::post("/run")
        .header("content-type", "application/json")
        .header("x-trine-internal-token", format!("{TOKEN}x"))
        .body(Body::from(wat_request("hello", json!({})).to_string()))
        .unwrap();
    let (status, _, body) = send(&default_app(), request).await;
    assert_eq!(status, 401);
    assert_envelope(&body, "unauthorized");
}

#[tokio::test]
async fn invalid_wat_is_an_invalid_request() {
    let body = json!({"language": "wat", "code": "(module (func (export \"run\") i32.add_oops))"});
    let (status, _, json) = send(&default_app(), run_request(&body)).await;
    assert_eq!(status, 400);
    assert_envelope(&json, "invalid_request");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("WebAssembly text")
    );
}

#[tokio::test]
async fn invalid_wasm_and_base64_are_invalid_requests() {
    let app = default_app();
    for module in ["AAAA", "not base64!"] {
        let body = json!({"language": "wasm", "module": module});
        let (status, _, json) = send(&app, run_request(&body)).await;
        assert_eq!(status, 400, "{module}");
        assert_envelope(&json, "invalid_request");
    }
}

#[tokio::test]
async fn unknown_languages_are_invalid_requests() {
    let body = json!({"language": "cobol", "code": "x"});
    let (status, _, json) = send(&default_app(), run_request(&body)).await;
    assert_eq!(status, 400);
    assert_envelope(&json, "invalid_request");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(message.contains("unknown language 'cobol'"), "{json}");
}

#[tokio::test]
async fn languages_without_an_interpreter_are_unavailable_for_good() {
    let app = default_app();
    for language in ["python", "javascript"] {
        let body = json!({"language": language, "code": "1"});
        let (status, headers, json) = send(&app, run_request(&body)).await;
        assert_eq!(status, 503);
        assert_envelope(&json, "unavailable");
        let expected = format!("language '{language}' is not installed");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.contains(&expected), "{json}");
        // Retrying cannot help, so no Retry-After invites it.
        assert!(headers.get("retry-after").is_none());
    }
}

#[tokio::test]
async fn malformed_bodies_get_the_envelope() {
    let app = default_app();
    let bad_json = Request::post("/run")
        .header("content-type", "application/json")
        .header("x-trine-internal-token", TOKEN)
        .body(Body::from("{not json"))
        .unwrap();
    let (status, _, body) = send(&app, bad_json).await;
    assert_eq!(status, 400);
    assert_envelope(&body, "invalid_request");

    let unknown_field = json!({"language": "wat", "code": "(module)", "limit": {}});
    let (status, _, body) = send(&app, run_request(&unknown_field)).await;
    assert_eq!(status, 400);
    assert_envelope(&body, "invalid_request");

    let negative = json!({"language": "wat", "code": "(module)", "limits": {"timeout_ms": -1}});
    let (status, _, body) = send(&app, run_request(&negative)).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timeout_ms")
    );

    let wrong_type = Request::post("/run")
        .header("content-type", "text/plain")
        .header("x-trine-internal-token", TOKEN)
        .body(Body::from("{}"))
        .unwrap();
    let (status, _, body) = send(&app, wrong_type).await;
    assert_eq!(status, 415);
    assert_envelope(&body, "unsupported_media_type");
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let code = format!("(module) ;; {}", "x".repeat(17 << 20));
    let body = json!({"language": "wat", "code": code});
    let (status, _, json) = send(&default_app(), run_request(&body)).await;
    assert_eq!(status, 413);
    assert_envelope(&json, "payload_too_large");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_envelope() {
    let app = default_app();
    let (status, _, body) = send(&app, Request::get("/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(status, 404);
    assert_envelope(&body, "not_found");
    let (status, _, body) = send(&app, Request::get("/run").body(Body::empty()).unwrap()).await;
    assert_eq!(status, 405);
    assert_envelope(&body, "method_not_allowed");
}

#[tokio::test]
async fn the_request_id_is_echoed_and_put_in_error_bodies() {
    let app = default_app();
    let request = Request::post("/run")
        .header("x-request-id", "req-abc-123")
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = send(&app, request).await;
    assert_eq!(status, 401);
    assert_eq!(headers["x-request-id"], "req-abc-123");
    assert_eq!(body["error"]["request_id"], "req-abc-123");

    let (_, headers, _) = send(&app, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    let generated = headers["x-request-id"].to_str().unwrap();
    assert!(generated.len() >= 16, "{generated}");
}

#[tokio::test]
async fn requested_limits_are_capped_at_the_server_maxima() {
    let (app, _) = app_with(&[
        ("TRINE_SANDBOX_MAX_FUEL", "1000000"),
        ("TRINE_SANDBOX_MAX_TIMEOUT_MS", "300"),
        ("TRINE_SANDBOX_MAX_OUTPUT_BYTES", "100"),
    ]);
    let fuel = run_ok(
        &app,
        &wat_request("infinite_loop", json!({"fuel": 1_000_000_000_000_u64})),
    )
    .await;
    assert_eq!(fuel.status, RunStatus::OutOfFuel);
    assert_eq!(fuel.fuel_consumed, 1_000_000);

    let (app, _) = app_with(&[("TRINE_SANDBOX_MAX_TIMEOUT_MS", "300")]);
    let limits = json!({"fuel": 10_000_000_000_u64, "timeout_ms": 600_000});
    let started = Instant::now();
    let time = run_ok(&app, &wat_request("infinite_loop", limits)).await;
    assert_eq!(time.status, RunStatus::Timeout);
    assert!(started.elapsed() < Duration::from_secs(5));

    let (app, _) = app_with(&[("TRINE_SANDBOX_MAX_OUTPUT_BYTES", "5")]);
    let output = run_ok(
        &app,
        &wat_request("hello", json!({"max_output_bytes": 1_000_000})),
    )
    .await;
    assert_eq!((output.stdout.as_str(), output.truncated), ("hello", true));
}

/// Starts a run of the infinite loop that lasts until its timeout, in the background.
fn start_long_run(app: &axum::Router, timeout_ms: u64) -> tokio::task::JoinHandle<Value> {
    let app = app.clone();
    let body = wat_request(
        "infinite_loop",
        json!({"fuel": 10_000_000_000_u64, "timeout_ms": timeout_ms}),
    );
    tokio::spawn(async move { send(&app, run_request(&body)).await.2 })
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_saturated_pool_answers_503_with_retry_after() {
    let (app, state) = app_with(&[
        ("TRINE_SANDBOX_CONCURRENCY", "1"),
        ("TRINE_SANDBOX_QUEUE", "1"),
    ]);
    let running = start_long_run(&app, 1_000);
    let waiting = start_long_run(&app, 1_000);
    wait_until("both runs are admitted", || state.busy_runs() == 2).await;

    let (status, headers, body) = send(&app, run_request(&wat_request("hello", json!({})))).await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "1");
    assert_envelope(&body, "unavailable");

    assert_eq!(running.await.unwrap()["status"], "timeout");
    assert_eq!(waiting.await.unwrap()["status"], "timeout");
    assert_eq!(state.busy_runs(), 0);
}

#[tokio::test]
async fn a_caller_that_goes_away_stops_its_run() {
    let (app, state) = app_with(&[
        ("TRINE_SANDBOX_CONCURRENCY", "1"),
        ("TRINE_SANDBOX_QUEUE", "0"),
    ]);
    let run = start_long_run(&app, 30_000);
    wait_until("the run is admitted", || state.busy_runs() == 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let dropped_at = Instant::now();
    run.abort();
    wait_until("the run's slot is released", || state.busy_runs() == 0).await;
    assert!(
        dropped_at.elapsed() < Duration::from_secs(1),
        "{:?}",
        dropped_at.elapsed()
    );

    // The only slot is usable again.
    let result = run_ok(&app, &wat_request("hello", json!({}))).await;
    assert_eq!(result.status, RunStatus::Ok);
}

/// A POST /run request that asks only for validation.
fn validate_request(body: &Value) -> Request<Body> {
    let mut request = run_request(body);
    request
        .headers_mut()
        .insert("x-trine-validate-only", "1".parse().unwrap());
    request
}

#[tokio::test]
async fn validate_only_accepts_a_runnable_module_without_running_it() {
    // Run for real, this module would spin until its deadline.
    let body = json!({"language": "wat", "code": "(module (func (export \"run\") (loop br 0)))"});
    let response = default_app()
        .oneshot(validate_request(&body))
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert!(bytes.is_empty());
}

#[tokio::test]
async fn validate_only_refuses_what_a_run_would_refuse() {
    let app = default_app();
    let bad = [
        json!({"language": "wat", "code": "(module (func (export \"run\") i32.add_oops))"}),
        json!({"language": "wat", "code": "(module)", "entrypoint": "missing"}),
        json!({"language": "cobol", "code": "1"}),
    ];
    for body in bad {
        let (status, _, real) = send(&app, run_request(&body)).await;
        let (v_status, _, checked) = send(&app, validate_request(&body)).await;
        assert_eq!(status, 400, "{real}");
        assert_eq!(v_status, 400, "{checked}");
        assert_eq!(real["error"]["message"], checked["error"]["message"]);
    }
}
