//! The front door's one error type and the one place it becomes an HTTP answer, in the shape
//! of the API the client used (OpenAI's `{"error": {message, type, code}}` or Ollama's
//! `{"error": message}`), with its status, `Retry-After` advice and who is at fault.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use crate::http::{ResponseBody, json};

/// Which API the client speaks: decides the shape of every answer Switchyard writes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientApi {
    OpenAi,
    Ollama,
    /// Anthropic's Messages API (Claude Code).
    Anthropic,
}

/// Whose fault a failure is (as pingora's errors say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request or its credentials.
    Client,
    /// A node or its runtime.
    Node,
    /// The controller (capacity, configuration).
    Controller,
}

/// Everything that ends a prompt without a node's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrontError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("request body is larger than the {0}-byte limit")]
    TooLarge(usize),
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(Duration),
    #[error(
        "max_tokens {requested} is more than any node serving model '{model}' accepts (the most is {largest}, on {node}); lower max_tokens"
    )]
    TooManyTokens {
        model: String,
        requested: u32,
        largest: u32,
        node: String,
    },
    #[error("API key '{key}' may not use model '{model}'")]
    Forbidden { key: String, model: String },
    /// The policy refused the request with this status.
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
    #[error("{0}")]
    QueueFull(String),
    #[error(
        "API key '{key}' has {limit} request(s) in flight already, its max_concurrent; send this one when one of them ends"
    )]
    KeyBusy { key: String, limit: u32 },
    #[error(
        "API key '{key}' may use {per_minute} tokens a minute and this request would reserve {asked} (its prompt and max_tokens) beyond what is left; {advice}"
    )]
    OverBudget {
        key: String,
        per_minute: u64,
        asked: u64,
        retry_after_s: u64,
        advice: &'static str,
    },
    #[error("{0}")]
    NoSlot(String),
    #[error("no node could serve the request: {0}")]
    Exhausted(String),
    #[error(
        "node {node} did not answer within {limit:?}; the request was not sent elsewhere because the node may still be working on it"
    )]
    Timeout { node: String, limit: Duration },
    #[error("node {node} failed after it received the request (not retried: it may have started): {message}")]
    NodeFailed { node: String, message: String },
}

impl FrontError {
    pub fn status(&self) -> StatusCode {
        match self {
            FrontError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            FrontError::BadRequest(_) | FrontError::TooManyTokens { .. } => StatusCode::BAD_REQUEST,
            FrontError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            FrontError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            FrontError::Forbidden { .. } => StatusCode::FORBIDDEN,
            FrontError::Rejected { status, .. } => *status,
            FrontError::QueueFull(_) | FrontError::KeyBusy { .. } | FrontError::OverBudget { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            FrontError::NoSlot(_) | FrontError::Exhausted(_) => StatusCode::SERVICE_UNAVAILABLE,
            FrontError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            FrontError::NodeFailed { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// OpenAI's error `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            FrontError::Unauthorized(_) => "authentication_error",
            FrontError::BadRequest(_)
            | FrontError::TooLarge(_)
            | FrontError::BodyTimeout(_)
            | FrontError::TooManyTokens { .. } => "invalid_request_error",
            FrontError::Forbidden { .. } => "permission_error",
            FrontError::Rejected { status, .. } if *status == StatusCode::NOT_FOUND => "model_not_found",
            FrontError::QueueFull(_) | FrontError::KeyBusy { .. } | FrontError::OverBudget { .. } => "rate_limit_error",
            FrontError::Timeout { .. } => "timeout",
            FrontError::NodeFailed { .. } => "upstream_error",
            FrontError::Rejected { .. } | FrontError::NoSlot(_) | FrontError::Exhausted(_) => "unavailable",
        }
    }

    /// Seconds the client should wait before trying again, when trying again may help.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            FrontError::QueueFull(_) => Some(2),
            FrontError::KeyBusy { .. } => Some(1),
            FrontError::OverBudget { retry_after_s, .. } => Some(*retry_after_s),
            FrontError::NoSlot(_) | FrontError::Exhausted(_) => Some(5),
            FrontError::Rejected { status, .. } if *status == StatusCode::SERVICE_UNAVAILABLE => Some(5),
            _ => None,
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            FrontError::Unauthorized(_)
            | FrontError::BadRequest(_)
            | FrontError::TooLarge(_)
            | FrontError::BodyTimeout(_)
            | FrontError::TooManyTokens { .. }
            | FrontError::Forbidden { .. }
            | FrontError::KeyBusy { .. }
            | FrontError::OverBudget { .. } => Fault::Client,
            FrontError::Timeout { .. } | FrontError::NodeFailed { .. } | FrontError::Exhausted(_) => Fault::Node,
            FrontError::Rejected { .. } | FrontError::QueueFull(_) | FrontError::NoSlot(_) => Fault::Controller,
        }
    }
}

