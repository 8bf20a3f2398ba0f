//! The admin API's one error type and the one place it becomes an HTTP answer (OpenAI's
//! error shape, as every Switchyard answer): each error knows its status and its kind.

use http::{Response, StatusCode};

use crate::decisions::store::StoreError;
use crate::http::{BodyError, ResponseBody, error_json};
use crate::policy::PolicyError;

/// Everything an admin request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "the admin API needs `Authorization: Bearer <admin token>` (see `admin.token_file` in the controller config)"
    )]
    Unauthorized,
    /// No such endpoint, or nothing of that name (a shadow, a canary, a node).
    #[error("{0}")]
    NotFound(String),
    /// The request's body or parameters, with what to send instead.
    #[error("{0}")]
    BadRequest(String),
    #[error("request body is larger than the {0}-byte limit")]
    TooLarge(usize),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Store(StoreError),
    /// This controller keeps no decision record.
    #[error("this controller keeps no decision record (`[decisions] enabled = false`)")]
    NoRecord,
    /// A node answered a command with an error of its own.
    #[error("{message}")]
    Node { status: StatusCode, message: String },
    /// A node could not be reached for a command.
    #[error("{0}")]
    NodeUnreachable(String),
    /// A task of the controller's own failed (a panic in a blocking task).
    #[error("{0}")]
    Internal(String),
}

impl AdminError {
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::NotFound(_) | AdminError::NoRecord => StatusCode::NOT_FOUND,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AdminError::Policy(error) => match error {
                PolicyError::Unknown(_) | PolicyError::UnknownComponent(_) => StatusCode::NOT_FOUND,
                PolicyError::NoPrevious | PolicyError::ComponentInUse { .. } => StatusCode::CONFLICT,
                PolicyError::TooManyUploads { .. } | PolicyError::UploadsTooLarge { .. } => {
                    StatusCode::INSUFFICIENT_STORAGE
                }
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            },
            AdminError::Store(StoreError::Import { .. }) => StatusCode::BAD_REQUEST,
            AdminError::Store(_) | AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AdminError::Node { status, .. } => *status,
            AdminError::NodeUnreachable(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The error's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            AdminError::Unauthorized => "authentication_error",
            AdminError::NotFound(_) | AdminError::NoRecord => "not_found",
            AdminError::BadRequest(_) | AdminError::TooLarge(_) => "invalid_request_error",
            AdminError::Policy(_) => "policy_error",
            AdminError::Store(StoreError::Import { .. }) => "invalid_request_error",
            AdminError::Store(_) => "store_error",
            AdminError::Node { .. } => "model_error",
            AdminError::NodeUnreachable(_) => "node_error",
            AdminError::Internal(_) => "internal_error",
        }
    }

    /// The answer, rendered once for every admin endpoint.
    pub fn into_response(self) -> Response<ResponseBody> {
        let message = match &self {
            AdminError::Store(error @ StoreError::Import { .. }) => format!("{error}; nothing was imported"),
            other => other.to_string(),
        };
        error_json(self.status(), self.kind(), message)
    }
}

impl From<BodyError> for AdminError {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::TooLarge(limit) => AdminError::TooLarge(limit),
            BodyError::Read(message) => AdminError::BadRequest(format!("could not read the request body: {message}")),
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(error: StoreError) -> Self {
        AdminError::Store(error)
    }
}

impl From<tokio::task::JoinError> for AdminError {
    fn from(error: tokio::task::JoinError) -> Self {
        AdminError::Internal(format!("the controller's task failed: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_request_has_one_kind_and_a_policy_error_its_status() {
        assert_eq!(AdminError::BadRequest("x".into()).kind(), "invalid_request_error");
        let import = AdminError::Store(StoreError::Import {
            line: 2,
            message: "bad".into(),
        });
        assert_eq!(
            (import.status(), import.kind()),
            (StatusCode::BAD_REQUEST, "invalid_request_error")
        );
        assert_eq!(AdminError::TooLarge(5).kind(), "invalid_request_error");
        assert_eq!(
            AdminError::Policy(PolicyError::NoPrevious).status(),
            StatusCode::CONFLICT
        );
        assert_eq!(AdminError::NoRecord.status(), StatusCode::NOT_FOUND);
    }
}
