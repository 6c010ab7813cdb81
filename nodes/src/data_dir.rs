//! A single node's `--data-dir`: its store file and the lock that keeps a second process (another
//! node, or `kaskade accounts` while the node runs) from writing the same file, which would lose
//! one side's changes.

use anyhow::Context;
use kaskade_control::memory::MemoryControlPlane;
use std::fs::File;
use std::path::Path;

/// The node's durable store inside the data directory.
pub const CONTROL_FILE: &str = "control.json";
/// Held (`flock`) while a process uses the directory.
pub const LOCK_FILE: &str = "control.lock";

/// The lock on a data directory: held while this lives.
pub struct DataDirLock(#[allow(dead_code)] File);

/// Locks `dir` (creating it) and opens the store in it.
pub fn open(dir: &Path) -> anyhow::Result<(MemoryControlPlane, DataDirLock)> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "{} is in use by another kaskade process (a running node?); stop it first, or \
                 manage accounts through that node",
            dir.display()
        )
    })?;
    let file = dir.join(CONTROL_FILE);
    let store = MemoryControlPlane::persistent(file.clone())
        .with_context(|| format!("opening the node's store {}", file.display()))?;
    Ok((store, DataDirLock(lock)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_process_cannot_open_a_directory_in_use() {
        let dir = std::env::temp_dir().join(format!("kaskade-datadir-{}", std::process::id()));
        let first = open(&dir).unwrap();
        let second = open(&dir);
        assert!(second.err().unwrap().to_string().contains("in use"));
        drop(first);
        assert!(open(&dir).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
