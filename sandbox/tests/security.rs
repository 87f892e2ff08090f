//! Hostile guests: escapes from the filesystem, the network, the environment and the process,
//! exhaustion of every limit, hostile modules, and floods of all of these at once. Every run
//! must end contained, with the right status, and leave the service healthy.

mod common;

use common::*;
use serde_json::{Value, json};
use trine_sandbox::RunStatus;

/// Runs each Python attempt and prints `name: blocked` when it raises, or `name: ALLOWED ...`.
fn python_probe(attempts: &[(&str, &str)]) -> String {
    let mut code = String::from(
        "def attempt(name, fn):\n    try:\n        got = fn()\n    except BaseException as e:\n        print(name + ': blocked', type(e).__name__)\n    else:\n        print(name + ': ALLOWED', repr(got)[:200])\n",
    );
    for (name, expression) in attempts {
        code.push_str(&format!("attempt({name:?}, lambda: {expression})\n"));
    }
    code
}

async fn assert_all_blocked(attempts: &[(&str, &str)]) {
    let prelude = "import os, sys, socket, subprocess, threading\n";
    let code = format!("{prelude}{}", python_probe(attempts));
    let result = run_ok(
        &interpreter_app(),
        &code_request("python", &code, json!({})),
    )
    .await;
    assert_eq!(result.status, RunStatus::Ok, "{result:?}");
    assert_eq!(
        result.stdout.matches(": blocked").count(),
        attempts.len(),
        "every attempt must be refused:\n{}{}",
        result.stdout,
        result.stderr
    );
}

#[tokio::test]
async fn python_cannot_read_host_files() {
    assert_all_blocked(&[
        ("passwd", "open('/etc/passwd').read()"),
        ("hostname", "open('/etc/hostname').read()"),
        ("proc", "open('/proc/self/environ').read()"),
        ("dotdot", "open('/../../../../etc/passwd').read()"),
        (
            "relative dotdot",
            "open('../../../../../etc/passwd').read()",
        ),
        (
            "lib dotdot",
            "open('/usr/local/lib/../../../../etc/passwd').read()",
        ),
        (
            "tmp dotdot",
            "os.listdir('/tmp/../../../..')[0:0] or open('/tmp/../../etc/passwd')",
        ),
    ])
    .await;
}

#[tokio::test]
async fn python_sees_only_its_own_root() {
    let code = "import os; print(sorted(os.listdir('/')), sorted(os.listdir('/usr/local/lib')))";
    let result = run_ok(&interpreter_app(), &code_request("python", code, json!({}))).await;
    assert_eq!(
        result.stdout, "['tmp', 'usr'] ['python315.zip']\n",
        "{result:?}"
    );
}

#[tokio::test]
async fn python_cannot_write_to_the_interpreter_mount() {
    assert_all_blocked(&[
        ("new file", "open('/usr/local/lib/evil.py', 'w').write('x')"),
        (
            "zip",
            "open('/usr/local/lib/python315.zip', 'r+b').write(b'x')",
        ),
        (
            "append zip",
            "open('/usr/local/lib/python315.zip', 'ab').write(b'x')",
        ),
        ("unlink zip", "os.remove('/usr/local/lib/python315.zip')"),
        ("mkdir", "os.mkdir('/usr/local/lib/pkg')"),
        (
            "rename",
            "os.rename('/usr/local/lib/python315.zip', '/tmp/z')",
        ),
    ])
    .await;
}

#[tokio::test]
async fn symlinks_cannot_lead_out_of_the_scratch_directory() {
    assert_all_blocked(&[
        (
            "absolute link",
            "os.symlink('/etc/passwd', '/tmp/a') or open('/tmp/a').read()",
        ),
        (
            "relative link",
            "os.symlink('../../../../../../etc', '/tmp/b') or os.listdir('/tmp/b')",
        ),
        (
            "link into the mount",
            "os.symlink('/usr/local/lib/python315.zip', '/tmp/c') or open('/tmp/c', 'ab').write(b'x')",
        ),
        ("hard link", "os.link('/usr/local/lib/python315.zip', '/tmp/d')"),
    ])
    .await;
}

