//! A manager's keys at rest, and the locked state of autolock.
//!
//! Every manager seals its Raft store with its own data key (DEK, `raft/dek.rs`). While the
//! swarm's autolock is off the DEK file and the TLS key are in the clear; while it is on, the
//! DEK is sealed with the unlock key (kept in the store's `ClusterInfo`) and the TLS key with
//! the DEK, so both need the unlock key. A manager restarted
//! with a sealed DEK stays *locked*: no Raft, no 2377 server, every cluster call refused with
//! Docker's words, until `swarm unlock` gives the key. Each manager follows the key in its
//! store (`follow_unlock_key`) and re-seals its own DEK when it changes, so a rotation or
//! autolock turned on or off reaches them all. Workers hold no store and are never locked.

use std::{
    path::Path,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use tokio::sync::watch;
use tracing::{info, warn};

use super::{
    Active, Swarm,
    error::Error,
    persist::{self, SwarmFile},
};
use crate::{
    cluster::Role,
    error_chain::Chain,
    pki::NodeCredentials,
    raft::{
        dek::{self, DekError, DekFile},
        seal::{SealKey, UnlockKey},
    },
};

/// How often a manager compares the unlock key in its store with the one sealing its DEK.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// A manager's data key, and the unlock key that seals its file now.
pub(super) struct AtRest {
    pub(super) dek: SealKey,
    /// `None`: the DEK file is in the clear.
    sealed_with: Mutex<Option<String>>,
}

impl AtRest {
    pub(super) fn new(dek: SealKey, sealed_with: Option<String>) -> AtRest {
        AtRest {
            dek,
            sealed_with: Mutex::new(sealed_with),
        }
    }

    /// Whether autolock seals the files now (the TLS key is then saved sealed with the DEK).
    pub(super) fn is_sealed(&self) -> bool {
        self.sealed_with
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }
}

/// What `resume` found on disk for a manager.
pub(super) enum Resumed {
    /// The DEK file was in the clear (or missing: a store of an earlier version).
    Open(AtRest),
    /// Autolock: the DEK is sealed.
    Locked,
}

impl Swarm {
    /// A new manager's data key (init, join, promotion), written in the clear or, with
    /// `unlock`, sealed.
    pub(super) fn new_data_key(&self, unlock: Option<&UnlockKey>) -> Result<AtRest, Error> {
        let dek = SealKey::generate();
        dek::write(&self.swarm_dir(), &dek, unlock)
            .map_err(Error::internal("writing the data key file"))?;
        Ok(AtRest::new(dek, unlock.map(ToString::to_string)))
    }

    /// The data key of a restarted manager, unless it is sealed.
    pub(super) fn resume_data_key(&self) -> Result<Resumed, Error> {
        let file =
            DekFile::read(&self.swarm_dir()).map_err(Error::internal("reading the data key"))?;
        match file.open(None) {
            Ok(Some(dek)) => Ok(Resumed::Open(AtRest::new(dek, None))),
            Ok(None) => self.new_data_key(None).map(Resumed::Open),
            Err(DekError::Locked) => Ok(Resumed::Locked),
            Err(e) => Err(Error::internal("opening the data key")(e)),
        }
    }

    /// `swarm unlock`: opens the DEK with `key` and resumes the locked membership. A wrong
    /// key changes nothing.
    pub async fn unlock(&self, key: &str) -> Result<(), Error> {
        let _guard = self.inner.transitions.lock().await;
        let Some(file) = self.locked() else {
            return Err(if self.inner.active.read().await.is_some() {
                Error::refused("swarm is not locked")
            } else {
                Error::NotInSwarm
            });
        };
        let invalid =
            |source: Box<dyn std::error::Error + Send + Sync>| Error::InvalidUnlockKey { source };
        let key: UnlockKey = key.parse().map_err(|e| invalid(Box::new(e)))?;
        let dek = DekFile::read(&self.swarm_dir())
            .map_err(Error::internal("reading the data key"))?
            .open(Some(&key))
            .map_err(|e| match e {
                DekError::WrongKey { .. } => invalid(Box::new(e)),
                e => Error::internal("opening the data key")(e),
            })?
            .ok_or_else(|| Error::Internal {
                what: "opening the data key",
                source: "the data key file is gone".into(),
            })?;
        let creds = self.load_credentials(Some(&dek))?;
        let at_rest = AtRest::new(dek, Some(key.to_string()));
        let creds = match self.resumable_credentials(creds, Role::Manager, Some(&at_rest)) {
            Ok(creds) => creds,
            Err(e) => {
                *self.locked_file() = None;
                return Err(e);
            }
        };
        info!(cluster_id = %file.cluster_id, "unlocked: resuming swarm membership");
        let active = self.activate(file, creds, Some(at_rest)).await?;
        *self.inner.active.write().await = Some(active);
        *self.locked_file() = None;
        Ok(())
    }

    /// The credentials saved in the state dir, the key opened with `dek` if sealed.
    pub(super) fn load_credentials(&self, dek: Option<&SealKey>) -> Result<NodeCredentials, Error> {
        NodeCredentials::load_sealed(&self.swarm_dir(), dek)
            .map_err(Error::pki("reading the node credentials"))?
            .ok_or_else(|| Error::Internal {
                what: "reading the node credentials",
                source: "swarm.json exists but the credentials are missing".into(),
            })
    }

    /// The membership waiting for `swarm unlock`, if any.
    pub(super) fn locked(&self) -> Option<SwarmFile> {
        self.locked_file().clone()
    }

    pub(super) fn locked_file(&self) -> std::sync::MutexGuard<'_, Option<SwarmFile>> {
        self.inner
            .locked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn swarm_dir(&self) -> std::path::PathBuf {
        persist::swarm_dir(&self.inner.config.state_dir)
    }

    /// `swarm leave --force` on a locked manager: forgets the membership without unlocking it.
    pub(super) fn leave_locked(&self, force: bool) -> Result<bool, Error> {
        if self.locked().is_none() {
            return Ok(false);
        }
        if !force {
            return Err(Error::Locked);
        }
        persist::remove(&self.inner.config.state_dir)
            .map_err(Error::internal("removing the swarm membership files"))?;
        *self.locked_file() = None;
        Ok(true)
    }
}

/// On managers: re-seals the DEK whenever the unlock key in the store differs from the one
/// sealing it (autolock turned on or off, the key rotated), until `stopped`.
pub(super) async fn follow_unlock_key(
    swarm: Swarm,
    active: std::sync::Arc<Active>,
    mut stopped: watch::Receiver<bool>,
) {
    let (Some(manager), Some(at_rest)) = (&active.manager, &active.at_rest) else {
        return;
    };
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
        // A store that has not learned of the swarm yet (a new manager catching up) says
        // nothing about autolock.
        let Some(wanted) =
            manager.read(|state| state.cluster.as_ref().map(|c| c.unlock_key.clone()))
        else {
            continue;
        };
        let current = at_rest
            .sealed_with
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if wanted == current || active.role() != Role::Manager {
            continue;
        }
        let unlock = match wanted.as_deref().map(str::parse::<UnlockKey>).transpose() {
            Ok(unlock) => unlock,
            Err(e) => {
                warn!(cause = %Chain(&e), "the unlock key in the store is malformed");
                continue;
            }
        };
        // Not while the membership changes (a role switch saves credentials too); next round.
        let Ok(_guard) = swarm.inner.transitions.try_lock() else {
            continue;
        };
        match reseal(
            &swarm.swarm_dir(),
            &active,
            &at_rest.dek,
            current.is_some(),
            unlock.as_ref(),
        ) {
            Ok(()) => {
                info!(
                    autolock = unlock.is_some(),
                    "data key re-sealed for the swarm's unlock key"
                );
                *at_rest
                    .sealed_with
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = wanted;
            }
            Err(e) => warn!(cause = %Chain(&e), "cannot re-seal the data key"),
        }
    }
}

/// Seals the DEK file with `unlock` (or writes it in the clear), and the TLS key with the DEK
/// while autolock is on (in the clear otherwise). Each file is replaced atomically, in the
/// order that keeps every step readable after a crash: the TLS key is sealed before the DEK
/// is, and the DEK is in the clear before the TLS key is. A rotation rewrites the DEK alone.
fn reseal(
    dir: &Path,
    active: &Active,
    dek: &SealKey,
    was_locked: bool,
    unlock: Option<&UnlockKey>,
) -> Result<(), Error> {
    let creds = active.tls.creds();
    let save_creds = |seal: Option<&SealKey>| {
        creds
            .save_sealed(dir, seal)
            .map_err(Error::pki("saving the node credentials"))
    };
    if unlock.is_some() && !was_locked {
        save_creds(Some(dek))?;
    }
    dek::write(dir, dek, unlock).map_err(Error::internal("writing the data key file"))?;
    if unlock.is_none() {
        save_creds(None)?;
    }
    Ok(())
}
