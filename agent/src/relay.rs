//! The agent's data plane: a request for the local runtime is relayed as bytes. The runtime
//! receives the body the controller sent (the client's bytes, with only `model` rewritten by
//! the controller) on the same path, and its status, headers and every byte of its answer go
//! back as they come, watched by a [`Tap`] for telemetry. Nothing here parses or rebuilds a
//! request or an answer. A runtime that could not have started the work (unreachable,
//! 429/503) is marked with `x-switchyard-retryable` so the controller may try another node.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::api::{Body, BoxError};
use crate::driver::RuntimeDriver;
use crate::models::{Lease, LoadError, ModelManager};
use crate::performance::PerformanceTracker;
use crate::tap::{Framing, Tap};

/// The header that tells the controller the runtime did not start on the request.
pub const RETRYABLE: &str = "x-switchyard-retryable";

/// Hop-by-hop headers: they describe one connection, never the message.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::HOST,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Relays requests to the runtime at `base`.
#[derive(Debug, Clone)]
pub struct RuntimeRelay {
    scheme_authority: String,
    base_path: String,
    client: Client<HttpConnector, Full<Bytes>>,
    driver: Arc<dyn RuntimeDriver>,
    performance: Arc<PerformanceTracker>,
    /// Models with their own runtime process, started on demand.
    models: Option<Arc<ModelManager>>,
    /// Whether `[runtime]` has a server of its own for the models without a command.
    shared_runtime: bool,
}

/// Why a request could not be relayed; rendered by [`crate::api`].
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the runtime's address {0:?} is not an http:// URL")]
    BadBase(String),
    #[error("the request to the runtime could not be built: {0}")]
    Request(#[from] http::Error),
    #[error("cannot read the request body: {0}")]
    Body(String),
}

impl RuntimeRelay {
    pub fn new(
        base_url: &str,
        driver: Arc<dyn RuntimeDriver>,
        performance: Arc<PerformanceTracker>,
    ) -> Result<Self, RelayError> {
        let base: Uri = base_url
            .trim_end_matches('/')
            .parse()
            .map_err(|_| RelayError::BadBase(base_url.to_owned()))?;
        let (Some("http"), Some(authority)) = (base.scheme_str(), base.authority()) else {
            return Err(RelayError::BadBase(base_url.to_owned()));
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .build(connector);
        Ok(Self {
            scheme_authority: format!("http://{authority}"),
            base_path: base.path().trim_end_matches('/').to_owned(),
            client,
            driver,
            performance,
            models: None,
            shared_runtime: true,
        })
    }

    /// Relay requests for `models`' models to their own runtimes (started on demand);
    /// `shared_runtime`: whether the base runtime serves the other models.
    pub fn with_models(mut self, models: Option<Arc<ModelManager>>, shared_runtime: bool) -> Self {
        self.models = models;
        self.shared_runtime = shared_runtime;
        self
    }

    /// The model's own runtime, ready and held for this request, when the agent starts it;
    /// `Err` is the answer to give instead.
    async fn lease_for(&self, body: &[u8]) -> Result<Option<Lease>, Response<Body>> {
        let Some(models) = &self.models else {
            return Ok(None);
        };
        let model = model_of(body);
        match model.as_deref() {
            Some(local) if models.manages(local) => match models.acquire(local).await {
                Ok(lease) => Ok(Some(lease)),
                Err(e) => {
                    tracing::warn!(model = local, "{e}");
                    let status = match e {
                        LoadError::TooLarge { .. } => StatusCode::INSUFFICIENT_STORAGE,
                        _ => StatusCode::SERVICE_UNAVAILABLE,
                    };
                    let mut response = crate::api::error(status, "model_not_loaded", e.to_string());
                    // Nothing started on it: another node may serve it.
                    response.headers_mut().insert(
                        RETRYABLE,
                        HeaderValue::from_static("the model could not be loaded here"),
                    );
                    Err(response)
                }
            },
            _ if !self.shared_runtime => Err(crate::api::error(
                StatusCode::NOT_FOUND,
                "model_not_found",
                format!(
                    "model {:?} is not in this node's catalog (every model here has its own runtime command)",
                    model.unwrap_or_default()
                ),
            )),
            _ => Ok(None),
        }
    }

    /// Relay `request` (its path, headers and body) to the runtime.
    pub async fn relay(&self, request: Request<Incoming>) -> Result<Response<Body>, RelayError> {
        let started = Instant::now();
        let in_flight = self.performance.start();
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| RelayError::Body(e.to_string()))?
            .to_bytes();
        let lease = match self.lease_for(&body).await {
            Ok(lease) => lease,
            Err(answer) => return Ok(answer),
        };
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri: Uri = match &lease {
            Some(lease) => format!("{}{path}", lease.base_url),
            None => format!("{}{}{path}", self.scheme_authority, self.base_path),
        }
        .parse()
        .map_err(http::Error::from)?;
        let generation = is_generation(parts.uri.path());
        let mut answer = self.send(&parts.headers, &uri, body.clone()).await;
        if let Ok(response) = &answer
            && response.status() == StatusCode::NOT_FOUND
            && let Some(model) = model_of(&body)
            && self.driver.ensure_model(&model).await.unwrap_or(false)
        {
            answer = self.send(&parts.headers, &uri, body).await;
        }
        let response = match answer {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!(%uri, "the runtime is unreachable: {e}");
                let mut response = crate::api::error(
                    StatusCode::BAD_GATEWAY,
                    "runtime_unreachable",
                    format!(
                        "the runtime at {} is unreachable: {e}",
                        uri.authority().map_or("?", |a| a.as_str())
                    ),
                );
                response
                    .headers_mut()
                    .insert(RETRYABLE, HeaderValue::from_static("runtime unreachable"));
                return Ok(response);
            }
        };
        let (mut head, body) = response.into_parts();
        strip_hop_by_hop(&mut head.headers);
        if matches!(
            head.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            head.headers
                .insert(RETRYABLE, HeaderValue::from_static("the runtime refused the request"));
        }
        let framing = head
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map_or(Framing::Whole, Framing::from_content_type);
        let tap = Tap::new(
            framing,
            generation && head.status.is_success(),
            started,
            self.performance.clone(),
            in_flight,
        );
        let body = TappedBody {
            inner: body,
            tap,
            _lease: lease,
        }
        .boxed_unsync();
        Ok(Response::from_parts(head, body))
    }

    async fn send(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        body: Bytes,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = uri.clone();
        let outgoing = request.headers_mut();
        for (name, value) in headers {
            if !HOP_BY_HOP.contains(name)
                && name != header::CONTENT_LENGTH
                && !name.as_str().starts_with("x-switchyard-")
            {
                outgoing.append(name, value.clone());
            }
        }
        self.client.request(request).await
    }
}

