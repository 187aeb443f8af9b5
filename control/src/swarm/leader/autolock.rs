//! The unlock key on the leader: shown, rotated, and autolock turned on or off
//! (`swarm unlock-key`, `swarm update --autolock`). The key lives in the store's
//! `ClusterInfo`; each manager re-seals its own data key when it changes there.

use super::Leader;
use crate::{
    api::{UnlockKeyRequest, UnlockKeyResponse},
    cluster::Command,
    raft::seal::UnlockKey,
    swarm::error::Error,
};

impl Leader {
    /// Turns autolock on or off if asked, then rotates the key if asked, and answers with
    /// the key (empty when autolock is off).
    pub async fn unlock_key(&self, request: UnlockKeyRequest) -> Result<UnlockKeyResponse, Error> {
        let current = || -> Result<Option<String>, Error> { Ok(self.cluster()?.unlock_key) };
        match (request.autolock, current()?) {
            (Some(true), None) => self.set_unlock_key(Some(UnlockKey::generate())).await?,
            (Some(false), Some(_)) => self.set_unlock_key(None).await?,
            _ => {}
        }
        if request.rotate {
            if current()?.is_none() {
                return Err(Error::refused(
                    "cannot rotate because autolock is not turned on",
                ));
            }
            self.set_unlock_key(Some(UnlockKey::generate())).await?;
        }
        Ok(UnlockKeyResponse {
            key: current()?.unwrap_or_default(),
        })
    }

    async fn set_unlock_key(&self, key: Option<UnlockKey>) -> Result<(), Error> {
        let command = Command::SetUnlockKey(key.map(|k| k.to_string()));
        self.propose_setting(command, None).await?;
        tracing::info!("unlock key changed");
        Ok(())
    }
}
