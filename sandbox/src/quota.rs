//! The scratch quota: how much a Python run may write into its scratch directory, and how
//! many filesystem entries it may make there.
//!
//! The WASI functions that write file data or make entries are shadowed in Python's linker,
//! like `poll_oneoff` in `sleep.rs`; each checks the run's usage, then delegates to the
//! original wasmtime-wasi function. A write that would pass the quota fails with `ENOSPC`
//! before anything is written, and so does making an entry past the cap: the guest sees an
//! ordinary error it can catch, never a trap.
//!
//! The originals find the guest's memory through their caller's `memory` export, so a host
//! function cannot call them directly. They are called through a bridge: a small module,
//! instantiated once per run on first use, that imports the guest's memory and the originals,
//! exports the memory again and wraps each original in a WebAssembly function of its own.
//!
//! Bytes are counted as written (`fd_write`, `fd_pwrite`), whatever happens to them later, so
//! rewriting a file counts again. Entries (files made by `path_open` with `O_CREAT`,
//! directories, symbolic and hard links) are counted while they exist: unlinking one gives its
//! place back. Writes to the original stdout and stderr are not files and are not counted;
//! they have their own caps. `fd_allocate` needs no shadow: wasmtime-wasi refuses it.
//! Known slack: `O_CREAT` through a dangling symbolic link makes its target uncounted, so
//! links (each counted) can at most double the entries; renaming over a file does not give
//! its place back.

use std::sync::Arc;

use wasmtime::{Caller, Engine, Extern, Instance, Linker, Memory, Module, TypedFunc};

use crate::guest::RunState;
use crate::limits::ScratchQuota;

const MODULE: &str = "wasi_snapshot_preview1";
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_EXIST: i32 = 20;
const ERRNO_NOENT: i32 = 44;
const ERRNO_NOSPC: i32 = 51;
const OFLAGS_CREAT: i32 = 1;
const OFLAGS_EXCL: i32 = 4;
const IOVEC_SIZE: usize = 8;
/// Descriptors 0, 1 and 2, while they still are the stdio streams the run started with.
const ALL_STDIO: u8 = 0b111;

type Fd3 = TypedFunc<(i32, i32, i32), i32>;
type PathOpenArgs = (i32, i32, i32, i32, i32, i64, i64, i32, i32);
type PathLinkArgs = (i32, i32, i32, i32, i32, i32, i32);

/// The shadowed functions and their parameter types; each returns an errno.
const SHADOWED: &[(&str, &str)] = &[
    ("fd_write", "i32 i32 i32 i32"),
    ("fd_pwrite", "i32 i32 i32 i64 i32"),
    ("fd_filestat_set_size", "i32 i64"),
    ("fd_close", "i32"),
    ("fd_renumber", "i32 i32"),
    ("path_open", "i32 i32 i32 i32 i32 i64 i64 i32 i32"),
    ("path_create_directory", "i32 i32 i32"),
    ("path_symlink", "i32 i32 i32 i32 i32"),
    ("path_link", "i32 i32 i32 i32 i32 i32 i32"),
    ("path_unlink_file", "i32 i32 i32"),
    ("path_remove_directory", "i32 i32 i32"),
];

/// What the shadows share across runs: the bridge module and the unshadowed linker.
struct Bridge {
    module: Module,
    wasi: Linker<RunState>,
}

impl Bridge {
    /// The bridge's WebAssembly text: the guest's memory and the originals in, the memory
    /// and a wrapper per original out.
    fn wat() -> String {
        let mut wat = String::from("(module\n  (import \"env\" \"memory\" (memory 0))\n");
        for (name, params) in SHADOWED {
            wat.push_str(&format!(
                "  (import \"{MODULE}\" \"{name}\" (func ${name} (param {params}) (result i32)))\n"
            ));
        }
        wat.push_str("  (export \"memory\" (memory 0))\n");
        for (name, params) in SHADOWED {
            let args: String = (0..params.split(' ').count())
                .map(|i| format!(" (local.get {i})"))
                .collect();
            wat.push_str(&format!(
                "  (func (export \"{name}\") (param {params}) (result i32) (call ${name}{args}))\n"
            ));
        }
        wat.push(')');
        wat
    }
}

/// The originals, callable from the host through a run's bridge instance, and the guest's
/// memory.
struct Originals {
    memory: Memory,
    fd_write: TypedFunc<(i32, i32, i32, i32), i32>,
    fd_pwrite: TypedFunc<(i32, i32, i32, i64, i32), i32>,
    fd_filestat_set_size: TypedFunc<(i32, i64), i32>,
    fd_close: TypedFunc<i32, i32>,
    fd_renumber: TypedFunc<(i32, i32), i32>,
    path_open: TypedFunc<PathOpenArgs, i32>,
    path_create_directory: Fd3,
    path_symlink: TypedFunc<(i32, i32, i32, i32, i32), i32>,
    path_link: TypedFunc<PathLinkArgs, i32>,
    path_unlink_file: Fd3,
    path_remove_directory: Fd3,
}

