//! The JSON shapes of `POST /run` (also read by `trine-sandbox run` on stdin) and how a request
//! becomes a validated job.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::limits::{LimitPolicy, Limits, RequestedLimits};

/// The body of `POST /run`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// `wat`, `wasm`, `python` or `javascript`.
    pub language: String,
    /// WebAssembly text for `wat`, source code for `python` and `javascript`.
    #[serde(default)]
    pub code: Option<String>,
    /// Base64 WebAssembly binary, for `wasm`.
    #[serde(default)]
    pub module: Option<String>,
    /// Export to call; default `run` if exported, else WASI `_start`.
    #[serde(default)]
    pub entrypoint: Option<String>,
    /// Bytes the guest reads from stdin.
    #[serde(default)]
    pub stdin: String,
    /// Requested limits; omitted ones take the defaults, larger ones are capped.
    #[serde(default)]
    pub limits: RequestedLimits,
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleSource {
    /// WebAssembly text, still to be assembled.
    Wat(String),
    /// A WebAssembly binary.
    Wasm(Vec<u8>),
    /// Python source, run by the Python interpreter.
    Python(String),
    /// JavaScript source, run by QuickJS.
    JavaScript(String),
}

impl ModuleSource {
    /// The request's `language`.
    pub fn language(&self) -> &'static str {
        match self {
            ModuleSource::Wat(_) => "wat",
            ModuleSource::Wasm(_) => "wasm",
            ModuleSource::Python(_) => "python",
            ModuleSource::JavaScript(_) => "javascript",
        }
    }
}

/// A request checked and resolved, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunJob {
    /// The module to run.
    pub source: ModuleSource,
    /// The export named by the caller, if any.
    pub entrypoint: Option<String>,
    /// The guest's stdin.
    pub stdin: Vec<u8>,
    /// Effective limits.
    pub limits: Limits,
}

impl RunRequest {
    /// Validates the request and resolves its limits under `policy`.
    pub fn into_job(self, policy: &LimitPolicy) -> Result<RunJob, ApiError> {
        let source = match self.language.as_str() {
            "wat" => {
                let code = self
                    .code
                    .filter(|c| !c.trim().is_empty())
                    .ok_or_else(|| invalid("language 'wat' needs WebAssembly text in 'code'"))?;
                ModuleSource::Wat(code)
            }
            "wasm" => {
                let encoded = self.module.filter(|m| !m.is_empty()).ok_or_else(|| {
                    invalid("language 'wasm' needs a base64 WebAssembly binary in 'module'")
                })?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|e| invalid(format!("'module' is not valid base64: {e}")))?;
                ModuleSource::Wasm(bytes)
            }
            "python" => ModuleSource::Python(source_code(self.code, "python")?),
            "javascript" => ModuleSource::JavaScript(source_code(self.code, "javascript")?),
            other => {
                return Err(invalid(format!(
                    "unknown language '{other}'; expected one of wat, wasm, python, javascript"
                )));
            }
        };
        if self.entrypoint.is_some()
            && matches!(
                source,
                ModuleSource::Python(_) | ModuleSource::JavaScript(_)
            )
        {
            return Err(invalid(
                "'entrypoint' applies only to the wat and wasm languages",
            ));
        }
        let limits = policy
            .resolve(&self.limits)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(RunJob {
            source,
            entrypoint: self.entrypoint,
            stdin: self.stdin.into_bytes(),
            limits,
        })
    }
}

/// The program text of an interpreted language: present, and free of NUL bytes, which could
/// not be passed on as a program argument.
fn source_code(code: Option<String>, language: &str) -> Result<String, ApiError> {
    let code = code
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| invalid(format!("language '{language}' needs source code in 'code'")))?;
    if code.contains('\0') {
        return Err(invalid("'code' must not contain NUL characters"));
    }
    Ok(code)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::InvalidRequest(message.into())
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The entrypoint returned, or the guest exited with code 0.
    Ok,
    /// The guest exited with a non-zero code.
    Error,
    /// The fuel budget was spent.
    OutOfFuel,
    /// The wall-clock budget was spent.
    Timeout,
    /// The guest needed more memory than allowed and then failed.
    MemoryExceeded,
    /// Any other WebAssembly trap.
    Trap,
}

impl RunStatus {
    /// The status as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Error => "error",
            RunStatus::OutOfFuel => "out_of_fuel",
            RunStatus::Timeout => "timeout",
            RunStatus::MemoryExceeded => "memory_exceeded",
            RunStatus::Trap => "trap",
        }
    }
}

/// The body of a 200 from `POST /run`: what happened when the code ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// How the run ended.
    pub status: RunStatus,
    /// The WASI exit code: 0 for `ok`, the guest's code for `error`, -1 when the guest did not
    /// exit by itself.
    pub exit_code: i32,
    /// Captured stdout (lossy UTF-8), at most `max_output_bytes`.
    pub stdout: String,
    /// Captured stderr (lossy UTF-8), at most `max_output_bytes`.
    pub stderr: String,
    /// Fuel spent by the guest.
    pub fuel_consumed: u64,
    /// Instantiation plus the entrypoint call, in milliseconds.
    pub duration_ms: f64,
    /// Whether stdout or stderr lost bytes to the cap.
    pub truncated: bool,
    /// For anything but `ok` and `error`, what stopped the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> Result<RunJob, ApiError> {
        serde_json::from_str::<RunRequest>(json)
            .unwrap()
            .into_job(&LimitPolicy::default())
    }

    #[test]
    fn wasm_modules_are_base64_decoded() {
        let job = request(r#"{"language":"wasm","module":"AGFzbQEAAAA="}"#).unwrap();
        assert_eq!(job.source, ModuleSource::Wasm(b"\0asm\x01\0\0\0".to_vec()));
        assert_eq!(job.limits, Limits::REQUEST_DEFAULTS);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        for (json, expected) in [
            (r#"{"language":"wasm","module":"***"}"#, "not valid base64"),
            (r#"{"language":"wat"}"#, "needs WebAssembly text"),
            (r#"{"language":"python"}"#, "needs source code"),
            (r#"{"language":"javascript","code":"a\u0000b"}"#, "NUL"),
            (
                r#"{"language":"python","code":"1","entrypoint":"run"}"#,
                "'entrypoint' applies only",
            ),
            (
                r#"{"language":"cobol","code":"x"}"#,
                "unknown language 'cobol'",
            ),
            (
                r#"{"language":"wat","code":"(module)","limits":{"fuel":0}}"#,
                "limits.fuel",
            ),
        ] {
            let err = request(json).unwrap_err();
            assert!(matches!(err, ApiError::InvalidRequest(_)));
            assert!(err.to_string().contains(expected), "{json}: {err}");
        }
    }

    #[test]
    fn results_omit_an_absent_message() {
        let result = RunResult {
            status: RunStatus::OutOfFuel,
            exit_code: -1,
            stdout: String::new(),
            stderr: String::new(),
            fuel_consumed: 1,
            duration_ms: 0.5,
            truncated: false,
            message: None,
        };
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["status"], "out_of_fuel");
        assert_eq!(json["status"], RunStatus::OutOfFuel.as_str());
        assert!(json.get("message").is_none());
    }
}
