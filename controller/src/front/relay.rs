//! Relaying a node's response to the client: bytes forwarded as they come (OpenAI to
//! OpenAI needs no re-serialising), or translated incrementally (OpenAI SSE to Ollama
//! NDJSON). The slot is held until the response ends or the client goes away; a client that
//! disconnects drops the relay, which resets the stream to the agent and cancels the
//! generation. A failure after the first byte ends the stream with an explicit error event.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use switchyard_protocol::sse::SseDecoder;

use super::forward::Upstream;
use super::ollama::NdjsonTranslator;
use crate::app::App;
use crate::http::{BoxError, ResponseBody};

/// How the node's body is turned into the client's.
#[derive(Debug)]
pub enum Shape {
    /// Forward as is; an error after the first byte becomes an SSE `error` event when
    /// `sse`, else the response is cut.
    Pass { sse: bool },
    /// OpenAI SSE to Ollama NDJSON (one line per delta and a final `done` object), or to one
    /// Ollama object when the client did not ask for a stream.
    Ollama {
        translator: Box<NdjsonTranslator>,
        stream: bool,
    },
}

/// Bookkeeping when the relay ends.
struct Finish {
    app: Arc<App>,
    node: String,
    model: String,
    status: u16,
    started: Instant,
    completed: bool,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let metrics = &self.app.front.metrics;
        metrics.total.observe(self.started.elapsed());
        if self.completed {
            metrics.request(&self.node, &self.model, self.status);
        } else {
            metrics.cancelled.fetch_add(1, Ordering::Relaxed);
            metrics.request(&self.node, &self.model, 499);
            tracing::info!(node = %self.node, model = %self.model, "client went away; the node's generation is cancelled");
        }
    }
}

fn sse_error(message: &str) -> Bytes {
    let event = serde_json::json!({ "error": { "message": message, "type": "upstream_error", "code": 502 } });
    Bytes::from(format!("data: {event}\n\n"))
}

fn ndjson(value: &serde_json::Value) -> Bytes {
    let mut line = value.to_string();
    line.push('\n');
    Bytes::from(line)
}

pub fn relay(app: Arc<App>, upstream: Upstream, logical_model: String, shape: Shape, started: Instant) -> ResponseBody {
    let Upstream {
        node, response, permit, ..
    } = upstream;
    let status = response.status().as_u16();
    let total_timeout = app.front.limits.total_timeout;
    let mut finish = Finish {
        app,
        node,
        model: logical_model,
        status,
        started,
        completed: false,
    };
    let mut body = response.into_body();
    let stream = async_stream::stream! {
        let _permit = permit;
        let deadline = tokio::time::sleep(total_timeout);
        tokio::pin!(deadline);
        let mut decoder = SseDecoder::default();
        let mut shape = shape;
        loop {
            let frame = tokio::select! {
                frame = body.frame() => frame,
                _ = &mut deadline => {
                    let message = format!("the response took longer than the {total_timeout:?} limit");
                    match &shape {
                        Shape::Pass { sse: true } => yield Ok::<_, BoxError>(Frame::data(sse_error(&message))),
                        Shape::Ollama { .. } => yield Ok(Frame::data(ndjson(&serde_json::json!({ "error": message })))),
                        Shape::Pass { sse: false } => {}
                    }
                    finish.status = 504;
                    finish.completed = true;
                    break;
                }
            };
            match frame {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    match &mut shape {
                        Shape::Pass { .. } => yield Ok(Frame::data(data)),
                        Shape::Ollama { translator, stream } => {
                            let mut out = Vec::new();
                            let mut failed = None;
                            for event in decoder.push(&data) {
                                match translator.event(&event) {
                                    Ok(Some(line)) if *stream => out.extend_from_slice(&ndjson(&line)),
                                    Ok(_) => {}
                                    Err(message) => failed = Some(message),
                                }
                            }
                            if !out.is_empty() {
                                yield Ok(Frame::data(Bytes::from(out)));
                            }
                            if let Some(message) = failed {
                                yield Ok(Frame::data(ndjson(&serde_json::json!({ "error": message }))));
                                break;
                            }
                        }
                    }
                }
                Some(Err(e)) => {
                    let message = format!("the node failed mid-response: {e}");
                    tracing::warn!(node = %finish.node, "{message}");
                    match &shape {
                        Shape::Pass { sse: true } => yield Ok(Frame::data(sse_error(&message))),
                        Shape::Ollama { .. } => yield Ok(Frame::data(ndjson(&serde_json::json!({ "error": message })))),
                        Shape::Pass { sse: false } => yield Err(BoxError::from(message)),
                    }
                    finish.status = 502;
                    finish.completed = true;
                    break;
                }
                None => {
                    if let Shape::Ollama { translator, stream } = &shape {
                        yield Ok(Frame::data(ndjson(&translator.done(!*stream))));
                    }
                    finish.completed = true;
                    break;
                }
            }
        }
        drop(finish);
    };
    StreamBody::new(stream).boxed_unsync()
}
