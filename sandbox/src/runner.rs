//! The shared Wasmtime engine and one run of a guest, module or interpreted program, from start
//! to result.

use std::borrow::Cow;
use std::thread;
use std::time::{Duration, Instant};

use wasmtime::{Engine, ExternType, Instance, InstancePre, Linker, Module, Store, Val};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;

use crate::compiled_cache::CompiledCache;
use crate::engine;
use crate::error::ApiError;
use crate::guest::{CancelFlag, Ending, GuestLimiter, RunState};
use crate::interpreters::{Interpreters, RuntimePaths, run_javascript};
use crate::limits::LimitPolicy;
use crate::module_cache::ModuleCache;
use crate::output::OutputSink;
use crate::protocol::{ModuleSource, RunJob, RunResult};
use crate::scratch::Scratch;
use crate::sleep::GuestMonotonicClock;

/// Native stack of threads that run guest code: deep guest recursion must end in a clean
/// stack-overflow trap, which needs room beyond `engine::MAX_WASM_STACK` for host frames.
pub const GUEST_THREAD_STACK: usize = 16 << 20;

/// How often the epoch advances: the granularity of timeouts and cancellation.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Compiled user modules kept in memory.
const MODULE_CACHE_ENTRIES: usize = 64;

/// The name the guest sees as `argv[0]`, its only argument.
const PROGRAM_NAME: &str = "main";

/// Runs guests. One per process: it owns the engines (fuel and epoch interruption on) with
/// their WASI linkers, the module cache and the interpreters, all shared by every run.
pub struct Sandbox {
    /// Runs user modules.
    module_engine: Flavour,
    /// Runs the interpreters, from a pool of instances.
    interpreter_engine: Flavour,
    modules: ModuleCache,
    interpreters: Interpreters,
    policy: LimitPolicy,
}

impl Sandbox {
    /// Builds the engines, the interpreters' with room for `concurrency` runs at once.
    pub fn new(policy: LimitPolicy, concurrency: usize) -> wasmtime::Result<Self> {
        Ok(Sandbox {
            module_engine: Flavour::new(engine::module_engine()?)?,
            interpreter_engine: Flavour::new(engine::interpreter_engine(&policy, concurrency)?)?,
            modules: ModuleCache::new(MODULE_CACHE_ENTRIES),
            interpreters: Interpreters::default(),
            policy,
        })
    }

    /// Request defaults and server maxima.
    pub fn policy(&self) -> &LimitPolicy {
        &self.policy
    }

    /// The interpreters available to runs.
    pub fn interpreters(&self) -> &Interpreters {
        &self.interpreters
    }

    /// Loads the configured interpreters (compiled from the on-disk cache, compiling on a
    /// miss) so that no request ever waits for a compilation.
    pub fn load_interpreters(
        &mut self,
        paths: &RuntimePaths,
        cache: &CompiledCache,
        progress: &dyn Fn(&str),
    ) -> wasmtime::Result<()> {
        let Flavour { engine, linker } = &self.interpreter_engine;
        self.interpreters = Interpreters::load(engine, linker, paths, cache, progress)?;
        Ok(())
    }

