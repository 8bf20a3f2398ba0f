//! Reading an admin request's body: bounded bytes, UTF-8 text, or a small typed JSON body
//! whose error says what to send.

use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;

use super::error::AdminError;

/// Largest JSON body of an admin command (and policy document).
pub const SMALL_LIMIT: usize = 256 * 1024;

pub async fn bytes(request: Request<Incoming>, limit: usize) -> Result<Bytes, AdminError> {
    Ok(crate::http::read_body_limited(request.into_body(), limit).await?)
}

/// The body as UTF-8 text; `what` names it in the error (`the policy document`).
pub async fn text(request: Request<Incoming>, limit: usize, what: &str) -> Result<String, AdminError> {
    let body = bytes(request, limit).await?;
    String::from_utf8(body.to_vec()).map_err(|_| AdminError::BadRequest(format!("{what} is not UTF-8")))
}

/// A small JSON body as `T`; else a 400 that says what it should have been (`expected`).
pub async fn json<T: serde::de::DeserializeOwned>(request: Request<Incoming>, expected: &str) -> Result<T, AdminError> {
    let body = bytes(request, SMALL_LIMIT).await?;
    serde_json::from_slice(&body).map_err(|e| AdminError::BadRequest(format!("{e}; {expected}")))
}
