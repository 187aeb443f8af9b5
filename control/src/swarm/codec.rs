//! The heartbeat's payloads on the wire: task reports up; assignments (with the files their
//! tasks need), network-DB keys and the routing mesh down. Each is one framed CBOR document
//! (`crate::format`: a format byte, then maps keyed by field name, so a node one minor version
//! older reads what it knows and skips the rest) in a `bytes` field of the gRPC message.
//!
//! Encoding and decoding fail loudly, never into an empty payload: an empty list of tasks is
//! encoded like any other list (a length of 0), so "this node runs nothing" can never be read
//! out of a payload that was lost or mangled. A node that cannot decode its assignments keeps
//! running what it runs.

use serde::{Serialize, de::DeserializeOwned};

use crate::format::{self, FormatError};

use crate::{
    cluster::{
        Task, gossip::GossipConfig, mesh::RoutingMesh, mesh_delta::MeshDelta, objects::TaskFiles,
    },
    swarm::node::runner::TaskReports,
};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encoding {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: FormatError,
    },
    #[error("undecodable {what}")]
    Decode {
        what: &'static str,
        #[source]
        source: FormatError,
    },
}

const REPORTS: &str = "task reports";
const TASKS: &str = "task assignments";
const GOSSIP: &str = "gossip config";
const MESH: &str = "routing mesh";
const FILES: &str = "task files";
const MESH_DELTA: &str = "routing mesh change";

pub fn encode_reports(reports: &TaskReports) -> Result<Vec<u8>, CodecError> {
    encode(REPORTS, reports)
}

pub fn decode_reports(bytes: &[u8]) -> Result<TaskReports, CodecError> {
    decode(REPORTS, bytes)
}

/// Every task assigned to a node (possibly none: that is a list of length 0, not no bytes).
pub fn encode_tasks(tasks: &[Task]) -> Result<Vec<u8>, CodecError> {
    encode(TASKS, tasks)
}

pub fn decode_tasks(bytes: &[u8]) -> Result<Vec<Task>, CodecError> {
    decode(TASKS, bytes)
}

/// The secrets and configs a node's assigned tasks need (possibly none, never no bytes).
pub fn encode_files(files: &TaskFiles) -> Result<Vec<u8>, CodecError> {
    encode(FILES, files)
}

pub fn decode_files(bytes: &[u8]) -> Result<TaskFiles, CodecError> {
    decode(FILES, bytes)
}

pub fn encode_gossip(config: &GossipConfig) -> Result<Vec<u8>, CodecError> {
    encode(GOSSIP, config)
}

pub fn decode_gossip(bytes: &[u8]) -> Result<GossipConfig, CodecError> {
    decode(GOSSIP, bytes)
}

pub fn encode_mesh(mesh: &RoutingMesh) -> Result<Vec<u8>, CodecError> {
    encode(MESH, mesh)
}

pub fn decode_mesh(bytes: &[u8]) -> Result<RoutingMesh, CodecError> {
    decode(MESH, bytes)
}

pub fn encode_mesh_delta(delta: &MeshDelta) -> Result<Vec<u8>, CodecError> {
    encode(MESH_DELTA, delta)
}

pub fn decode_mesh_delta(bytes: &[u8]) -> Result<MeshDelta, CodecError> {
    decode(MESH_DELTA, bytes)
}

/// What a heartbeat names an encoded routing mesh by (SHA-256): equal digests, the same mesh.
/// (The leader computes it by parts, `leader/mesh_cache.rs`; this is its definition.)
pub fn mesh_digest(encoded: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    Sha256::digest(encoded).to_vec()
}

fn encode<T: Serialize + ?Sized>(what: &'static str, value: &T) -> Result<Vec<u8>, CodecError> {
    format::encode(value).map_err(|source| CodecError::Encode { what, source })
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, CodecError> {
    format::decode(bytes).map_err(|source| CodecError::Decode { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_tasks_is_a_payload_of_its_own_and_no_bytes_are_an_error() {
        let none = encode_tasks(&[]).unwrap();
        assert!(!none.is_empty(), "an empty assignment must still be said");
        assert_eq!(none[0], format::CBOR, "framed with its format");
        assert!(decode_tasks(&none).unwrap().is_empty());
        assert!(
            matches!(decode_tasks(&[]), Err(CodecError::Decode { .. })),
            "empty bytes must not read as 'no tasks'"
        );
        assert!(decode_reports(&[]).is_err());
        let none = encode_files(&TaskFiles::default()).unwrap();
        assert_eq!(decode_files(&none).unwrap(), TaskFiles::default());
        assert!(decode_files(&[]).is_err());
    }
}