#[tokio::test]
async fn python_has_no_network() {
    assert_all_blocked(&[
        (
            "socket",
            "socket.socket(socket.AF_INET, socket.SOCK_STREAM)",
        ),
        (
            "connect",
            "socket.create_connection(('127.0.0.1', 80), timeout=1)",
        ),
        ("resolve", "socket.getaddrinfo('localhost', 80)"),
        ("udp", "socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"),
    ])
    .await;
}

#[tokio::test]
async fn python_cannot_start_processes_or_threads() {
    assert_all_blocked(&[
        ("subprocess", "subprocess.run(['ls'])"),
        ("system", "os.system('ls') if os.system('ls') == 0 else 1/0"),
        ("fork", "os.fork()"),
        ("thread", "threading.Thread(target=print).start()"),
        ("exec", "os.execv('/bin/sh', ['sh'])"),
    ])
    .await;
}

#[tokio::test]
async fn python_sees_only_the_environment_it_needs() {
    // The test process has plenty of variables (cargo sets several, among them this one).
    assert!(std::env::var("CARGO_MANIFEST_DIR").is_ok());
    let code = "import os; print(sorted(os.environ))";
    let result = run_ok(&interpreter_app(), &code_request("python", code, json!({}))).await;
    assert_eq!(
        result.stdout, "['HOME', 'PYTHONTZPATH', 'TMPDIR']\n",
        "{result:?}"
    );
}

#[tokio::test]
async fn infinite_loops_time_out() {
    let limits = json!({"fuel": 10_000_000_000_u64, "timeout_ms": 500});
    for (language, code) in [
        ("python", "while True: pass"),
        ("javascript", "for (;;) {}"),
    ] {
        let result = run_ok(
            &interpreter_app(),
            &code_request(language, code, limits.clone()),
        )
        .await;
        assert_eq!(result.status, RunStatus::Timeout, "{language}: {result:?}");
    }
}

#[tokio::test]
async fn sleeping_past_the_deadline_times_out() {
    let code = "import time; time.sleep(30); print('woke')";
    let limits = json!({"timeout_ms": 300});
    let result = run_ok(&interpreter_app(), &code_request("python", code, limits)).await;
    assert_eq!(result.status, RunStatus::Timeout, "{result:?}");
    assert_eq!(result.stdout, "");
}

#[tokio::test]
async fn memory_bombs_hit_the_memory_limit() {
    let limits = json!({"memory_mb": 96, "fuel": 10_000_000_000_u64, "timeout_ms": 20_000});
    for (language, code) in [
        ("python", "x = bytearray(1 << 30)"),
        ("python", "x = []\nwhile True: x.append(' ' * (1 << 20))"),
        (
            "javascript",
            "const a = []; for (;;) a.push(new Array(1 << 20).fill(1.5));",
        ),
    ] {
        let result = run_ok(
            &interpreter_app(),
            &code_request(language, code, limits.clone()),
        )
        .await;
        assert_eq!(
            result.status,
            RunStatus::MemoryExceeded,
            "{language} {code}: {result:?}"
        );
    }
}

#[tokio::test]
async fn python_sees_memory_error_and_can_recover() {
    let code = "try:\n    x = bytearray(1 << 30)\nexcept MemoryError:\n    print('recovered')";
    let limits = json!({"memory_mb": 96});
    let result = run_ok(&interpreter_app(), &code_request("python", code, limits)).await;
    assert_eq!(result.stdout, "recovered\n", "{result:?}");
}

#[tokio::test]
async fn recursion_bombs_end_contained() {
    let app = interpreter_app();
    for (language, code) in [
        ("python", "def f(): f()\nf()"),
        (
            "python",
            "import sys\nsys.setrecursionlimit(10**7)\ndef f(n): return f(n + 1) + 1\nf(0)",
        ),
        ("javascript", "function f() { return f() + 1; } f();"),
    ] {
        let limits = json!({"fuel": 10_000_000_000_u64, "timeout_ms": 30_000});
        let result = run_ok(&app, &code_request(language, code, limits)).await;
        assert!(
            // Python's own limit, the WebAssembly stack, or its frames filling the heap.
            matches!(
                result.status,
                RunStatus::Error | RunStatus::Trap | RunStatus::MemoryExceeded
            ),
            "{language} {code}: {result:?}"
        );
    }
    let after = run_ok(&app, &code_request("python", "print('alive')", json!({}))).await;
    assert_eq!(after.stdout, "alive\n");
}