impl ClientApi {
    /// The one place a [`FrontError`] becomes an answer.
    pub fn render(self, error: &FrontError) -> Response<ResponseBody> {
        let mut response = self.error_body(error.status(), error.kind(), &error.to_string());
        if let Some(seconds) = error.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }

    /// An error in this API's shape (also used for a node's error re-shaped for the client).
    pub fn error_body(self, status: StatusCode, kind: &str, message: &str) -> Response<ResponseBody> {
        match self {
            ClientApi::OpenAi => json(
                status,
                &json!({ "error": { "message": message, "type": kind, "code": status.as_u16() } }),
            ),
            ClientApi::Ollama => json(status, &json!({ "error": message })),
            ClientApi::Anthropic => json(
                status,
                &json!({ "type": "error", "error": { "type": anthropic_kind(status), "message": message } }),
            ),
        }
    }
}

/// Anthropic's error `type` for a status (its clients read the type, and retry on
/// `overloaded_error`, `rate_limit_error` and `api_error`).
fn anthropic_kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 408 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(response: Response<ResponseBody>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        serde_json::from_slice(&bytes).expect("json")
    }

    #[tokio::test]
    async fn errors_take_the_clients_shape_status_and_retry_advice() {
        let error = FrontError::QueueFull("every eligible node is busy".into());
        let openai = ClientApi::OpenAi.render(&error);
        assert_eq!(openai.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(openai.headers()[header::RETRY_AFTER], "2");
        let value = body(openai).await;
        assert_eq!(value["error"]["type"], "rate_limit_error");
        assert_eq!(value["error"]["code"], 429);
        let ollama = body(ClientApi::Ollama.render(&error)).await;
        assert_eq!(ollama["error"], "every eligible node is busy");
        let anthropic = ClientApi::Anthropic.render(&error);
        assert_eq!(anthropic.headers()[header::RETRY_AFTER], "2");
        let anthropic = body(anthropic).await;
        assert_eq!(anthropic["type"], "error");
        assert_eq!(anthropic["error"]["type"], "rate_limit_error");
        assert_eq!(anthropic["error"]["message"], "every eligible node is busy");
        let unauthorized = body(ClientApi::Anthropic.render(&FrontError::Unauthorized("no key".into()))).await;
        assert_eq!(unauthorized["error"]["type"], "authentication_error");

        let timeout = FrontError::Timeout {
            node: "xeon".into(),
            limit: Duration::from_secs(3),
        };
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(timeout.fault(), Fault::Node);
        assert!(timeout.to_string().contains("node xeon"));
        assert!(timeout.retry_after().is_none(), "the node may still be working on it");
        let rejected = FrontError::Rejected {
            status: StatusCode::NOT_FOUND,
            message: "no node serves model 'x'".into(),
        };
        assert_eq!(
            body(ClientApi::OpenAi.render(&rejected)).await["error"]["type"],
            "model_not_found"
        );
    }
}
