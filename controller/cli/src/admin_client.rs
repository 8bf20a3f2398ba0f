//! A small HTTP client for the admin API, used by the CLI.

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::Remote;

#[derive(Debug)]
pub struct AdminClient {
    base: String,
    token: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    pub fn new(remote: &Remote) -> anyhow::Result<Self> {
        let Some(token) = remote.admin_token.clone() else {
            bail!("no admin token: pass --admin-token or set SWITCHYARD_ADMIN_TOKEN (the demo prints one)");
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Ok(Self {
            base: remote.controller.trim_end_matches('/').to_owned(),
            token,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Send a request; a non-2xx reply becomes an error carrying the server's message.
    /// `GET path`, no body.
    pub async fn get(&self, path: &str) -> anyhow::Result<Bytes> {
        self.call("GET", path, Vec::new(), "application/json").await
    }

    /// `method path` with no body (`POST .../activate`, `DELETE /admin/shadow`).
    pub async fn send(&self, method: &str, path: &str) -> anyhow::Result<Bytes> {
        self.call(method, path, Vec::new(), "application/json").await
    }

    /// `POST path` with `value` as JSON.
    pub async fn post_json(&self, path: &str, value: &impl serde::Serialize) -> anyhow::Result<Bytes> {
        self.call("POST", path, serde_json::to_vec(value)?, "application/json")
            .await
    }

    pub async fn call(&self, method: &str, path: &str, body: Vec<u8>, content_type: &str) -> anyhow::Result<Bytes> {
        let uri = format!("{}{path}", self.base);
        let request = Request::builder()
            .method(method)
            .uri(&uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))?;
        let response = self
            .client
            .request(request)
            .await
            .with_context(|| format!("cannot reach the controller at {uri}"))?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            bail!("{method} {path}: {status}: {message}");
        }
        Ok(body)
    }
}
