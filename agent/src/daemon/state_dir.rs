//! The state directory, held under an exclusive lock for the agent's lifetime so that two
//! agents never share one node's identity or Raft log.

use std::{
    fs::{self, DirBuilder, File},
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use nix::fcntl::{Flock, FlockArg};

pub struct StateDir {
    path: PathBuf,
    /// Released (and the file closed) when the agent drops this, or by the kernel if it dies.
    _lock: Flock<File>,
}

impl StateDir {
    /// Creates the directory (mode 0700) if needed and takes its lock, or says who holds it.
    pub fn lock(path: &Path) -> anyhow::Result<Self> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .with_context(|| format!("creating state dir {}", path.display()))?;
        let lock_path = path.join("lock");
        let file =
            File::create(&lock_path).with_context(|| format!("opening {}", lock_path.display()))?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => bail!(
                "another shoal agent is already using state dir {}",
                path.display()
            ),
            Err((_, e)) => {
                return Err(e).with_context(|| format!("locking {}", lock_path.display()));
            }
        };
        let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        Ok(StateDir { path, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