#[tokio::test]
async fn a_hundred_megabytes_of_output_is_truncated() {
    let limits =
        json!({"max_output_bytes": 1 << 20, "fuel": 10_000_000_000_u64, "timeout_ms": 30_000});
    for (language, code) in [
        (
            "python",
            "import sys\nfor _ in range(100): sys.stdout.write('x' * (1 << 20))",
        ),
        (
            "javascript",
            "const line = 'x'.repeat(1 << 20); for (let i = 0; i < 100; i++) console.log(line);",
        ),
    ] {
        let result = run_ok(
            &interpreter_app(),
            &code_request(language, code, limits.clone()),
        )
        .await;
        assert_eq!(
            result.status,
            RunStatus::Ok,
            "{language}: {:?}",
            result.message
        );
        assert!(result.truncated, "{language}");
        assert_eq!(result.stdout.len(), 1 << 20, "{language}");
    }
}

#[tokio::test]
async fn hostile_modules_are_refused_or_contained() {
    let app = interpreter_app();
    let huge_memory =
        json!({"language": "wat", "code": "(module (memory 65536) (func (export \"run\")))"});
    let result = run_ok(&app, &huge_memory).await;
    assert_eq!(result.status, RunStatus::MemoryExceeded);

    let unknown_import = json!({"language": "wat", "code": "(module (import \"env\" \"steal\" (func)) (func (export \"run\")))"});
    let invalid_bytes = json!({"language": "wasm", "module": "AGFzbQEAAAD/////"});
    let huge_table = json!({"language": "wat", "code": "(module (table 100000000 funcref) (func (export \"run\")))"});
    for body in [unknown_import, invalid_bytes] {
        let (status, _, json) = send(&app, run_request(&body)).await;
        assert_eq!(status, 400, "{json}");
        assert_envelope(&json, "invalid_request");
    }
    let result = run_ok(&app, &huge_table).await;
    assert_eq!(result.status, RunStatus::Trap, "{result:?}");
}

/// Limits roomy enough for Python to write and make files for a while.
fn file_limits() -> Value {
    json!({"fuel": 10_000_000_000_u64, "timeout_ms": 30_000})
}

#[tokio::test]
async fn writing_past_the_scratch_quota_raises_enospc() {
    let code = "\
import errno, os
chunk = b'x' * (1 << 20)
written = 0
try:
    with open('/tmp/big', 'wb') as f:
        for _ in range(200):
            f.write(chunk)
            written += 1
except OSError as e:
    print('caught', errno.errorcode[e.errno], e.strerror)
print('wrote', written, 'MiB; size', os.path.getsize('/tmp/big') >> 20, 'MiB')
";
    let result = run_ok(
        &interpreter_app(),
        &code_request("python", code, file_limits()),
    )
    .await;
    assert_eq!(result.status, RunStatus::Ok, "{result:?}");
    assert_eq!(
        result.stdout, "caught ENOSPC No space left on device\nwrote 64 MiB; size 64 MiB\n",
        "{result:?}"
    );
}

#[tokio::test]
async fn making_too_many_files_raises_enospc() {
    let code = "\
import errno, os
made = 0
try:
    for i in range(10000):
        open(f'/tmp/f{i}', 'w').close()
        made += 1
except OSError as e:
    print('caught', errno.errorcode[e.errno])
print('made', made)
for attempt in [lambda: os.mkdir('/tmp/d'), lambda: os.symlink('f0', '/tmp/l')]:
    try:
        attempt()
    except OSError as e:
        print('caught', errno.errorcode[e.errno])
with open('/tmp/f0', 'w') as f:
    f.write('existing files still open')
print(open('/tmp/f0').read())
for i in range(made):
    os.remove(f'/tmp/f{i}')
os.mkdir('/tmp/d')
print('after removing them:', os.listdir('/tmp'))
";
    let result = run_ok(
        &interpreter_app(),
        &code_request("python", code, file_limits()),
    )
    .await;
    assert_eq!(result.status, RunStatus::Ok, "{result:?}");
    assert_eq!(
        result.stdout,
        "caught ENOSPC\nmade 4096\ncaught ENOSPC\ncaught ENOSPC\nexisting files still open\n\
         after removing them: ['d']\n",
        "{result:?}"
    );
}