impl Originals {
    /// The run's originals, instantiating its bridge on first use.
    fn get(caller: &mut Caller<'_, RunState>, bridge: &Bridge) -> wasmtime::Result<Arc<Self>> {
        if let Some(originals) = &caller.data().scratch.originals {
            return Ok(originals.clone());
        }
        let memory = caller
            .get_export("memory")
            .and_then(Extern::into_memory)
            .ok_or_else(|| wasmtime::format_err!("missing required memory export"))?;
        let mut imports = vec![Extern::Memory(memory)];
        for (name, _) in SHADOWED {
            imports.push(bridge.wasi.get(&mut *caller, MODULE, name)?);
        }
        let instance = Instance::new(&mut *caller, &bridge.module, &imports)?;
        let mut caller = &mut *caller;
        let originals = Arc::new(Originals {
            memory,
            fd_write: instance.get_typed_func(&mut caller, "fd_write")?,
            fd_pwrite: instance.get_typed_func(&mut caller, "fd_pwrite")?,
            fd_filestat_set_size: instance.get_typed_func(&mut caller, "fd_filestat_set_size")?,
            fd_close: instance.get_typed_func(&mut caller, "fd_close")?,
            fd_renumber: instance.get_typed_func(&mut caller, "fd_renumber")?,
            path_open: instance.get_typed_func(&mut caller, "path_open")?,
            path_create_directory: instance.get_typed_func(&mut caller, "path_create_directory")?,
            path_symlink: instance.get_typed_func(&mut caller, "path_symlink")?,
            path_link: instance.get_typed_func(&mut caller, "path_link")?,
            path_unlink_file: instance.get_typed_func(&mut caller, "path_unlink_file")?,
            path_remove_directory: instance.get_typed_func(&mut caller, "path_remove_directory")?,
        });
        caller.data_mut().scratch.originals = Some(originals.clone());
        Ok(originals)
    }
}

/// One run's use of its scratch quota.
pub struct ScratchUsage {
    quota: ScratchQuota,
    written: u64,
    entries: u64,
    /// Bit `n` is set while descriptor `n` is still the stdio stream it started as: once
    /// closed or renumbered, the number may be reused for a file, whose writes count.
    stdio: u8,
    originals: Option<Arc<Originals>>,
}

impl ScratchUsage {
    /// Nothing used yet of `quota`.
    pub fn new(quota: ScratchQuota) -> Self {
        ScratchUsage {
            quota,
            written: 0,
            entries: 0,
            stdio: ALL_STDIO,
            originals: None,
        }
    }

    /// Bytes written to files so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    fn is_stdio(&self, fd: i32) -> bool {
        (0..=2).contains(&fd) && self.stdio & (1 << fd) != 0
    }

    fn forget_stdio(&mut self, fd: i32) {
        if (0..=2).contains(&fd) {
            self.stdio &= !(1 << fd);
        }
    }

    fn may_write(&self, len: u64) -> bool {
        self.written.saturating_add(len) <= self.quota.bytes
    }

    fn may_create(&self) -> bool {
        self.entries < self.quota.entries
    }
}