/// The runtime's body as it comes, watched by the tap. A stream that ends cleanly but before
/// its own end marker ends in an error instead, so that nobody downstream mistakes a cut
/// answer for a whole one.
struct TappedBody {
    inner: Incoming,
    tap: Tap,
    /// Holds the model resident until the answer is over (or the client is gone).
    _lease: Option<Lease>,
}

impl hyper::body::Body for TappedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.tap.observe(data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                Poll::Ready(Some(Err(BoxError::from(format!("the runtime's answer broke: {e}")))))
            }
            Poll::Ready(None) => match this.tap.unfinished() {
                Some(why) => {
                    tracing::warn!("{why}");
                    Poll::Ready(Some(Err(BoxError::from(why))))
                }
                None => Poll::Ready(None),
            },
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove("keep-alive");
}

/// Whether an endpoint generates tokens (worth a speed sample), as opposed to embeddings.
fn is_generation(path: &str) -> bool {
    path.ends_with("/completions")
        || path.ends_with("/responses")
        || path.ends_with("/api/chat")
        || path.ends_with("/api/generate")
}

/// The `model` a JSON body names, read without building a tree.
fn model_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct ModelOnly {
        model: String,
    }
    serde_json::from_slice::<ModelOnly>(body).ok().map(|m| m.model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_told_from_other_endpoints() {
        for path in [
            "/v1/chat/completions",
            "/v1/completions",
            "/api/chat",
            "/api/generate",
            "/v1/responses",
        ] {
            assert!(is_generation(path), "{path}");
        }
        for path in ["/v1/embeddings", "/api/embed", "/v1/rerank"] {
            assert!(!is_generation(path), "{path}");
        }
        assert_eq!(model_of(br#"{"messages":[],"model":"m"}"#).as_deref(), Some("m"));
    }
}
