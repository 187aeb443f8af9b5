//! [`Error`]: what the swarm runtime's operations fail with, and the one place it becomes a gRPC
//! [`Status`] (code by kind, message with its causes).
//!
//! Internal steps return `Error`; only the gRPC file (`grpc.rs`) and the calls that go over the
//! wire speak `Status`. An answer from another node (the leader, a task's node) is carried as
//! it came ([`Error::Remote`]), so forwarding never rewrites it.

use tonic::{Code, Status};

use super::codec::CodecError;
use crate::{allocator::AllocError, error_chain::chain, pki::PkiError};

/// Docker's words for a worker asked to do a manager's job.
pub const NOT_A_MANAGER: &str = "This node is not a swarm manager. Worker nodes can't be used \
     to view or modify cluster state. Please run this command on a manager node or promote the \
     current node to a manager.";

/// Docker's words for a manager restarted under autolock, until `swarm unlock`.
pub const SWARM_LOCKED: &str = "Swarm is encrypted and needs to be unlocked before it can be \
     used. Please use \"shoal swarm unlock\" to unlock it.";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("This node is not part of a swarm")]
    NotInSwarm,

    #[error(
        "This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and \
         join another one."
    )]
    AlreadyInSwarm,

    #[error("{NOT_A_MANAGER}")]
    NotAManager,

    /// A manager restarted under autolock: nothing runs until `swarm unlock`.
    #[error("{SWARM_LOCKED}")]
    Locked,

    /// The node's certificate expired while it could not renew it (off, or cut off from the
    /// managers for its whole lifetime): no manager takes it any more.
    #[error(
        "node certificate expired on {expired_on}: leave the swarm (shoal swarm leave --force) \
         and join it again with a token"
    )]
    CertificateExpired { expired_on: String },

    /// `swarm unlock` with a key that is malformed or does not open the data key.
    #[error("invalid unlock key")]
    InvalidUnlockKey {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A certificate of the cluster CA for a node the swarm does not know (never joined, or
    /// removed).
    #[error("node {0} is not a member of this swarm")]
    UnknownNode(String),

    /// The call needs credentials the caller did not present.
    #[error("{0}")]
    Unauthenticated(&'static str),

    #[error("no leader is known: the swarm has no quorum")]
    NoLeader,

    #[error("the swarm is still being initialized")]
    NotInitialized,

    /// The request itself is wrong: a bad name, spec, address or reference.
    #[error("{0}")]
    Invalid(String),

    /// A node, service, network or task that does not exist.
    #[error("{0}")]
    NotFound(String),

    /// A name that is taken.
    #[error("{0}")]
    AlreadyExists(String),

    /// The request is well-formed but the cluster's state refuses it (the last manager, a
    /// node that is not down, a rejected Raft command...).
    #[error("{0}")]
    Refused(String),

    /// A write quoted a version of its object (the swarm's settings, a secret, a config)
    /// that another write has replaced since: Docker's words, which its clients know.
    #[error("update out of sequence")]
    OutOfSequence,

    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),

    /// A pool (addresses, VNIs, ports) has nothing left.
    #[error("{0}")]
    Exhausted(String),

    /// The allocator refused: a bad subnet or gateway, a taken port, a pool with nothing left.
    #[error(transparent)]
    Allocation(#[from] AllocError),

    /// A heartbeat payload that could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),

    /// Something the operation needs is not reachable now; retrying may help.
    #[error("{what}")]
    Unavailable {
        what: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// A command cannot run in a task on this node (not running here, or the command itself).
    #[error("cannot run a command in task {task_id}")]
    Exec {
        task_id: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The cluster PKI failed while doing `what`.
    #[error("{what}")]
    Pki {
        what: &'static str,
        #[source]
        source: PkiError,
    },

    /// Anything else that failed on this node while doing `what` (Raft, files, encoding).
    #[error("{what}")]
    Internal {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// Another node's answer (the leader, the node running a task), passed on as it came.
    #[error("{}", .0.message())]
    Remote(#[from] Status),
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Error::NotFound(message.into())
    }

    pub fn exists(message: impl Into<String>) -> Self {
        Error::AlreadyExists(message.into())
    }

    pub fn refused(message: impl Into<String>) -> Self {
        Error::Refused(message.into())
    }

    pub fn denied(message: impl Into<String>) -> Self {
        Error::PermissionDenied(message.into())
    }

    pub fn exhausted(message: impl Into<String>) -> Self {
        Error::Exhausted(message.into())
    }

    /// `Unavailable` without a cause.
    pub fn unavailable(what: impl Into<String>) -> Self {
        Error::Unavailable {
            what: what.into(),
            source: None,
        }
    }

    /// `Unavailable` with the error that made it so.
    pub fn unavailable_because(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Unavailable {
            what: what.into(),
            source: Some(Box::new(source)),
        }
    }

    /// `Internal`, for `map_err`: `.map_err(Error::internal("opening the raft store"))`.
    pub fn internal<E: std::error::Error + Send + Sync + 'static>(
        what: &'static str,
    ) -> impl FnOnce(E) -> Self {
        move |source| Error::Internal {
            what,
            source: Box::new(source),
        }
    }

    /// `Pki`, for `map_err`.
    pub fn pki(what: &'static str) -> impl FnOnce(PkiError) -> Self {
        move |source| Error::Pki { what, source }
    }

    fn code(&self) -> Code {
        match self {
            Error::NotInSwarm
            | Error::AlreadyInSwarm
            | Error::Locked
            | Error::CertificateExpired { .. }
            | Error::Refused(_)
            | Error::Exec { .. } => Code::FailedPrecondition,
            Error::InvalidUnlockKey { .. } => Code::InvalidArgument,
            Error::NotAManager | Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::UnknownNode(_) | Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::NoLeader | Error::NotInitialized | Error::Unavailable { .. } => {
                Code::Unavailable
            }
            Error::Invalid(_) => Code::InvalidArgument,
            Error::OutOfSequence => Code::Aborted,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::Exhausted(_) | Error::Allocation(AllocError::VnisExhausted) => {
                Code::ResourceExhausted
            }
            Error::Allocation(_) | Error::Codec(CodecError::Decode { .. }) => Code::InvalidArgument,
            Error::Codec(CodecError::Encode { .. }) => Code::Internal,
            Error::Pki { .. } | Error::Internal { .. } => Code::Internal,
            Error::Remote(status) => status.code(),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match error {
            Error::Remote(status) => status,
            error => Status::new(error.code(), chain(&error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_carries_the_kind_as_its_code_and_the_causes_in_its_message() {
        let io = std::io::Error::other("disk full");
        let status = Status::from(Error::internal("saving the swarm membership")(io));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "saving the swarm membership: disk full");

        let status = Status::from(Error::Locked);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().starts_with("Swarm is encrypted"));

        let status = Status::from(Error::Invalid("invalid role \"boss\"".into()));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "invalid role \"boss\"");
    }

    #[test]
    fn another_nodes_answer_is_passed_on_unchanged() {
        let status = Status::from(Error::Remote(Status::not_found("service web not found")));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "service web not found");
    }
}
