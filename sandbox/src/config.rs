//! Service configuration, read once from the environment and validated before anything starts.

use std::path::PathBuf;

use crate::compiled_cache::CompiledCache;
use crate::interpreters::RuntimePaths;
use crate::limits::{LimitPolicy, Limits, ScratchQuota};

/// Where configuration values come from: the process environment in production, a map in tests.
pub trait Lookup {
    /// The value of `name`, if set.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Lookup for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> Lookup for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("{0} must be set")]
    Missing(&'static str),
    /// A variable is set to something unusable.
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid {
        /// Variable name.
        name: &'static str,
        /// The value found (never a secret).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The internal token is too short to be a credential.
    #[error("TRINE_INTERNAL_TOKEN must be at least {min} characters")]
    TokenTooShort {
        /// The minimum accepted length.
        min: usize,
    },
}

/// How the sandbox runs guests: limit policy and the size of the run pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    /// Request defaults and server maxima.
    pub limits: LimitPolicy,
    /// Runs executing at once.
    pub concurrency: usize,
    /// Runs allowed to wait for a free slot beyond those executing.
    pub queue: usize,
    /// The interpreters' files; a language without them is unavailable.
    pub runtimes: RuntimePaths,
    /// Where compiled interpreters are kept (needed only when an interpreter is configured).
    pub cache_dir: Option<PathBuf>,
}

impl SandboxConfig {
    /// Reads `TRINE_SANDBOX_*` from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&ProcessEnv)
    }

    /// Reads `TRINE_SANDBOX_*` from `env`, applying defaults for unset variables.
    pub fn from_lookup(env: &impl Lookup) -> Result<Self, ConfigError> {
        let d = Limits::DEFAULT_MAXIMA;
        let maxima = Limits {
            fuel: positive(env, "TRINE_SANDBOX_MAX_FUEL", d.fuel)?,
            memory_mb: positive(env, "TRINE_SANDBOX_MAX_MEMORY_MB", d.memory_mb)?,
            timeout_ms: positive(env, "TRINE_SANDBOX_MAX_TIMEOUT_MS", d.timeout_ms)?,
            max_output_bytes: positive(env, "TRINE_SANDBOX_MAX_OUTPUT_BYTES", d.max_output_bytes)?,
        };
        // A 32-bit linear memory cannot exceed 4 GiB, and the output cap is held in memory.
        if maxima.memory_mb > 4096 {
            return Err(invalid(
                env,
                "TRINE_SANDBOX_MAX_MEMORY_MB",
                "must be at most 4096",
            ));
        }
        if maxima.timeout_ms > 24 * 60 * 60 * 1000 {
            return Err(invalid(
                env,
                "TRINE_SANDBOX_MAX_TIMEOUT_MS",
                "must be at most a day",
            ));
        }
        if maxima.max_output_bytes > 1 << 30 {
            return Err(invalid(
                env,
                "TRINE_SANDBOX_MAX_OUTPUT_BYTES",
                "must be at most 1 GiB",
            ));
        }
        let scratch_mb = positive(
            env,
            "TRINE_SANDBOX_MAX_SCRATCH_MB",
            ScratchQuota::DEFAULT.bytes >> 20,
        )?;
        if scratch_mb > 1 << 20 {
            return Err(invalid(
                env,
                "TRINE_SANDBOX_MAX_SCRATCH_MB",
                "must be at most 1048576 (1 TiB)",
            ));
        }
        let scratch_entries = positive(
            env,
            "TRINE_SANDBOX_MAX_SCRATCH_ENTRIES",
            ScratchQuota::DEFAULT.entries,
        )?;
        if scratch_entries > 1_000_000 {
            return Err(invalid(
                env,
                "TRINE_SANDBOX_MAX_SCRATCH_ENTRIES",
                "must be at most 1000000",
            ));
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let concurrency = positive(env, "TRINE_SANDBOX_CONCURRENCY", cores)? as usize;
        let queue = match env.get("TRINE_SANDBOX_QUEUE") {
            None => concurrency * 2,
            Some(raw) => raw.trim().parse::<usize>().map_err(|_| {
                invalid(env, "TRINE_SANDBOX_QUEUE", "must be a non-negative integer")
            })?,
        };
        let runtimes = RuntimePaths {
            python_wasm: existing_file(env, "TRINE_SANDBOX_PYTHON_WASM")?,
            python_stdlib: existing_file(env, "TRINE_SANDBOX_PYTHON_STDLIB")?,
            javascript_wasm: existing_file(env, "TRINE_SANDBOX_JS_WASM")?,
        };
        match (&runtimes.python_wasm, &runtimes.python_stdlib) {
            (Some(_), None) => return Err(ConfigError::Missing("TRINE_SANDBOX_PYTHON_STDLIB")),
            (None, Some(_)) => return Err(ConfigError::Missing("TRINE_SANDBOX_PYTHON_WASM")),
            _ => {}
        }
        let cache_dir = CompiledCache::default_dir(env);
        let needs_cache = runtimes.python_wasm.is_some() || runtimes.javascript_wasm.is_some();
        if needs_cache && cache_dir.is_none() {
            return Err(ConfigError::Missing("TRINE_SANDBOX_CACHE_DIR"));
        }
        Ok(SandboxConfig {
            limits: LimitPolicy {
                defaults: Limits::REQUEST_DEFAULTS,
                maxima,
                scratch: ScratchQuota {
                    bytes: scratch_mb << 20,
                    entries: scratch_entries,
                },
            },
            concurrency,
            queue,
            runtimes,
            cache_dir,
        })
    }
}

/// The path in `name`, which must name an existing file when set: a configured interpreter
/// that is missing is an error at start, not a surprise on the first request.
fn existing_file(env: &impl Lookup, name: &'static str) -> Result<Option<PathBuf>, ConfigError> {
    let Some(raw) = env.get(name).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let path = PathBuf::from(raw);
    if path.is_file() {
        Ok(Some(path))
    } else {
        Err(invalid(env, name, "no such file"))
    }
}

fn positive(env: &impl Lookup, name: &'static str, default: u64) -> Result<u64, ConfigError> {
    let Some(raw) = env.get(name) else {
        return Ok(default);
    };
    // Underscores are accepted so operators can write 10_000_000_000 as in the docs.
    match raw.trim().replace('_', "").parse::<u64>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(invalid(env, name, "must be a positive integer")),
    }
}

