//! Compiled user modules, kept in memory by SHA-256 of their bytes so a module that is run
//! again is not compiled again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

type Key = [u8; 32];

/// A bounded least-recently-used cache of compiled modules.
pub struct ModuleCache {
    capacity: usize,
    // Guards the slot table and the use counter; held only briefly, never while compiling.
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    by_key: HashMap<Key, (Arc<Slot>, u64)>,
    clock: u64,
}

/// One module's place in the cache. Its own lock is held while compiling, so concurrent
/// requests for the same new module wait for one compilation instead of each doing their own.
#[derive(Default)]
struct Slot {
    module: Mutex<Option<Module>>,
}

impl ModuleCache {
    /// A cache holding at most `capacity` modules.
    pub fn new(capacity: usize) -> Self {
        ModuleCache {
            capacity: capacity.max(1),
            slots: Mutex::new(Slots::default()),
        }
    }

    /// The compiled module for `wasm`, compiling it with `engine` on a miss.
    pub fn get_or_compile(&self, engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Module> {
        let key: Key = Sha256::digest(wasm).into();
        let slot = self.slot_for(key);
        let mut module = slot.module.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(module) = module.as_ref() {
            return Ok(module.clone());
        }
        match Module::new(engine, wasm) {
            Ok(compiled) => {
                *module = Some(compiled.clone());
                Ok(compiled)
            }
            Err(err) => {
                drop(module);
                self.forget(key, &slot);
                Err(err)
            }
        }
    }

    /// Number of modules held (compiled or being compiled).
    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn slot_for(&self, key: Key) -> Arc<Slot> {
        let mut slots = self.lock();
        slots.clock += 1;
        let now = slots.clock;
        if let Some((slot, last_used)) = slots.by_key.get_mut(&key) {
            *last_used = now;
            return slot.clone();
        }
        if slots.by_key.len() >= self.capacity {
            let oldest = slots
                .by_key
                .iter()
                .min_by_key(|(_, (_, last_used))| *last_used)
                .map(|(key, _)| *key);
            if let Some(oldest) = oldest {
                slots.by_key.remove(&oldest);
            }
        }
        let slot = Arc::new(Slot::default());
        slots.by_key.insert(key, (slot.clone(), now));
        slot
    }

    /// Drops a slot whose compilation failed, unless it was already replaced.
    fn forget(&self, key: Key, failed: &Arc<Slot>) {
        let mut slots = self.lock();
        if slots
            .by_key
            .get(&key)
            .is_some_and(|(slot, _)| Arc::ptr_eq(slot, failed))
        {
            slots.by_key.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module_returning(n: i32) -> Vec<u8> {
        wat::parse_str(format!(
            "(module (func (export \"run\") (result i32) i32.const {n}))"
        ))
        .unwrap()
    }

    #[test]
    fn the_same_bytes_give_the_same_compiled_module() {
        let engine = Engine::default();
        let cache = ModuleCache::new(4);
        let first = cache.get_or_compile(&engine, &module_returning(1)).unwrap();
        let second = cache.get_or_compile(&engine, &module_returning(1)).unwrap();
        assert!(Module::same(&first, &second));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn the_least_recently_used_module_is_evicted() {
        let engine = Engine::default();
        let cache = ModuleCache::new(2);
        let one = cache.get_or_compile(&engine, &module_returning(1)).unwrap();
        cache.get_or_compile(&engine, &module_returning(2)).unwrap();
        cache.get_or_compile(&engine, &module_returning(1)).unwrap();
        cache.get_or_compile(&engine, &module_returning(3)).unwrap();
        assert_eq!(cache.len(), 2);
        let again = cache.get_or_compile(&engine, &module_returning(1)).unwrap();
        assert!(
            Module::same(&one, &again),
            "module 1 was used recently and must survive"
        );
    }

    #[test]
    fn invalid_modules_are_not_kept() {
        let engine = Engine::default();
        let cache = ModuleCache::new(2);
        assert!(cache.get_or_compile(&engine, b"not wasm").is_err());
        assert!(cache.is_empty());
    }
}
