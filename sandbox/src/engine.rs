//! The two engines runs share, user modules' and the interpreters': how they are configured,
//! and the pool the interpreters' instances are allocated from.
//!
//! Interpreter instances come from Wasmtime's pooling allocator rather than being mapped afresh
//! per run. A memory slot keeps its copy-on-write image mapped between runs of the same module,
//! so the Python snapshot's 40 MiB image is not mapped, faulted in and unmapped on every run.
//! None of this changes compiled code: interpreters cached on disk stay valid.

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::guest::StoreCaps;
use crate::limits::LimitPolicy;

/// WebAssembly stack allowed to a guest; the native stack of guest threads must exceed it.
pub const MAX_WASM_STACK: usize = 8 << 20;

/// Bytes of each freed linear memory kept resident for the next run: more than Python's
/// `print(1)` writes (~8 MiB), less than a default 128 MiB memory limit.
const KEEP_RESIDENT: usize = 64 << 20;

/// The size of a 32-bit linear memory at its largest.
const FULL_32_BIT_MEMORY: usize = 1 << 32;

/// The engine for user modules: fuel and epoch interruption always on, and WebAssembly
/// exceptions. Its instances are mapped per run: a user module's tables and memories are bounded
/// only by its run's `StoreLimits`, so one that asks for too much fails as that run's own
/// trap or memory-limit result rather than being refused by a pool's fixed slot sizes.
pub fn module_engine() -> wasmtime::Result<Engine> {
    Engine::new(&base_config())
}

/// The engine for the interpreters: compiles exactly as `module_engine` does (so the compiled
/// interpreters on disk fit both), and allocates from a pool with room for `concurrency` runs at
/// once, each holding at most what `StoreCaps` allows it.
pub fn interpreter_engine(policy: &LimitPolicy, concurrency: usize) -> wasmtime::Result<Engine> {
    let pool = pool(policy, concurrency);
    let mut config = base_config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

fn base_config() -> Config {
    let mut config = Config::new();
    config
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK)
        // Runs are synchronous, but the async support compiled in for WASI insists that
        // its stacks could hold the largest WebAssembly stack.
        .async_stack_size(MAX_WASM_STACK + (1 << 20))
        // The Python snapshot needs them.
        .wasm_exceptions(true);
    config
}

fn pool(policy: &LimitPolicy, concurrency: usize) -> PoolingAllocationConfig {
    let runs = u32::try_from(concurrency.max(1)).unwrap_or(u32::MAX);
    let caps = StoreCaps::PER_RUN;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_core_instances(runs.saturating_mul(caps.instances))
        // A run's memories plus the heap holding its exception objects.
        .total_memories(runs.saturating_mul(caps.memories + 1))
        .total_gc_heaps(runs)
        .total_tables(runs.saturating_mul(caps.tables))
        .max_memories_per_module(caps.memories)
        .max_tables_per_module(caps.tables)
        .table_elements(caps.table_elements)
        // Slots are address space, reserved once, and each already spans 4 GiB: a run's real
        // cap is its StoreLimits.
        .max_memory_size(policy.maxima.memory_bytes().max(FULL_32_BIT_MEMORY))
        // Large modules (the Python snapshot has ~90k functions) have large instance state.
        .max_core_instance_size(32 << 20)
        // A freed memory's pages stay mapped and only those the run wrote are copied back
        // from the image (found with the PAGEMAP_SCAN ioctl, Linux 6.7 and later; older
        // kernels copy the whole kept prefix instead). The next run then takes no page faults
        // there: for Python print(1), ~60 faults instead of ~2000.
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .pagemap_scan(Enabled::Auto);
    pool
}