fn invalid(env: &impl Lookup, name: &'static str, reason: &'static str) -> ConfigError {
    ConfigError::Invalid {
        name,
        value: env.get(name).unwrap_or_default(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Lookup {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    #[test]
    fn unset_variables_take_the_documented_defaults() {
        let config = SandboxConfig::from_lookup(&env(&[])).unwrap();
        assert_eq!(config.limits.maxima, Limits::DEFAULT_MAXIMA);
        assert_eq!(config.limits.defaults, Limits::REQUEST_DEFAULTS);
        assert_eq!(config.limits.scratch, ScratchQuota::DEFAULT);
        assert!(config.concurrency >= 1);
        assert_eq!(config.queue, 2 * config.concurrency);
    }

    #[test]
    fn variables_override_defaults() {
        let config = SandboxConfig::from_lookup(&env(&[
            ("TRINE_SANDBOX_MAX_FUEL", "5_000"),
            ("TRINE_SANDBOX_CONCURRENCY", "3"),
            ("TRINE_SANDBOX_QUEUE", "0"),
            ("TRINE_SANDBOX_MAX_SCRATCH_MB", "2"),
            ("TRINE_SANDBOX_MAX_SCRATCH_ENTRIES", "10"),
        ]))
        .unwrap();
        assert_eq!(config.limits.maxima.fuel, 5000);
        assert_eq!(
            config.limits.scratch,
            ScratchQuota {
                bytes: 2 << 20,
                entries: 10
            }
        );
        assert_eq!((config.concurrency, config.queue), (3, 0));
    }

    #[test]
    fn configured_interpreters_must_exist_and_come_complete() {
        let err =
            SandboxConfig::from_lookup(&env(&[("TRINE_SANDBOX_JS_WASM", "/nonexistent/qjs.wasm")]))
                .unwrap_err();
        assert!(err.to_string().contains("TRINE_SANDBOX_JS_WASM"), "{err}");
        assert!(err.to_string().contains("no such file"), "{err}");

        let file = std::env::current_exe().unwrap();
        let file = file.to_str().unwrap();
        let err =
            SandboxConfig::from_lookup(&env(&[("TRINE_SANDBOX_PYTHON_WASM", file)])).unwrap_err();
        assert_eq!(err, ConfigError::Missing("TRINE_SANDBOX_PYTHON_STDLIB"));

        let config = SandboxConfig::from_lookup(&env(&[
            ("TRINE_SANDBOX_JS_WASM", file),
            ("TRINE_SANDBOX_CACHE_DIR", "/somewhere"),
        ]))
        .unwrap();
        assert_eq!(
            config.runtimes.javascript_wasm.as_deref(),
            Some(file.as_ref())
        );
        assert_eq!(config.cache_dir, Some(PathBuf::from("/somewhere")));
    }

    #[test]
    fn bad_values_are_refused_with_the_variable_name() {
        for (name, value) in [
            ("TRINE_SANDBOX_MAX_FUEL", "0"),
            ("TRINE_SANDBOX_MAX_MEMORY_MB", "lots"),
            ("TRINE_SANDBOX_MAX_MEMORY_MB", "9000"),
            ("TRINE_SANDBOX_MAX_SCRATCH_MB", "0"),
            ("TRINE_SANDBOX_MAX_SCRATCH_MB", "2000000"),
            ("TRINE_SANDBOX_MAX_SCRATCH_ENTRIES", "1000001"),
            ("TRINE_SANDBOX_CONCURRENCY", "-1"),
            ("TRINE_SANDBOX_QUEUE", "x"),
        ] {
            let err = SandboxConfig::from_lookup(&env(&[(name, value)])).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}
