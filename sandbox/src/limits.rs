//! Per-run resource limits: the defaults a request gets when it omits a limit, the server's
//! maxima, and how a request's limits are resolved against both.

use serde::{Deserialize, Serialize};

/// The four limits every run is held to, fully resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Fuel units (roughly one per executed WebAssembly instruction).
    pub fuel: u64,
    /// Cap on the guest's linear memory, in MiB.
    pub memory_mb: u64,
    /// Wall-clock budget for instantiation plus the entrypoint call, in milliseconds.
    pub timeout_ms: u64,
    /// Bytes kept of stdout, and separately of stderr; the rest is dropped.
    pub max_output_bytes: u64,
}

impl Limits {
    /// What a request gets for each limit it leaves out.
    pub const REQUEST_DEFAULTS: Limits = Limits {
        fuel: 1_000_000_000,
        memory_mb: 128,
        timeout_ms: 5_000,
        max_output_bytes: 1_048_576,
    };

    /// The server maxima used when the operator configures none.
    pub const DEFAULT_MAXIMA: Limits = Limits {
        fuel: 10_000_000_000,
        memory_mb: 512,
        timeout_ms: 30_000,
        max_output_bytes: 4_194_304,
    };

    /// The memory cap in bytes.
    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
    }
}

/// How much a run may put in its scratch directory (the writable filesystem Python gets): a
/// server setting, the same for every run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScratchQuota {
    /// Bytes the run may write to files, counted as written (rewrites count again).
    pub bytes: u64,
    /// Files, directories and links the run may have made at once.
    pub entries: u64,
}

impl ScratchQuota {
    /// The quota used when the operator configures none.
    pub const DEFAULT: ScratchQuota = ScratchQuota {
        bytes: 64 << 20,
        entries: 4096,
    };
}

/// Limits as a request states them; each may be omitted.
///
/// Signed so that a zero or negative value reaches validation and gets a clear message
/// instead of a generic parse error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedLimits {
    /// Requested fuel.
    pub fuel: Option<i64>,
    /// Requested memory cap in MiB.
    pub memory_mb: Option<i64>,
    /// Requested timeout in milliseconds.
    pub timeout_ms: Option<i64>,
    /// Requested output cap in bytes.
    pub max_output_bytes: Option<i64>,
}

/// A limit in a request that can never be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limits.{name} must be a positive integer, got {value}")]
pub struct InvalidLimit {
    /// Name of the offending field.
    pub name: &'static str,
    /// The value the request gave.
    pub value: i64,
}

/// How requested limits become effective ones: defaults fill gaps, maxima cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitPolicy {
    /// Used for omitted limits (themselves capped by `maxima`).
    pub defaults: Limits,
    /// No run may exceed these; larger requests are quietly lowered to them.
    pub maxima: Limits,
    /// Every run's scratch quota.
    pub scratch: ScratchQuota,
}

impl Default for LimitPolicy {
    fn default() -> Self {
        LimitPolicy {
            defaults: Limits::REQUEST_DEFAULTS,
            maxima: Limits::DEFAULT_MAXIMA,
            scratch: ScratchQuota::DEFAULT,
        }
    }
}

impl LimitPolicy {
    /// Resolves a request's limits. Values above a maximum are capped rather than refused,
    /// so callers need not know the server's configuration; zero or negative is an error.
    pub fn resolve(&self, requested: &RequestedLimits) -> Result<Limits, InvalidLimit> {
        let pick = |name: &'static str, value: Option<i64>, default: u64, max: u64| match value {
            None => Ok(default.min(max)),
            Some(v) if v <= 0 => Err(InvalidLimit { name, value: v }),
            Some(v) => Ok((v as u64).min(max)),
        };
        let (d, m) = (&self.defaults, &self.maxima);
        Ok(Limits {
            fuel: pick("fuel", requested.fuel, d.fuel, m.fuel)?,
            memory_mb: pick("memory_mb", requested.memory_mb, d.memory_mb, m.memory_mb)?,
            timeout_ms: pick(
                "timeout_ms",
                requested.timeout_ms,
                d.timeout_ms,
                m.timeout_ms,
            )?,
            max_output_bytes: pick(
                "max_output_bytes",
                requested.max_output_bytes,
                d.max_output_bytes,
                m.max_output_bytes,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn omitted_limits_take_the_defaults() {
        let got = LimitPolicy::default()
            .resolve(&RequestedLimits::default())
            .unwrap();
        assert_eq!(got, Limits::REQUEST_DEFAULTS);
    }

    #[test]
    fn limits_above_the_maxima_are_capped() {
        let requested = RequestedLimits {
            fuel: Some(i64::MAX),
            memory_mb: Some(100_000),
            timeout_ms: Some(10),
            max_output_bytes: None,
        };
        let got = LimitPolicy::default().resolve(&requested).unwrap();
        assert_eq!(got.fuel, Limits::DEFAULT_MAXIMA.fuel);
        assert_eq!(got.memory_mb, Limits::DEFAULT_MAXIMA.memory_mb);
        assert_eq!(got.timeout_ms, 10);
        assert_eq!(
            got.max_output_bytes,
            Limits::REQUEST_DEFAULTS.max_output_bytes
        );
    }

    #[test]
    fn defaults_never_exceed_lowered_maxima() {
        let policy = LimitPolicy {
            defaults: Limits::REQUEST_DEFAULTS,
            maxima: Limits {
                timeout_ms: 100,
                ..Limits::DEFAULT_MAXIMA
            },
            scratch: ScratchQuota::DEFAULT,
        };
        let got = policy.resolve(&RequestedLimits::default()).unwrap();
        assert_eq!(got.timeout_ms, 100);
    }

    #[test]
    fn zero_or_negative_limits_are_rejected() {
        for (requested, name) in [
            (
                RequestedLimits {
                    fuel: Some(0),
                    ..Default::default()
                },
                "fuel",
            ),
            (
                RequestedLimits {
                    memory_mb: Some(-1),
                    ..Default::default()
                },
                "memory_mb",
            ),
            (
                RequestedLimits {
                    timeout_ms: Some(0),
                    ..Default::default()
                },
                "timeout_ms",
            ),
            (
                RequestedLimits {
                    max_output_bytes: Some(-5),
                    ..Default::default()
                },
                "max_output_bytes",
            ),
        ] {
            let err = LimitPolicy::default().resolve(&requested).unwrap_err();
            assert_eq!(err.name, name);
        }
    }
}
