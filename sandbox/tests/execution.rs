//! What happens to guest code: each outcome a run can have, through the HTTP API.

mod common;

use base64::Engine as _;
use common::*;
use serde_json::json;
use trine_sandbox::RunStatus;

#[tokio::test]
async fn hello_world_prints_through_wasi() {
    let result = run_ok(&default_app(), &wat_request("hello", json!({}))).await;
    assert_eq!(result.status, RunStatus::Ok);
    assert_eq!(result.exit_code, 0);
    assert_eq!(result.stdout, "hello, world\n");
    assert_eq!(result.stderr, "");
    assert!(!result.truncated);
    assert!(result.fuel_consumed > 0);
    assert!(result.duration_ms > 0.0);
    assert_eq!(result.message, None);
}

#[tokio::test]
async fn a_run_export_that_returns_is_ok() {
    let result = run_ok(&default_app(), &wat_request("returns", json!({}))).await;
    assert_eq!((result.status, result.exit_code), (RunStatus::Ok, 0));
}

#[tokio::test]
async fn a_non_zero_exit_is_an_error_with_that_code() {
    let result = run_ok(&default_app(), &wat_request("exit_code", json!({}))).await;
    assert_eq!((result.status, result.exit_code), (RunStatus::Error, 3));
}

#[tokio::test]
async fn an_infinite_loop_runs_out_of_fuel() {
    let body = wat_request("infinite_loop", json!({"fuel": 100_000}));
    let result = run_ok(&default_app(), &body).await;
    assert_eq!(result.status, RunStatus::OutOfFuel);
    assert_eq!(result.fuel_consumed, 100_000);
    assert!(result.message.unwrap().contains("fuel"));
}

#[tokio::test]
async fn an_infinite_loop_with_plenty_of_fuel_times_out() {
    let body = wat_request(
        "infinite_loop",
        json!({"fuel": 10_000_000_000_u64, "timeout_ms": 200}),
    );
    let result = run_ok(&default_app(), &body).await;
    assert_eq!(result.status, RunStatus::Timeout);
    assert!(result.duration_ms >= 200.0, "{}", result.duration_ms);
    assert!(result.duration_ms < 2_000.0, "{}", result.duration_ms);
}

#[tokio::test]
async fn growing_memory_past_the_limit_then_failing_is_memory_exceeded() {
    let body = wat_request("memory_grow", json!({"memory_mb": 8}));
    let result = run_ok(&default_app(), &body).await;
    assert_eq!(result.status, RunStatus::MemoryExceeded, "{result:?}");
    assert!(result.message.unwrap().contains("8 MiB"));
}

#[tokio::test]
async fn a_declared_memory_above_the_limit_is_memory_exceeded() {
    // 4096 pages = 256 MiB, above the 16 MiB allowed.
    let body = json!({"language": "wat", "code": "(module (memory 4096) (func (export \"run\")))",
                      "limits": {"memory_mb": 16}});
    let result = run_ok(&default_app(), &body).await;
    assert_eq!(result.status, RunStatus::MemoryExceeded, "{result:?}");
}

#[tokio::test]
async fn a_refused_grow_that_the_guest_handles_is_fine() {
    let code = r#"(module (memory 1)
        (func (export "run") (result i32)
          (memory.grow (i32.const 1000))))"#;
    let body = json!({"language": "wat", "code": code, "limits": {"memory_mb": 1}});
    let result = run_ok(&default_app(), &body).await;
    assert_eq!(result.status, RunStatus::Ok, "{result:?}");
}

#[tokio::test]
async fn unreachable_is_a_trap_named_in_the_message() {
    let result = run_ok(&default_app(), &wat_request("unreachable", json!({}))).await;
    assert_eq!(result.status, RunStatus::Trap);
    assert_eq!(result.exit_code, -1);
    assert_eq!(result.message.as_deref(), Some("wasm trap: unreachable"));
}

#[tokio::test]
async fn deep_recursion_traps_and_the_host_survives() {
    let app = default_app();
    let result = run_ok(&app, &wat_request("deep_recursion", json!({}))).await;
    assert_eq!(result.status, RunStatus::Trap);
    assert!(result.message.unwrap().contains("call stack exhausted"));
    // The same app still serves runs afterwards.
    let again = run_ok(&app, &wat_request("hello", json!({}))).await;
    assert_eq!(again.status, RunStatus::Ok);
}

