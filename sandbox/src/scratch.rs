//! Scratch directories: each Python run's private, writable `/`.
//!
//! A process keeps all of its runs' directories under one parent,
//! `$TMPDIR/trine-sandbox-<pid>-<id>`, which it holds locked (`flock`) for as long as it
//! lives. A run's directory is removed when the run ends, but a process that is killed leaves
//! its parent behind; the kernel drops its lock then, so at start-up any parent that can be
//! locked is stale and removed. The parent is made under a staging name, locked, then renamed,
//! so no sweep ever sees it unlocked while its process lives. Removal never follows symbolic
//! links, so links a guest made cannot lead it anywhere else.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// Parents' names: `trine-sandbox-<pid>-<id>`.
const PREFIX: &str = "trine-sandbox-";
/// A parent's name while it is made, before it is locked.
const STAGING_PREFIX: &str = ".trine-sandbox-staging-";

/// A fresh, empty, private directory for one run, removed with everything in it on drop.
pub struct Scratch {
    path: PathBuf,
    /// Keeps the parent locked for as long as the run uses it.
    _parent: Arc<ProcessDir>,
}

impl Scratch {
    /// Creates the directory (0700) under this process's parent, with the mount point for the
    /// standard library and a `/tmp` for the guest.
    pub fn new() -> io::Result<Self> {
        let name = format!("run-{}", uuid::Uuid::new_v4().simple());
        let private = |path: &Path| fs::DirBuilder::new().mode(0o700).create(path);
        let mut parent = ProcessDir::current(None)?;
        if let Err(err) = private(&parent.path.join(&name)) {
            if err.kind() != io::ErrorKind::NotFound {
                return Err(err);
            }
            // Someone removed the parent from under us: make another.
            tracing::warn!(path = %parent.path.display(), "the scratch parent directory vanished; making a new one");
            parent = ProcessDir::current(Some(&parent))?;
            private(&parent.path.join(&name))?;
        }
        let scratch = Scratch {
            path: parent.path.join(name),
            _parent: parent,
        };
        let mut dirs = fs::DirBuilder::new();
        dirs.recursive(true).mode(0o700);
        dirs.create(scratch.path.join("usr/local/lib"))?;
        dirs.create(scratch.path.join("tmp"))?;
        Ok(scratch)
    }

    /// The directory on the host.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // remove_dir_all does not follow symbolic links, so links a guest made cannot lead it
        // to delete anything outside.
        if let Err(err) = fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), %err, "could not remove a run's scratch directory");
        }
    }
}

/// A process's parent of scratch directories, locked while it is in use.
struct ProcessDir {
    path: PathBuf,
    /// Who owns it, and so who may sweep: parents of other users are left alone.
    uid: u32,
    _lock: File,
}

static PROCESS_DIR: Mutex<Option<Arc<ProcessDir>>> = Mutex::new(None);

impl ProcessDir {
    /// The process's parent, made under the system temporary directory on first use, or
    /// again when `vanished` is the current one.
    fn current(vanished: Option<&Arc<ProcessDir>>) -> io::Result<Arc<ProcessDir>> {
        let mut current = PROCESS_DIR.lock().unwrap_or_else(PoisonError::into_inner);
        match &*current {
            Some(dir) if !vanished.is_some_and(|v| Arc::ptr_eq(v, dir)) => Ok(dir.clone()),
            _ => {
                let tmp = std::env::temp_dir();
                let dir = Arc::new(ProcessDir::create(&tmp).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "making a scratch parent directory in {}: {e}",
                            tmp.display()
                        ),
                    )
                })?);
                *current = Some(dir.clone());
                Ok(dir)
            }
        }
    }

    fn create(tmp: &Path) -> io::Result<Self> {
        let name = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
        let staging = tmp.join(format!("{STAGING_PREFIX}{name}"));
        fs::DirBuilder::new().mode(0o700).create(&staging)?;
        let lock = File::open(&staging)?;
        lock.try_lock().map_err(io::Error::from)?;
        let path = tmp.join(format!("{PREFIX}{name}"));
        fs::rename(&staging, &path)?;
        let uid = fs::symlink_metadata(&path)?.uid();
        Ok(ProcessDir {
            path,
            uid,
            _lock: lock,
        })
    }
}

/// Removes the scratch parents that killed processes left in the system temporary directory,
/// logging each; returns how many were removed.
pub fn sweep_stale() -> usize {
    let own = match ProcessDir::current(None) {
        Ok(own) => own,
        Err(err) => {
            tracing::warn!(%err, "cannot sweep stale scratch directories");
            return 0;
        }
    };
    let tmp = std::env::temp_dir();
    let removed = sweep(&tmp, &own);
    for (path, pid) in &removed {
        tracing::info!(path = %path.display(), pid, "removed the scratch directories of a sandbox process that is gone");
    }
    removed.len()
}

/// Removes the empty parent of this process at a clean exit (a non-empty one, of runs still
/// under way, is left to the next start's sweep).
pub fn remove_own_parent() {
    let current = PROCESS_DIR.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(own) = &*current {
        let _ = fs::remove_dir(&own.path);
    }
}

