//! Interpreters compiled once and kept on disk.
//!
//! Compiling python.wasm takes a minute or more and gigabytes of memory, so it is done ahead of
//! time (`trine-sandbox warm`) and the native code stored in a private directory, keyed by the
//! SHA-256 of the WebAssembly and the engine's compatibility hash. Loading it back maps the file
//! and takes milliseconds.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

use crate::config::Lookup;

/// Where compiled interpreters live on disk. The directory is the current user's alone (0700):
/// anyone who could write to it could make the sandbox run arbitrary native code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledCache {
    dir: PathBuf,
}

/// What loading an interpreter did, for progress output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// Found compiled on disk.
    FromCache,
    /// Compiled now and stored for next time.
    Compiled,
}

impl CompiledCache {
    /// `$TRINE_SANDBOX_CACHE_DIR`, else `$XDG_CACHE_HOME/trine/sandbox`, else
    /// `~/.cache/trine/sandbox`. Nothing is created until the cache is opened.
    pub fn default_dir(env: &impl Lookup) -> Option<PathBuf> {
        let set = |name: &str| env.get(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        set("TRINE_SANDBOX_CACHE_DIR")
            .or_else(|| set("XDG_CACHE_HOME").map(|d| d.join("trine").join("sandbox")))
            .or_else(|| set("HOME").map(|d| d.join(".cache").join("trine").join("sandbox")))
    }

    /// Opens (creating if needed) the cache directory and makes it private.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        // `recursive` leaves an existing directory's mode alone; a cache others can write to
        // must not be trusted, so it is tightened (and refused if that fails, e.g. not ours).
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        Ok(CompiledCache {
            dir: dir.to_path_buf(),
        })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The module for the WebAssembly file at `wasm_path`, loaded from the cache, or compiled
    /// with `engine` and stored when the cache has no usable copy.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        wasm_path: &Path,
        progress: &dyn Fn(&str),
    ) -> wasmtime::Result<(Module, Loaded)> {
        let wasm = fs::read(wasm_path)
            .map_err(|e| wasmtime::format_err!("reading {}: {e}", wasm_path.display()))?;
        let path = self.entry_path(engine, &wasm);
        if path.is_file() {
            match deserialize(engine, &path) {
                Ok(module) => return Ok((module, Loaded::FromCache)),
                // A stale or damaged entry is replaced rather than trusted.
                Err(err) => progress(&format!("ignoring unusable cache entry: {err:#}")),
            }
        }
        progress(&format!(
            "compiling {} ({} MB); this happens once and can take a minute or two",
            wasm_path.display(),
            wasm.len() >> 20
        ));
        let started = Instant::now();
        let compiled = engine.precompile_module(&wasm)?;
        drop(wasm);
        write_atomically(&path, &compiled)
            .map_err(|e| wasmtime::format_err!("writing {}: {e}", path.display()))?;
        progress(&format!(
            "compiled in {:.1} s into {}",
            started.elapsed().as_secs_f64(),
            path.display()
        ));
        Ok((deserialize(engine, &path)?, Loaded::Compiled))
    }

    /// Copies `file` into a private, content-keyed directory of its own under the cache, named
    /// `name`, and returns that directory: the guest may then be given the directory without
    /// seeing anything that sits beside the original file.
    pub fn private_copy(&self, file: &Path, name: &str) -> io::Result<PathBuf> {
        let bytes = fs::read(file)?;
        let digest = hex(&Sha256::digest(&bytes));
        let dir = self.dir.join(format!("files-{}", &digest[..32]));
        let target = dir.join(name);
        if fs::metadata(&target).is_ok_and(|m| m.len() == bytes.len() as u64) {
            return Ok(dir);
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        write_atomically(&target, &bytes)?;
        Ok(dir)
    }

    fn entry_path(&self, engine: &Engine, wasm: &[u8]) -> PathBuf {
        // DefaultHasher::new() uses fixed keys, so the value is stable between runs of the same
        // build; a different build at worst misses and recompiles, and deserialization checks
        // compatibility again anyway.
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let digest = hex(&Sha256::digest(wasm));
        self.dir
            .join(format!("{}-{:016x}.cwasm", &digest[..32], hasher.finish()))
    }
}

/// Maps a compiled module written by `load_or_compile`.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Module> {
    // SAFETY: Wasmtime runs the file's native code as it finds it. The file was produced by
    // `Engine::precompile_module` of this program and lives in a directory only this user can
    // write (0700, tightened on open), written under a temporary name and renamed into place
    // whole, so it is neither foreign nor half-written.
    unsafe { Module::deserialize_file(engine, path) }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "trine-cache-test-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_directory_is_private_even_if_it_existed() {
        let dir = scratch("mode");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        CompiledCache::open(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_module_is_compiled_once_then_loaded() {
        let dir = scratch("load");
        let cache = CompiledCache::open(&dir).unwrap();
        let wasm = dir.join("m.wasm");
        fs::write(
            &wasm,
            wat::parse_str("(module (func (export \"run\")))").unwrap(),
        )
        .unwrap();
        let engine = Engine::default();
        let quiet = |_: &str| {};
        let (_, first) = cache.load_or_compile(&engine, &wasm, &quiet).unwrap();
        let (module, second) = cache.load_or_compile(&engine, &wasm, &quiet).unwrap();
        assert_eq!((first, second), (Loaded::Compiled, Loaded::FromCache));
        assert!(module.get_export("run").is_some());
        // The module maps its file: it must be gone before the file is damaged in place,
        // which is why entries are only ever replaced by renaming.
        drop(module);

        // A damaged entry is recompiled, not trusted.
        let entry = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .unwrap();
        fs::write(&entry, b"garbage").unwrap();
        let (_, third) = cache.load_or_compile(&engine, &wasm, &quiet).unwrap();
        assert_eq!(third, Loaded::Compiled);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn default_dir_prefers_the_explicit_variable() {
        let env = |name: &str| match name {
            "TRINE_SANDBOX_CACHE_DIR" => Some("/x/cache".to_string()),
            "XDG_CACHE_HOME" => Some("/xdg".to_string()),
            _ => None,
        };
        assert_eq!(
            CompiledCache::default_dir(&env),
            Some(PathBuf::from("/x/cache"))
        );
        let xdg = |name: &str| (name == "XDG_CACHE_HOME").then(|| "/xdg".to_string());
        assert_eq!(
            CompiledCache::default_dir(&xdg),
            Some(PathBuf::from("/xdg/trine/sandbox"))
        );
        let home = |name: &str| (name == "HOME").then(|| "/home/u".to_string());
        assert_eq!(
            CompiledCache::default_dir(&home),
            Some(PathBuf::from("/home/u/.cache/trine/sandbox"))
        );
    }
}
