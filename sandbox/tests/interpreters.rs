//! Python and JavaScript programs through the HTTP API: output, input, errors and limits.

mod common;

use common::*;
use serde_json::json;
use trine_sandbox::RunStatus;

#[tokio::test]
async fn python_prints_and_reads_stdin() {
    let body = json!({
        "language": "python",
        "code": "import sys\nname = sys.stdin.read().strip()\nprint(f'hello, {name}')\nprint('warned', file=sys.stderr)",
        "stdin": "trine\n",
    });
    let result = run_ok(&interpreter_app(), &body).await;
    assert_eq!(
        (result.status, result.exit_code),
        (RunStatus::Ok, 0),
        "{result:?}"
    );
    assert_eq!(result.stdout, "hello, trine\n");
    assert_eq!(result.stderr, "warned\n");
    assert!(result.fuel_consumed > 0);
}

#[tokio::test]
async fn python_scientific_packages_import() {
    let code = "import numpy as np, pandas as pd\n\
                print(int(np.arange(10).sum()), len(pd.DataFrame({'a': [1, 2, 3]})))";
    let limits = json!({"fuel": 10_000_000_000_u64, "timeout_ms": 30_000, "memory_mb": 512});
    let result = run_ok(&interpreter_app(), &code_request("python", code, limits)).await;
    assert_eq!(result.status, RunStatus::Ok, "{result:?}");
    assert_eq!(result.stdout, "45 3\n");
}

#[tokio::test]
async fn a_python_exception_is_an_error_with_its_traceback() {
    let code = "def f():\n    raise ValueError('no good')\nf()";
    let result = run_ok(&interpreter_app(), &code_request("python", code, json!({}))).await;
    assert_eq!((result.status, result.exit_code), (RunStatus::Error, 1));
    assert!(result.stderr.contains("Traceback"), "{}", result.stderr);
    assert!(
        result.stderr.contains("ValueError: no good"),
        "{}",
        result.stderr
    );
}

#[tokio::test]
async fn python_exit_codes_are_reported() {
    let code = "import sys; print('bye'); sys.exit(7)";
    let result = run_ok(&interpreter_app(), &code_request("python", code, json!({}))).await;
    assert_eq!((result.status, result.exit_code), (RunStatus::Error, 7));
    assert_eq!(result.stdout, "bye\n");
}

#[tokio::test]
async fn python_can_use_its_scratch_directory() {
    let code = "import os, tempfile\n\
                with open('/tmp/note.txt', 'w') as f: f.write('kept')\n\
                print(open('/tmp/note.txt').read(), os.path.exists(tempfile.gettempdir()))";
    let result = run_ok(&interpreter_app(), &code_request("python", code, json!({}))).await;
    assert_eq!(result.status, RunStatus::Ok, "{result:?}");
    assert_eq!(result.stdout, "kept True\n");
}

#[tokio::test]
async fn each_python_run_starts_with_an_empty_scratch_directory() {
    let app = interpreter_app();
    let write = "open('/tmp/left-behind', 'w').write('x')";
    assert_eq!(
        run_ok(&app, &code_request("python", write, json!({})))
            .await
            .status,
        RunStatus::Ok
    );
    let look = "import os; print(os.listdir('/tmp'))";
    let result = run_ok(&app, &code_request("python", look, json!({}))).await;
    assert_eq!(result.stdout, "[]\n", "{result:?}");
}

#[tokio::test]
async fn python_out_of_fuel() {
    let code = "while True: pass";
    let limits = json!({"fuel": 100_000_000, "timeout_ms": 30_000});
    let result = run_ok(&interpreter_app(), &code_request("python", code, limits)).await;
    assert_eq!(result.status, RunStatus::OutOfFuel, "{result:?}");
}

#[tokio::test]
async fn javascript_prints() {
    let code = "console.log('sum', [1, 2, 3].reduce((a, b) => a + b, 0))";
    let result = run_ok(
        &interpreter_app(),
        &code_request("javascript", code, json!({})),
    )
    .await;
    assert_eq!(
        (result.status, result.exit_code),
        (RunStatus::Ok, 0),
        "{result:?}"
    );
    assert_eq!(result.stdout, "sum 6\n");
}

#[tokio::test]
async fn a_javascript_exception_is_an_error_on_stderr() {
    let code = "function f() { throw new TypeError('bad type'); }\nf();";
    let result = run_ok(
        &interpreter_app(),
        &code_request("javascript", code, json!({})),
    )
    .await;
    assert_eq!((result.status, result.exit_code), (RunStatus::Error, 1));
    assert!(
        result.stderr.contains("TypeError: bad type"),
        "{}",
        result.stderr
    );
}

#[tokio::test]
async fn javascript_syntax_errors_are_errors() {
    let result = run_ok(
        &interpreter_app(),
        &code_request("javascript", "let = ;", json!({})),
    )
    .await;
    assert_eq!(result.status, RunStatus::Error);
    assert!(result.stderr.contains("SyntaxError"), "{}", result.stderr);
}

#[tokio::test]
async fn javascript_code_that_looks_like_an_option_is_still_code() {
    let code = "-1; console.log('ran')";
    let result = run_ok(
        &interpreter_app(),
        &code_request("javascript", code, json!({})),
    )
    .await;
    assert_eq!(result.stdout, "ran\n", "{result:?}");
}

#[tokio::test]
async fn interpreted_runs_and_modules_share_the_service() {
    let app = interpreter_app();
    let wasm = run_ok(&app, &wat_request("hello", json!({}))).await;
    assert_eq!(wasm.stdout, "hello, world\n");
    let python = run_ok(&app, &code_request("python", "print(2 + 2)", json!({}))).await;
    assert_eq!(python.stdout, "4\n");
}

#[tokio::test]
async fn python_short_sleeps_complete_and_the_clock_moves() {
    let code =
        "import time\nt = time.monotonic()\ntime.sleep(0.05)\nprint(time.monotonic() - t >= 0.05)";
    let result = run_ok(&interpreter_app(), &code_request("python", code, json!({}))).await;
    assert_eq!(
        (result.status, result.stdout.as_str()),
        (RunStatus::Ok, "True\n"),
        "{result:?}"
    );
}