#[tokio::test]
async fn huge_output_is_truncated_at_the_cap_and_the_run_still_succeeds() {
    let cap = 1_048_576;
    let body = wat_request("flood_output", json!({"max_output_bytes": cap}));
    let result = run_ok(&default_app(), &body).await;
    assert_eq!(result.status, RunStatus::Ok, "{:?}", result.message);
    assert!(result.truncated);
    assert_eq!(result.stdout.len(), cap);
    assert!(result.stdout.bytes().all(|b| b == b'x'));
}

#[tokio::test]
async fn the_guest_cannot_open_host_files() {
    let result = run_ok(&default_app(), &wat_request("path_open", json!({}))).await;
    // errno 8 is EBADF: fd 3 is not a preopened directory because there are none.
    assert_eq!(
        (result.status, result.exit_code),
        (RunStatus::Error, 8),
        "{result:?}"
    );
}

#[tokio::test]
async fn the_guest_sees_no_host_environment() {
    // The test process certainly has environment variables (cargo sets several).
    assert!(std::env::var("CARGO_MANIFEST_DIR").is_ok());
    let result = run_ok(&default_app(), &wat_request("environment", json!({}))).await;
    assert_eq!(
        (result.status, result.exit_code),
        (RunStatus::Ok, 0),
        "{result:?}"
    );
}

#[tokio::test]
async fn stdin_reaches_the_guest_and_stderr_is_captured() {
    let mut body = wat_request("echo_stdin", json!({}));
    body["stdin"] = json!("ping\n");
    let result = run_ok(&default_app(), &body).await;
    assert_eq!(result.stdout, "ping\n");
    assert_eq!(result.stderr, "ping\n");
}

#[tokio::test]
async fn wasm_binaries_run_from_base64() {
    let wasm = wat::parse_str(fixture("hello")).unwrap();
    let module = base64::engine::general_purpose::STANDARD.encode(wasm);
    let body = json!({"language": "wasm", "module": module});
    let result = run_ok(&default_app(), &body).await;
    assert_eq!(result.stdout, "hello, world\n");
}

#[tokio::test]
async fn a_named_entrypoint_is_called() {
    let code = r#"(module
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (func (export "run") (call $exit (i32.const 1)))
        (func (export "other") (call $exit (i32.const 7))))"#;
    let body = json!({"language": "wat", "code": code, "entrypoint": "other"});
    let result = run_ok(&default_app(), &body).await;
    assert_eq!(result.exit_code, 7, "{result:?}");
}

#[tokio::test]
async fn bad_entrypoints_are_invalid_requests() {
    let app = default_app();
    for (code, entrypoint, expected) in [
        (
            "(module (func (export \"run\") (param i32)))",
            None,
            "must take none",
        ),
        (
            "(module (func (export \"run\")))",
            Some("nope"),
            "no export named 'nope'",
        ),
        (
            "(module (memory (export \"run\") 1))",
            None,
            "not a function",
        ),
        ("(module)", None, "neither 'run' nor '_start'"),
    ] {
        let body = json!({"language": "wat", "code": code, "entrypoint": entrypoint});
        let (status, _, json) = send(&app, run_request(&body)).await;
        assert_eq!(status, 400, "{json}");
        assert_envelope(&json, "invalid_request");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message}");
    }
}

#[tokio::test]
async fn unknown_imports_are_invalid_requests() {
    let code = r#"(module (import "env" "host_secret" (func)) (func (export "run")))"#;
    let body = json!({"language": "wat", "code": code});
    let (status, _, json) = send(&default_app(), run_request(&body)).await;
    assert_eq!(status, 400);
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("host_secret"),
        "{json}"
    );
}

#[tokio::test]
async fn a_sleeping_guest_still_times_out() {
    let body = wat_request("sleep", json!({"timeout_ms": 300}));
    let result = run_ok(&default_app(), &body).await;
    assert_eq!(result.status, RunStatus::Timeout, "{result:?}");
    assert!(result.duration_ms < 2_000.0, "{}", result.duration_ms);
}

#[tokio::test]
async fn a_short_sleep_completes() {
    let code = fixture("sleep").replace("10_000_000_000", "50_000_000");
    let body = json!({"language": "wat", "code": code});
    let result = run_ok(&default_app(), &body).await;
    assert_eq!(result.status, RunStatus::Ok, "{result:?}");
    assert!(result.duration_ms >= 50.0, "{}", result.duration_ms);
}