    /// Runs the job to completion under its limits: a module (compiled or found in the
    /// in-memory cache) or a program for one of the interpreters.
    /// Blocks: call it on a thread with at least `GUEST_THREAD_STACK` of stack.
    pub fn execute(&self, job: &RunJob, cancel: &CancelFlag) -> Result<RunResult, ApiError> {
        let max_output = usize::try_from(job.limits.max_output_bytes).unwrap_or(usize::MAX);
        let (stdout, stderr) = (OutputSink::new(max_output), OutputSink::new(max_output));
        let io = GuestIo {
            cancel,
            stdout: stdout.clone(),
            stderr: stderr.clone(),
        };
        // No environment and only stdio unless an interpreter adds what it needs: the guest
        // gets a clock and randomness, and for interpreters a private scratch directory.
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdin(MemoryInputPipe::new(job.stdin.clone()))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            // Guests run on their own threads, so file reads may block them directly.
            .allow_blocking_current_thread(true);
        let setup_failed = |e: wasmtime::Error| ApiError::Internal(format!("run setup: {e:#}"));
        match &job.source {
            ModuleSource::Wat(_) | ModuleSource::Wasm(_) => {
                let (instance_pre, entrypoint) = self.prepare_module(job)?;
                wasi.arg(PROGRAM_NAME);
                self.run_guest(&self.module_engine, job, wasi, io, |store| {
                    let instance = instance_pre.instantiate(&mut *store)?;
                    call_entrypoint(store, &instance, &entrypoint)
                })
            }
            ModuleSource::Python(code) => {
                let python = self
                    .interpreters
                    .python()
                    .ok_or(ApiError::LanguageUnavailable("python"))?;
                let scratch = Scratch::new()
                    .map_err(|e| ApiError::Internal(format!("scratch directory: {e}")))?;
                python
                    .configure(&mut wasi, code, &scratch)
                    .map_err(setup_failed)?;
                self.run_guest(&self.interpreter_engine, job, wasi, io, |store| {
                    python.run(store)
                })
            }
            ModuleSource::JavaScript(code) => {
                let quickjs = self
                    .interpreters
                    .javascript()
                    .ok_or(ApiError::LanguageUnavailable("javascript"))?;
                self.run_guest(&self.interpreter_engine, job, wasi, io, |store| {
                    run_javascript(quickjs, store, code)
                })
            }
        }
    }

    /// Checks that `job` would run without running it: its interpreter is loaded, or its module
    /// compiles (into the in-memory cache, so the real run finds it there), links and exports
    /// the entrypoint.
    pub fn validate(&self, job: &RunJob) -> Result<(), ApiError> {
        match &job.source {
            ModuleSource::Wat(_) | ModuleSource::Wasm(_) => self.prepare_module(job).map(|_| ()),
            ModuleSource::Python(_) => self
                .interpreters
                .python()
                .map(|_| ())
                .ok_or(ApiError::LanguageUnavailable("python")),
            ModuleSource::JavaScript(_) => self
                .interpreters
                .javascript()
                .map(|_| ())
                .ok_or(ApiError::LanguageUnavailable("javascript")),
        }
    }

    /// Compiles (or finds) a user module, links it and picks its entrypoint.
    fn prepare_module(&self, job: &RunJob) -> Result<(InstancePre<RunState>, String), ApiError> {
        let wasm = match &job.source {
            ModuleSource::Wat(text) => Cow::Owned(
                wat::parse_str(text)
                    .map_err(|e| invalid(format!("invalid WebAssembly text: {e}")))?,
            ),
            ModuleSource::Wasm(bytes) => Cow::Borrowed(bytes),
            ModuleSource::Python(_) | ModuleSource::JavaScript(_) => {
                return Err(ApiError::Internal("not a module".into()));
            }
        };
        let module = self
            .modules
            .get_or_compile(&self.module_engine.engine, &wasm)
            .map_err(|e| invalid(format!("invalid WebAssembly module: {e:#}")))?;
        let entrypoint = resolve_entrypoint(&module, job.entrypoint.as_deref())?;
        let instance_pre = self
            .module_engine
            .linker
            .instantiate_pre(&module)
            .map_err(|e| invalid(format!("cannot link module: {e:#}")))?;
        Ok((instance_pre, entrypoint))
    }