/// Replaces the WASI functions that write to files or make entries in `linker`, which holds
/// the WASI preview1 functions.
pub fn shadow_file_writes(linker: &mut Linker<RunState>, engine: &Engine) -> wasmtime::Result<()> {
    let bridge = Arc::new(Bridge {
        module: Module::new(engine, Bridge::wat())?,
        wasi: linker.clone(),
    });
    linker.allow_shadowing(true);

    let b = bridge.clone();
    linker.func_wrap(
        MODULE,
        "fd_write",
        move |mut caller: Caller<'_, RunState>, fd: i32, iovs: i32, n: i32, nwritten: i32| {
            let o = Originals::get(&mut caller, &b)?;
            counted_write(&mut caller, &o, fd, iovs, n, nwritten, |caller| {
                o.fd_write.call(caller, (fd, iovs, n, nwritten))
            })
        },
    )?;

    let b = bridge.clone();
    linker.func_wrap(
        MODULE,
        "fd_pwrite",
        move |mut caller: Caller<'_, RunState>,
              fd: i32,
              iovs: i32,
              n: i32,
              offset: i64,
              nwritten: i32| {
            let o = Originals::get(&mut caller, &b)?;
            counted_write(&mut caller, &o, fd, iovs, n, nwritten, |caller| {
                o.fd_pwrite.call(caller, (fd, iovs, n, offset, nwritten))
            })
        },
    )?;

    // Growing a file leaves a hole that takes no space until written, so it is not counted,
    // but no file may claim to be larger than the whole quota.
    let b = bridge.clone();
    linker.func_wrap(
        MODULE,
        "fd_filestat_set_size",
        move |mut caller: Caller<'_, RunState>, fd: i32, size: i64| {
            let o = Originals::get(&mut caller, &b)?;
            let usage = &caller.data().scratch;
            if !usage.is_stdio(fd) && size > 0 && size as u64 > usage.quota.bytes {
                return Ok(ERRNO_NOSPC);
            }
            o.fd_filestat_set_size.call(&mut caller, (fd, size))
        },
    )?;

    let b = bridge.clone();
    linker.func_wrap(
        MODULE,
        "fd_close",
        move |mut caller: Caller<'_, RunState>, fd: i32| {
            let o = Originals::get(&mut caller, &b)?;
            caller.data_mut().scratch.forget_stdio(fd);
            o.fd_close.call(&mut caller, fd)
        },
    )?;

    let b = bridge.clone();
    linker.func_wrap(
        MODULE,
        "fd_renumber",
        move |mut caller: Caller<'_, RunState>, from: i32, to: i32| {
            let o = Originals::get(&mut caller, &b)?;
            let usage = &mut caller.data_mut().scratch;
            usage.forget_stdio(from);
            usage.forget_stdio(to);
            o.fd_renumber.call(&mut caller, (from, to))
        },
    )?;

    let b = bridge.clone();
    linker.func_wrap(
        MODULE,
        "path_open",
        move |mut caller: Caller<'_, RunState>,
              dir: i32,
              dirflags: i32,
              path: i32,
              path_len: i32,
              oflags: i32,
              rights: i64,
              inheriting: i64,
              fdflags: i32,
              opened: i32| {
            let o = Originals::get(&mut caller, &b)?;
            let open = |caller: &mut Caller<'_, RunState>, oflags: i32| {
                o.path_open.call(
                    caller,
                    (
                        dir, dirflags, path, path_len, oflags, rights, inheriting, fdflags, opened,
                    ),
                )
            };
            if oflags & OFLAGS_CREAT == 0 {
                return open(&mut caller, oflags);
            }
            if !caller.data().scratch.may_create() {
                // At the cap an existing file may still be opened, but none made.
                if oflags & OFLAGS_EXCL != 0 {
                    return Ok(ERRNO_NOSPC);
                }
                let errno = open(&mut caller, oflags & !OFLAGS_CREAT)?;
                return Ok(if errno == ERRNO_NOENT {
                    ERRNO_NOSPC
                } else {
                    errno
                });
            }
            // Exclusive first, to learn whether the open makes a file; only if the file
            // exists already is it opened as asked.
            let errno = open(&mut caller, oflags | OFLAGS_EXCL)?;
            if errno == ERRNO_SUCCESS {
                caller.data_mut().scratch.entries += 1;
                return Ok(errno);
            }
            if errno == ERRNO_EXIST && oflags & OFLAGS_EXCL == 0 {
                return open(&mut caller, oflags);
            }
            Ok(errno)
        },
    )?;

    let b = bridge.clone();
    linker.func_wrap(
        MODULE,
        "path_create_directory",
        move |mut caller: Caller<'_, RunState>, dir: i32, path: i32, path_len: i32| {
            let o = Originals::get(&mut caller, &b)?;
            counted_entry(&mut caller, |caller| {
                o.path_create_directory.call(caller, (dir, path, path_len))
            })
        },
    )?;

    let b = bridge.clone();
    linker.func_wrap(
        MODULE,
        "path_symlink",
        move |mut caller: Caller<'_, RunState>,
              old: i32,
              old_len: i32,
              dir: i32,
              new: i32,
              new_len: i32| {
            let o = Originals::get(&mut caller, &b)?;
            counted_entry(&mut caller, |caller| {
                o.path_symlink
                    .call(caller, (old, old_len, dir, new, new_len))
            })
        },
    )?;

    let b = bridge.clone();
    linker.func_wrap(
        MODULE,
        "path_link",
        move |mut caller: Caller<'_, RunState>,
              old_dir: i32,
              old_flags: i32,
              old: i32,
              old_len: i32,
              new_dir: i32,
              new: i32,
              new_len: i32| {
            let o = Originals::get(&mut caller, &b)?;
            counted_entry(&mut caller, |caller| {
                o.path_link.call(
                    caller,
                    (old_dir, old_flags, old, old_len, new_dir, new, new_len),
                )
            })
        },
    )?;

    for name in ["path_unlink_file", "path_remove_directory"] {
        let b = bridge.clone();
        linker.func_wrap(
            MODULE,
            name,
            move |mut caller: Caller<'_, RunState>, dir: i32, path: i32, path_len: i32| {
                let o = Originals::get(&mut caller, &b)?;
                let remove = if name == "path_unlink_file" {
                    &o.path_unlink_file
                } else {
                    &o.path_remove_directory
                };
                let errno = remove.call(&mut caller, (dir, path, path_len))?;
                if errno == ERRNO_SUCCESS {
                    let usage = &mut caller.data_mut().scratch;
                    usage.entries = usage.entries.saturating_sub(1);
                }
                Ok(errno)
            },
        )?;
    }
    Ok(())
}