#[tokio::test]
async fn files_within_the_quota_are_written_and_read_back() {
    let code = "\
import os
os.makedirs('/tmp/a/b')
with open('/tmp/a/b/data.txt', 'w') as f:
    f.write('hello ' * 100_000)
for _ in range(3):
    with open('/tmp/a/b/data.txt', 'a') as f:
        f.write('again ')
text = open('/tmp/a/b/data.txt').read()
print(len(text), text[-12:])
os.rename('/tmp/a/b/data.txt', '/tmp/moved.txt')
print(os.path.getsize('/tmp/moved.txt'))
";
    let result = run_ok(
        &interpreter_app(),
        &code_request("python", code, file_limits()),
    )
    .await;
    assert_eq!(result.status, RunStatus::Ok, "{result:?}");
    assert_eq!(result.stdout, "600018 again again \n600018\n", "{result:?}");
}

#[tokio::test]
async fn closing_stdout_does_not_lift_the_scratch_quota() {
    // The closed number is reused for the next file opened, which must still be counted.
    let code = "\
import errno, os, sys
os.close(1)
fd = os.open('/tmp/big', os.O_WRONLY | os.O_CREAT)
chunk = b'x' * (1 << 20)
try:
    for _ in range(100):
        os.write(fd, chunk)
except OSError as e:
    print('fd', fd, 'caught', errno.errorcode[e.errno], file=sys.stderr)
print('size', os.path.getsize('/tmp/big') >> 20, file=sys.stderr)
";
    let result = run_ok(
        &interpreter_app(),
        &code_request("python", code, file_limits()),
    )
    .await;
    assert_eq!(result.status, RunStatus::Ok, "{result:?}");
    assert_eq!(result.stderr, "fd 1 caught ENOSPC\nsize 64\n", "{result:?}");
}

/// Sends `count` copies of `body` at once; each answer must be its expected result or a 503
/// with Retry-After. Returns how many ran.
async fn flood(app: &axum::Router, body: &Value, count: usize, expected: RunStatus) -> usize {
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let (app, body) = (app.clone(), body.clone());
            tokio::spawn(async move { send(&app, run_request(&body)).await })
        })
        .collect();
    let mut ran = 0;
    for task in tasks {
        let (status, headers, json) = task.await.unwrap();
        match status.as_u16() {
            200 => {
                assert_eq!(json["status"], expected.as_str(), "{json}");
                ran += 1;
            }
            503 => {
                assert_envelope(&json, "unavailable");
                assert_eq!(headers["retry-after"], "1");
            }
            other => panic!("unexpected {other}: {json}"),
        }
    }
    ran
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn floods_of_hostile_runs_are_bounded_and_the_service_stays_healthy() {
    // Its own app, so the flood does not crowd out the other tests' runs.
    let app = interpreter_app_with(&[
        ("TRINE_SANDBOX_CONCURRENCY", "2"),
        ("TRINE_SANDBOX_QUEUE", "4"),
    ]);
    let short = json!({"timeout_ms": 300, "fuel": 10_000_000_000_u64});
    let floods = [
        (
            code_request("python", "while True: pass", short.clone()),
            RunStatus::Timeout,
        ),
        (
            code_request("javascript", "for (;;) {}", short.clone()),
            RunStatus::Timeout,
        ),
        (
            code_request("python", "import time; time.sleep(10)", short.clone()),
            RunStatus::Timeout,
        ),
        (
            code_request("python", "x = bytearray(1 << 30)", json!({"memory_mb": 64})),
            RunStatus::MemoryExceeded,
        ),
        (
            code_request("python", "open('/etc/passwd')", json!({})),
            RunStatus::Error,
        ),
        (
            wat_request("infinite_loop", json!({"fuel": 1_000_000})),
            RunStatus::OutOfFuel,
        ),
        (code_request("python", "print(1)", json!({})), RunStatus::Ok),
    ];
    for (body, expected) in &floods {
        let ran = flood(&app, body, 50, *expected).await;
        // Two run and four wait at the least; the rest may be turned away.
        assert!(ran >= 6, "only {ran} of 50 ran for {body}");
    }
    let (status, _, _) = send(
        &app,
        axum::http::Request::get("/healthz")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let after = run_ok(
        &app,
        &code_request("python", "print('still here')", json!({})),
    )
    .await;
    assert_eq!(after.stdout, "still here\n");
}
