//! A node's swarm membership on disk, under `<state-dir>/swarm/`: `swarm.json` (cluster,
//! role, addresses, known managers), the credentials (`ca.pem`, `node.pem`, `node-key.pem`)
//! and, on managers, `raft.redb`. Leaving the swarm removes the whole directory.

use std::{
    fs, io,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::cluster::Role;

const SWARM_DIR: &str = "swarm";
const SWARM_FILE: &str = "swarm.json";
const RAFT_FILE: &str = "raft.redb";

/// What a node must remember about its swarm to come back after a restart.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwarmFile {
    pub cluster_id: String,
    pub role: Role,
    /// This node's API address for other nodes (advertise address, port 2377).
    pub addr: SocketAddr,
    pub data_path_addr: IpAddr,
    /// Managers' API addresses, as last learned; where a restarted worker looks for the leader.
    pub manager_addrs: Vec<SocketAddr>,
    /// Where the cluster API listens, when init or join chose it (`--listen-addr`); `None`:
    /// the agent's own. Absent from files written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_addr: Option<SocketAddr>,
}

pub fn swarm_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(SWARM_DIR)
}

pub fn raft_path(state_dir: &Path) -> PathBuf {
    swarm_dir(state_dir).join(RAFT_FILE)
}

/// `swarm.json` could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parsing {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The membership kept in `state_dir`, if the node is in a swarm.
pub fn load(state_dir: &Path) -> Result<Option<SwarmFile>, LoadError> {
    let path = swarm_dir(state_dir).join(SWARM_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| LoadError::Parse { path, source }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LoadError::Read { path, source }),
    }
}

/// Writes `swarm.json` atomically and durably (temp file, fsync, rename, fsync of the dir).
pub fn save(state_dir: &Path, file: &SwarmFile) -> io::Result<()> {
    let dir = swarm_dir(state_dir);
    fs::create_dir_all(&dir)?;
    let path = dir.join(SWARM_FILE);
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(file).map_err(io::Error::other)?;
    {
        let f = fs::File::create(&tmp)?;
        io::Write::write_all(&mut &f, &bytes)?;
        f.sync_all()?;
    }
    fs::rename(tmp, path)?;
    // The rename is durable only once the directory is: a power loss must not take the node's
    // membership (and with it every task it runs) back to "not in a swarm".
    fs::File::open(&dir)?.sync_all()
}

/// Forgets the swarm: credentials, Raft log and all.
pub fn remove(state_dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(swarm_dir(state_dir)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