/// A write of the iovecs at `iovs`: refused with `ENOSPC` if it would pass the quota, else
/// done by `write` and what it wrote (as it reports at `nwritten`) counted. Writes to the
/// original stdio streams and writes the original will refuse anyway go straight through.
fn counted_write(
    caller: &mut Caller<'_, RunState>,
    originals: &Originals,
    fd: i32,
    iovs: i32,
    count: i32,
    nwritten: i32,
    write: impl FnOnce(&mut Caller<'_, RunState>) -> wasmtime::Result<i32>,
) -> wasmtime::Result<i32> {
    if caller.data().scratch.is_stdio(fd) {
        return write(caller);
    }
    let memory = originals.memory;
    let Some(len) = iovecs_len(memory.data(&*caller), iovs, count) else {
        return write(caller);
    };
    if !caller.data().scratch.may_write(len) {
        return Ok(ERRNO_NOSPC);
    }
    let errno = write(caller)?;
    if errno == ERRNO_SUCCESS {
        let written = read_u32(memory.data(&*caller), nwritten).map_or(len, u64::from);
        let usage = &mut caller.data_mut().scratch;
        usage.written = usage.written.saturating_add(written.min(len));
    }
    Ok(errno)
}

/// Makes an entry with `make` unless the run is at its cap (then `ENOSPC`), counting it.
fn counted_entry(
    caller: &mut Caller<'_, RunState>,
    make: impl FnOnce(&mut Caller<'_, RunState>) -> wasmtime::Result<i32>,
) -> wasmtime::Result<i32> {
    if !caller.data().scratch.may_create() {
        return Ok(ERRNO_NOSPC);
    }
    let errno = make(caller)?;
    if errno == ERRNO_SUCCESS {
        caller.data_mut().scratch.entries += 1;
    }
    Ok(errno)
}

/// The total length of the `count` iovecs at `at`, or `None` if they lie outside memory.
fn iovecs_len(memory: &[u8], at: i32, count: i32) -> Option<u64> {
    let (at, count) = (at as u32 as usize, count as u32 as usize);
    let bytes = memory.get(at..at.checked_add(count.checked_mul(IOVEC_SIZE)?)?)?;
    Some(
        bytes
            .chunks_exact(IOVEC_SIZE)
            .map(|iovec| u64::from(u32::from_le_bytes(iovec[4..8].try_into().unwrap())))
            .sum(),
    )
}

fn read_u32(memory: &[u8], at: i32) -> Option<u32> {
    let at = at as u32 as usize;
    let bytes = memory.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().unwrap()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iovec_lengths_are_summed_within_memory() {
        let mut memory = vec![0u8; 4];
        for (buf, len) in [(100u32, 5u32), (200, u32::MAX)] {
            memory.extend(buf.to_le_bytes());
            memory.extend(len.to_le_bytes());
        }
        assert_eq!(iovecs_len(&memory, 4, 2), Some(5 + u64::from(u32::MAX)));
        assert_eq!(iovecs_len(&memory, 4, 0), Some(0));
        assert_eq!(iovecs_len(&memory, 4, 3), None);
        assert_eq!(iovecs_len(&memory, -1, 1), None);
        assert_eq!(read_u32(&memory, 8), Some(5));
        assert_eq!(read_u32(&memory, 18), None);
    }

    #[test]
    fn stdio_stays_uncounted_until_closed_or_renumbered() {
        let mut usage = ScratchUsage::new(ScratchQuota {
            bytes: 10,
            entries: 1,
        });
        assert!((0..=2).all(|fd| usage.is_stdio(fd)));
        assert!(!usage.is_stdio(3) && !usage.is_stdio(-1));
        usage.forget_stdio(1);
        usage.forget_stdio(7);
        assert!(usage.is_stdio(0) && !usage.is_stdio(1) && usage.is_stdio(2));
        assert!(usage.may_write(10) && !usage.may_write(11));
        assert!(usage.may_create());
        usage.entries = 1;
        assert!(!usage.may_create());
    }
}
