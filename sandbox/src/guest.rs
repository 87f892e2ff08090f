//! Per-run guest state: the WASI context, the resource limiter that notices memory-limit hits,
//! the deadline and cancellation checks run on every epoch tick, and how a finished call is
//! turned into a status.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::limits::{Limits, ScratchQuota};
use crate::protocol::RunStatus;
use crate::quota::ScratchUsage;

/// Set when whoever asked for a run no longer wants it; the guest is interrupted at its next
/// epoch tick.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// Asks the run to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether the run was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why the host interrupted the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The wall-clock budget ran out.
    Timeout,
    /// The caller went away.
    Cancelled,
}

/// How many of each resource one run's store may hold, whatever its memory limit; the
/// engine's instance pool is sized from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreCaps {
    /// Instances: the guest's, and the quota bridge's for Python.
    pub instances: u32,
    /// Linear memories.
    pub memories: u32,
    /// Tables.
    pub tables: u32,
    /// Elements per table.
    pub table_elements: usize,
}

impl StoreCaps {
    /// The caps every run gets.
    pub const PER_RUN: StoreCaps = StoreCaps {
        instances: 4,
        memories: 4,
        tables: 16,
        table_elements: 1 << 20,
    };
}

/// Wraps `StoreLimits` to remember whether the guest ever asked for more memory than allowed,
/// so a failure that follows can be reported as `memory_exceeded`.
pub struct GuestLimiter {
    limits: StoreLimits,
    memory_limit: usize,
    memory_limit_hit: bool,
}

impl GuestLimiter {
    /// Caps memory at `memory_limit` bytes and bounds the other store resources. Growth past
    /// the cap returns -1 to the guest instead of trapping, so guests can handle it.
    pub fn new(memory_limit: usize) -> Self {
        let caps = StoreCaps::PER_RUN;
        GuestLimiter {
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_limit)
                .instances(caps.instances as usize)
                .memories(caps.memories as usize)
                .tables(caps.tables as usize)
                .table_elements(caps.table_elements)
                .trap_on_grow_failure(false)
                .build(),
            memory_limit,
            memory_limit_hit: false,
        }
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if !allowed && desired > self.memory_limit {
            self.memory_limit_hit = true;
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// Everything a run's `Store` carries.
pub struct RunState {
    /// WASI preview1 context: stdio only, no files, no environment.
    pub wasi: WasiP1Ctx,
    /// Memory and resource caps.
    pub limiter: GuestLimiter,
    /// What the run has put in its scratch directory, against its quota.
    pub scratch: ScratchUsage,
    clock_origin: Instant,
    deadline: Instant,
    cancel: CancelFlag,
    stopped: Option<Stop>,
}

impl RunState {
    /// State for a run whose monotonic clock counts from `clock_origin` and that must end by
    /// `deadline` or when `cancel` is set.
    pub fn new(
        wasi: WasiP1Ctx,
        clock_origin: Instant,
        limiter: GuestLimiter,
        scratch: ScratchQuota,
        deadline: Instant,
        cancel: CancelFlag,
    ) -> Self {
        RunState {
            wasi,
            clock_origin,
            limiter,
            scratch: ScratchUsage::new(scratch),
            deadline,
            cancel,
            stopped: None,
        }
    }

    /// The instant the guest's monotonic clock reads as zero.
    pub fn clock_origin(&self) -> Instant {
        self.clock_origin
    }

    /// Called from the epoch-deadline callback on every tick the guest spends in WebAssembly.
    pub fn on_epoch_tick(&mut self) -> UpdateDeadline {
        if self.should_stop() {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Continue(1)
        }
    }

    /// Whether the run must stop now (cancelled or past its deadline); records why.
    pub fn should_stop(&mut self) -> bool {
        if self.cancel.is_cancelled() {
            self.stopped = Some(Stop::Cancelled);
        } else if Instant::now() >= self.deadline {
            self.stopped = Some(Stop::Timeout);
        }
        self.stopped.is_some()
    }
}

/// A run's status, exit code and explanatory message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// The status reported to the caller.
    pub status: RunStatus,
    /// WASI exit code, or -1 when the guest did not exit by itself.
    pub exit_code: i32,
    /// What stopped the guest, for statuses other than `ok` and `error`.
    pub message: Option<String>,
}

impl Ending {
    fn new(status: RunStatus, exit_code: i32, message: Option<String>) -> Self {
        Ending {
            status,
            exit_code,
            message,
        }
    }

    /// Classifies the result of instantiating and calling the entrypoint.
    ///
    /// Precedence: a clean exit wins; then the host's own interruptions (timeout, cancel) and
    /// fuel, which are certain; then a memory-limit hit, since a guest that was refused memory
    /// and then failed most likely failed because of it; then the guest's exit code or trap.
    pub fn classify(outcome: wasmtime::Result<()>, state: &RunState, limits: &Limits) -> Ending {
        let Err(err) = outcome else {
            return Ending::new(RunStatus::Ok, 0, None);
        };
        let exit_code = err.downcast_ref::<I32Exit>().map(|exit| exit.0);
        if exit_code == Some(0) {
            return Ending::new(RunStatus::Ok, 0, None);
        }
        match state.stopped {
            Some(Stop::Timeout) => {
                let message = format!("time limit of {} ms exceeded", limits.timeout_ms);
                return Ending::new(RunStatus::Timeout, -1, Some(message));
            }
            Some(Stop::Cancelled) => {
                let message = "run cancelled: the caller went away".to_string();
                return Ending::new(RunStatus::Trap, -1, Some(message));
            }
            None => {}
        }
        let trap = err.downcast_ref::<Trap>().copied();
        if trap == Some(Trap::OutOfFuel) {
            let message = format!("fuel limit of {} exhausted", limits.fuel);
            return Ending::new(RunStatus::OutOfFuel, -1, Some(message));
        }
        if state.limiter.memory_limit_hit {
            let message = format!("memory limit of {} MiB exceeded", limits.memory_mb);
            return Ending::new(
                RunStatus::MemoryExceeded,
                exit_code.unwrap_or(-1),
                Some(message),
            );
        }
        if let Some(code) = exit_code {
            return Ending::new(RunStatus::Error, code, None);
        }
        let message = match trap {
            Some(Trap::UnreachableCodeReached) => "wasm trap: unreachable".to_string(),
            Some(trap) => trap.to_string(),
            None => format!("{err:#}"),
        };
        Ending::new(RunStatus::Trap, -1, Some(message))
    }
}