/// Removes the stale parents in `tmp`, owned as `own` is and other than it: a parent whose
/// lock can be taken (its process is gone), or a staging one whose process is gone.
/// Returns each removed path with the pid in its name.
fn sweep(tmp: &Path, own: &ProcessDir) -> Vec<(PathBuf, u32)> {
    let Ok(entries) = fs::read_dir(tmp) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((pid, staging)) = name.to_str().and_then(parse_name) else {
            continue;
        };
        let path = entry.path();
        if path == own.path {
            continue;
        }
        // Not followed: a link with a parent's name is left alone, as is anything not ours.
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != own.uid {
            continue;
        }
        let stale = if staging {
            process_is_gone(pid)
        } else {
            // Held while it is removed, so that no other sweep tries it at the same time.
            File::open(&path).is_ok_and(|lock| lock.try_lock().is_ok())
        };
        if !stale {
            continue;
        }
        match fs::remove_dir_all(&path) {
            Ok(()) => removed.push((path, pid)),
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "could not remove a stale scratch directory");
            }
        }
    }
    removed
}

/// The pid in a parent's name and whether it is a staging name.
fn parse_name(name: &str) -> Option<(u32, bool)> {
    let (rest, staging) = match name.strip_prefix(STAGING_PREFIX) {
        Some(rest) => (rest, true),
        None => (name.strip_prefix(PREFIX)?, false),
    };
    let (pid, id) = rest.split_once('-')?;
    let valid_id = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    valid_id.then_some(())?;
    Some((pid.parse().ok()?, staging))
}

/// Whether no process `pid` exists; `false` when that cannot be told (no `/proc`).
fn process_is_gone(pid: u32) -> bool {
    Path::new("/proc/self").exists() && !Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn scratch_directories_are_private_and_removed() {
        let scratch = Scratch::new().unwrap();
        let path = scratch.path().to_path_buf();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(path.parent(), Some(scratch._parent.path.as_path()));
        fs::write(path.join("tmp/file"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", path.join("tmp/link")).unwrap();
        drop(scratch);
        assert!(!path.exists());
        assert!(Path::new("/etc").exists());
    }

    #[test]
    fn a_vanished_parent_is_replaced_once() {
        let first = ProcessDir::current(None).unwrap();
        assert!(Arc::ptr_eq(&first, &ProcessDir::current(None).unwrap()));
        let renewed = ProcessDir::current(Some(&first)).unwrap();
        assert_ne!(renewed.path, first.path);
        assert!(renewed.path.is_dir());
        // A second report of the same vanished parent finds the new one.
        assert!(Arc::ptr_eq(
            &renewed,
            &ProcessDir::current(Some(&first)).unwrap()
        ));
        let _ = fs::remove_dir(&first.path);
    }

    #[test]
    fn parent_names_carry_a_pid() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            parse_name(&format!("trine-sandbox-42-{id}")),
            Some((42, false))
        );
        assert_eq!(
            parse_name(&format!(".trine-sandbox-staging-7-{id}")),
            Some((7, true))
        );
        assert_eq!(parse_name(&format!("trine-sandbox-run-{id}")), None);
        assert_eq!(parse_name("trine-sandbox-42-short"), None);
        assert_eq!(parse_name(&format!("other-42-{id}")), None);
    }

    #[test]
    fn the_sweep_removes_only_parents_of_dead_processes() {
        let tmp = std::env::temp_dir().join(format!(
            "trine-sweep-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        fs::create_dir(&tmp).unwrap();
        let own = ProcessDir::create(&tmp).unwrap();
        fs::create_dir(own.path.join("run-1")).unwrap();
        let live_other = ProcessDir::create(&tmp).unwrap();

        let dead_pid = {
            let mut child = std::process::Command::new("true").spawn().unwrap();
            child.wait().unwrap();
            child.id()
        };
        let id = || uuid::Uuid::new_v4().simple().to_string();
        let outside = tmp.join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), b"x").unwrap();
        // Left by a killed process: its runs, one holding a link out.
        let dead = tmp.join(format!("trine-sandbox-{dead_pid}-{}", id()));
        fs::create_dir_all(dead.join("run-1/tmp")).unwrap();
        std::os::unix::fs::symlink(&outside, dead.join("run-1/tmp/link")).unwrap();
        let dead_staging = tmp.join(format!(".trine-sandbox-staging-{dead_pid}-{}", id()));
        fs::create_dir(&dead_staging).unwrap();
        // Being made by a live process (ours), not locked yet.
        let live_staging = tmp.join(format!(
            ".trine-sandbox-staging-{}-{}",
            std::process::id(),
            id()
        ));
        fs::create_dir(&live_staging).unwrap();
        // Not a directory: never followed.
        let link = tmp.join(format!("trine-sandbox-{dead_pid}-{}", id()));
        std::os::unix::fs::symlink(&outside, &link).unwrap();

        let mut removed = sweep(&tmp, &own);
        removed.sort();
        let mut expected = vec![(dead.clone(), dead_pid), (dead_staging.clone(), dead_pid)];
        expected.sort();
        assert_eq!(removed, expected);
        assert!(!dead.exists() && !dead_staging.exists());
        assert!(own.path.join("run-1").is_dir(), "our own is kept");
        assert!(live_other.path.is_dir(), "a live process's is kept");
        assert!(live_staging.is_dir(), "one being made is kept");
        assert!(fs::symlink_metadata(&link).is_ok());
        assert!(outside.join("keep").is_file());

        // Once its process is gone (its lock dropped), the other one goes too.
        let other_path = live_other.path.clone();
        drop(live_other);
        assert_eq!(sweep(&tmp, &own).len(), 1);
        assert!(!other_path.exists());
        fs::remove_dir_all(&tmp).unwrap();
    }
}
