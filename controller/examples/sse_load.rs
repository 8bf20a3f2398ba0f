//! A closed-loop SSE load generator for the proxy benchmark: CONCURRENCY keep-alive
//! connections each send streamed chat requests back to back for SECONDS, reading every
//! stream to its end; prints the median time to the first body byte (ms) and the number of
//! streams completed.
//!   cargo run --release --example sse_load URL CONCURRENCY SECONDS BODY

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, concurrency, seconds, body] = args.as_slice() else {
        return Err("usage: sse_load URL CONCURRENCY SECONDS BODY".into());
    };
    let (concurrency, seconds): (usize, u64) = (concurrency.parse()?, seconds.parse()?);
    let url = format!("{}/v1/chat/completions", url.trim_end_matches('/'));
    let body = Bytes::from(body.clone());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (mut samples, streams) = runtime.block_on(async move {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let (client, url, body) = (client.clone(), url.clone(), body.clone());
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    while Instant::now() < deadline {
                        let request = Request::post(&url)
                            .header("content-type", "application/json")
                            .body(Full::new(body.clone()))
                            .expect("request");
                        let started = Instant::now();
                        let Ok(response) = client.request(request).await else {
                            continue;
                        };
                        let mut body = response.into_body();
                        let mut first = None;
                        while let Some(Ok(frame)) = body.frame().await {
                            if first.is_none() && frame.data_ref().is_some_and(|d| !d.is_empty()) {
                                first = Some(started.elapsed());
                            }
                        }
                        if let Some(first) = first {
                            samples.push(first.as_secs_f64() * 1000.0);
                        }
                    }
                    samples
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap_or_default());
        }
        let count = all.len();
        (all, count)
    });
    samples.sort_by(f64::total_cmp);
    let median = samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN);
    let mut out = std::io::stdout().lock();
    std::io::Write::write_all(&mut out, format!("{median:.3} {streams}\n").as_bytes())?;
    Ok(())
}
