//! [`ApiError`]: how the Engine API fails, as dockerd does: an HTTP status and a JSON body
//! `{"message": "..."}` in the daemon's words. gRPC statuses from the agent's API become HTTP
//! statuses by dockerd's own table (moby `errdefs/http_helpers.go`), their messages unchanged:
//! shoal's API already words them as Docker's daemon does ("service web not found").

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use tonic::Code;

/// One failed request: what dockerd would answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// dockerd's `errdefs.InvalidParameter`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// dockerd's `errdefs.NotFound`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// dockerd's `errdefs.Unavailable` (a node that is no manager, a locked swarm).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// dockerd's `errdefs.System`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        ApiError::new(
            http_status(status.code()),
            status.message().replace('\n', " "),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "message": self.message })),
        )
            .into_response()
    }
}

/// dockerd's mapping of a gRPC code (swarmkit's answers) to an HTTP status.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_statuses_map_as_dockerds() {
        let e = ApiError::from(tonic::Status::not_found("service web not found"));
        assert_eq!(e, ApiError::not_found("service web not found"));
        for (code, http) in [
            (Code::AlreadyExists, 409),
            (Code::FailedPrecondition, 400),
            (Code::PermissionDenied, 403),
            (Code::Unavailable, 503),
            (Code::Internal, 500),
            (Code::Unknown, 500),
        ] {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }
}
