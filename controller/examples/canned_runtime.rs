//! A canned OpenAI-compatible runtime for the proxy benchmark (`tests/bench/proxy.sh`): it
//! answers every `POST` at once, a 16-token chat completion, or 50 SSE events and
//! `data: [DONE]` when the body asks for a stream, so that what the benchmark measures is the
//! path in front of it, not inference. `GET /v1/models` and `GET /health` answer too.
//!   cargo run --release --example canned_runtime [THREADS]     (prints url=http://...)

use std::convert::Infallible;

use bytes::Bytes;
use http::{Method, Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

const WHOLE: &str = r#"{"id":"chatcmpl-canned","object":"chat.completion","created":1764547200,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"This is a canned answer of sixteen tokens from the benchmark runtime double."},"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":9,"completion_tokens":16,"total_tokens":25}}"#;

fn sse_body() -> Bytes {
    let mut body = String::new();
    for i in 0..50 {
        body.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-canned\",\"object\":\"chat.completion.chunk\",\"created\":1764547200,\"model\":\"bench-model\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}},\"finish_reason\":null}}]}}\n\n"
        ));
    }
    body.push_str("data: [DONE]\n\n");
    Bytes::from(body)
}

async fn answer(request: Request<Incoming>, sse: Bytes) -> Result<Response<Full<Bytes>>, Infallible> {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (content_type, bytes) = match (method, path.as_str()) {
        (Method::GET, "/v1/models") => (
            "application/json",
            Bytes::from_static(br#"{"object":"list","data":[{"id":"bench-model","object":"model"}]}"#),
        ),
        (Method::GET, _) => ("application/json", Bytes::from_static(b"{}")),
        _ if memchr::memmem::find(&body, b"\"stream\": true").is_some()
            || memchr::memmem::find(&body, b"\"stream\":true").is_some() =>
        {
            ("text/event-stream", sse)
        }
        _ => ("application/json", Bytes::from_static(WHOLE.as_bytes())),
    };
    let mut response = Response::new(Full::new(bytes));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    Ok(response)
}

fn main() -> std::io::Result<()> {
    let threads = std::env::args().nth(1).and_then(|t| t.parse().ok()).unwrap_or(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut out = std::io::stdout().lock();
        std::io::Write::write_all(&mut out, format!("url=http://{}\n", listener.local_addr()?).as_bytes())?;
        drop(out);
        let sse = sse_body();
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let sse = sse.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| answer(request, sse.clone()));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