    /// Runs `body` in a fresh store of `flavour`'s engine under the job's limits and reports
    /// how it ended.
    fn run_guest(
        &self,
        flavour: &Flavour,
        job: &RunJob,
        mut wasi: WasiCtxBuilder,
        io: GuestIo<'_>,
        body: impl FnOnce(&mut Store<RunState>) -> wasmtime::Result<()>,
    ) -> Result<RunResult, ApiError> {
        let limits = job.limits;
        let started = Instant::now();
        let deadline = started + Duration::from_millis(limits.timeout_ms);
        wasi.monotonic_clock(GuestMonotonicClock { origin: started });
        let state = RunState::new(
            wasi.build_p1(),
            started,
            GuestLimiter::new(limits.memory_bytes()),
            self.policy.scratch,
            deadline,
            io.cancel.clone(),
        );
        let mut store = Store::new(&flavour.engine, state);
        store.limiter(|state| &mut state.limiter);
        store
            .set_fuel(limits.fuel)
            .map_err(|e| ApiError::Internal(format!("setting fuel: {e:#}")))?;
        // Wake the callback on every tick; it decides between timeout, cancel and carrying on.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| Ok(ctx.data_mut().on_epoch_tick()));

        let outcome = body(&mut store);
        let duration_ms = started.elapsed().as_secs_f64() * 1e3;
        let fuel_consumed = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let ending = Ending::classify(outcome, store.data(), &limits);
        let scratch_bytes_written = store.data().scratch.written();
        drop(store);

        let (stdout, stdout_truncated) = io.stdout.take();
        let (stderr, stderr_truncated) = io.stderr.take();
        tracing::info!(
            language = job.source.language(),
            status = ending.status.as_str(),
            exit_code = ending.exit_code,
            fuel_consumed,
            duration_ms,
            scratch_bytes_written,
            "run finished"
        );
        Ok(RunResult {
            status: ending.status,
            exit_code: ending.exit_code,
            stdout,
            stderr,
            fuel_consumed,
            duration_ms,
            truncated: stdout_truncated || stderr_truncated,
            message: ending.message,
        })
    }
}

/// An engine and its WASI linker (with `poll_oneoff` shadowed, see `sleep.rs`).
struct Flavour {
    engine: Engine,
    linker: Linker<RunState>,
}

impl Flavour {
    /// Builds the linker and starts the engine's epoch ticker, which stops when the engine is
    /// dropped.
    fn new(engine: Engine) -> wasmtime::Result<Self> {
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |state: &mut RunState| &mut state.wasi)?;
        crate::sleep::shadow_poll_oneoff(&mut linker)?;
        start_epoch_ticker(&engine)?;
        Ok(Flavour { engine, linker })
    }
}

/// What a run's host side holds on to: its cancel flag and its captured output.
struct GuestIo<'a> {
    cancel: &'a CancelFlag,
    stdout: OutputSink,
    stderr: OutputSink,
}

/// Runs `work` on a new thread big enough for guest code, returning its handle.
pub fn spawn_guest_thread<T, F>(work: F) -> std::io::Result<thread::JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    thread::Builder::new()
        .name("guest".into())
        .stack_size(GUEST_THREAD_STACK)
        .spawn(work)
}

fn invalid(message: String) -> ApiError {
    ApiError::InvalidRequest(message)
}

/// Picks the export to call: the requested one, else `run`, else WASI `_start`. It must be a
/// function without parameters.
fn resolve_entrypoint(module: &Module, requested: Option<&str>) -> Result<String, ApiError> {
    let name = match requested {
        Some(name) => name,
        None if module.get_export("run").is_some() => "run",
        None if module.get_export("_start").is_some() => "_start",
        None => {
            return Err(invalid(
                "module exports neither 'run' nor '_start'; name an entrypoint".into(),
            ));
        }
    };
    match module.get_export(name) {
        Some(ExternType::Func(ty)) if ty.params().len() == 0 => Ok(name.to_owned()),
        Some(ExternType::Func(ty)) => Err(invalid(format!(
            "entrypoint '{name}' takes {} parameter(s); it must take none",
            ty.params().len()
        ))),
        Some(_) => Err(invalid(format!("export '{name}' is not a function"))),
        None => Err(invalid(format!("module has no export named '{name}'"))),
    }
}

fn call_entrypoint(
    store: &mut Store<RunState>,
    instance: &Instance,
    name: &str,
) -> wasmtime::Result<()> {
    let func = instance
        .get_func(&mut *store, name)
        .ok_or_else(|| wasmtime::format_err!("export '{name}' is not a function"))?;
    // Results are discarded, but the call needs a slot for each.
    let mut results = vec![Val::I32(0); func.ty(&*store).results().len()];
    func.call(&mut *store, &[], &mut results)
}

/// Advances the engine's epoch every `EPOCH_TICK` until the engine is gone.
fn start_epoch_ticker(engine: &Engine) -> wasmtime::Result<()> {
    let weak = engine.weak();
    thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                thread::sleep(EPOCH_TICK);
            }
        })?;
    Ok(())
}
