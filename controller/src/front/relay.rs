//! Relaying a node's body to the client: bytes forwarded as they come (no re-serialising
//! where the APIs match), or translated incrementally (OpenAI SSE to Ollama NDJSON or to
//! Anthropic's events). The slot
//! is held until the body ends or the client goes away; a client that disconnects drops the
//! relay, which resets the stream to the agent and cancels the generation. A failure after
//! the first byte never looks like a clean end: a stream ends with an explicit error event
//! in its own framing, a whole answer is cut (the client sees an incomplete body).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
pub use switchyard_protocol::Framing;
use switchyard_protocol::sse::SseDecoder;

use super::admission::Permit;
use super::metrics::FrontMetrics;
use crate::http::{BoxError, ResponseBody};

/// The explicit end of a failed stream, in its framing; `None` for a whole answer.
fn error_event(framing: Framing, message: &str) -> Option<Bytes> {
    match framing {
        Framing::Sse => {
            let event = serde_json::json!({ "error": { "message": message, "type": "upstream_error", "code": 502 } });
            Some(Bytes::from(format!("data: {event}\n\n")))
        }
        Framing::Ndjson => Some(ndjson(&serde_json::json!({ "error": message }))),
        Framing::Whole => None,
    }
}

/// How the node's body is turned into the client's.
pub enum Shape {
    /// Forward as is.
    Pass(Framing),
    /// The node's OpenAI SSE translated into the client's API (Ollama's NDJSON, Anthropic's
    /// events), event by event, or into one object when the client did not ask for a stream.
    Translated(Box<dyn Translation>),
}

impl std::fmt::Debug for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shape::Pass(framing) => write!(f, "Pass({framing:?})"),
            Shape::Translated(_) => f.write_str("Translated"),
        }
    }
}

/// One event of a node's OpenAI stream, as every translation reads it: `None` for the
/// `[DONE]` marker, the message of an error event as `Err`.
pub fn openai_event(data: &str) -> Result<Option<serde_json::Value>, String> {
    if data == "[DONE]" {
        return Ok(None);
    }
    let value: serde_json::Value =
        serde_json::from_str(data).map_err(|e| format!("unreadable event from the node: {e}"))?;
    match value.get("error") {
        Some(error) => Err(error["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| error.to_string())),
        None => Ok(Some(value)),
    }
}

/// One answer's translation from the node's OpenAI SSE into the client's API.
pub trait Translation: Send {
    /// One SSE event's data -> the bytes to send now (none when the client wants one object).
    fn event(&mut self, data: &str) -> Result<Vec<u8>, String>;
    /// Whether the node's stream ended properly (a finish reason or `[DONE]`).
    fn finished(&self) -> bool;
    /// The last bytes: the stream's closing events, or the whole object.
    fn end(&mut self) -> Vec<u8>;
    /// A failure in the client's framing.
    fn failure(&self, message: &str) -> Bytes;
}

/// Reads the runtime's own count of cached prompt tokens from the end of its answer (the
/// `usage` comes last: `prompt_tokens_details.cached_tokens`, or Anthropic's
/// `cache_read_input_tokens`), for the decision record, beside the controller's estimate.
#[derive(Debug, Default)]
struct CachedCount {
    tail: Vec<u8>,
}

/// How much of an answer's end is kept to find its usage.
const USAGE_TAIL_BYTES: usize = 8 * 1024;

impl CachedCount {
    fn observe(&mut self, data: &[u8]) {
        if data.len() >= USAGE_TAIL_BYTES {
            self.tail.clear();
            self.tail.extend_from_slice(&data[data.len() - USAGE_TAIL_BYTES..]);
            return;
        }
        self.tail.extend_from_slice(data);
        if self.tail.len() > 2 * USAGE_TAIL_BYTES {
            self.tail.drain(..self.tail.len() - USAGE_TAIL_BYTES);
        }
    }

    /// The last count in the answer's tail.
    fn cached_tokens(&self) -> Option<u32> {
        [&b"\"cached_tokens\""[..], b"\"cache_read_input_tokens\""]
            .iter()
            .filter_map(|key| self.last_number(key))
            .max_by_key(|(at, _)| *at)
            .map(|(_, number)| number.min(u64::from(u32::MAX)) as u32)
    }

    /// The tokens the answer used, prompt and completion, as its runtime counted them
    /// (OpenAI's `usage`, Anthropic's, or Ollama's `prompt_eval_count` and `eval_count`).
    fn used_tokens(&self) -> Option<u64> {
        [
            (&b"\"prompt_tokens\""[..], &b"\"completion_tokens\""[..]),
            (b"\"input_tokens\"", b"\"output_tokens\""),
            (b"\"prompt_eval_count\"", b"\"eval_count\""),
        ]
        .iter()
        .find_map(|(prompt, completion)| {
            let (_, completion) = self.last_number(completion)?;
            let prompt = self.last_number(prompt).map_or(0, |(_, n)| n);
            Some(prompt + completion)
        })
    }

    /// Where the last `"key": N` of the tail is, and N.
    fn last_number(&self, key: &[u8]) -> Option<(usize, u64)> {
        let at = memchr::memmem::rfind(&self.tail, key)?;
        let rest = self.tail[at + key.len()..]
            .trim_ascii_start()
            .strip_prefix(b":")?
            .trim_ascii_start();
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let number = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        Some((at, number))
    }
}

/// One relay's context.
#[derive(Debug)]
pub struct Relayed {
    pub metrics: Arc<FrontMetrics>,
    /// Cancelled when the controller's shutdown grace is about to end.
    pub closing: tokio_util::sync::CancellationToken,
    pub total_timeout: Duration,
    pub node: String,
    pub model: String,
    pub status: u16,
    pub started: Instant,
    pub shape: Shape,
    /// The decision record's draft, completed when the relay ends.
    pub record: Option<super::record::RecordSink>,
    /// Remembers the answer's response id with its node (the Responses API).
    pub learner: Option<super::responses::Learner>,
    /// Checks the prefix index's estimate against the runtime's own cached count.
    pub cold_check: Option<crate::prefix_index::ColdCheck>,
    /// How a streamed chat answer continues on another node when its node is lost.
    pub continuation: Option<Box<super::continuation::Continuation>>,
    /// Cancelled when the answer must move off its node (a drain's deadline passed).
    pub moved_off: tokio_util::sync::CancellationToken,
}

/// Bookkeeping when the relay ends.
struct Finish {
    metrics: Arc<FrontMetrics>,
    node: String,
    model: String,
    status: u16,
    started: Instant,
    completed: bool,
    record: Option<super::record::RecordSink>,
    cold_check: Option<crate::prefix_index::ColdCheck>,
}

impl Finish {
    /// Put the runtime's cached count into the record (the answer ended whole).
    fn note_cached(&mut self, count: Option<&CachedCount>) {
        if let (Some(record), Some(count)) = (self.record.as_mut(), count) {
            record.outcome().cached_tokens = count.cached_tokens();
        }
        if let (Some(check), Some(cached)) = (self.cold_check.take(), count.and_then(CachedCount::cached_tokens)) {
            check.observe(cached);
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        let metrics = &self.metrics;
        metrics.total.observe(self.started.elapsed());
        if let Some(record) = self.record.take() {
            record.finish(self.status, !self.completed);
        }
        if self.completed {
            metrics.request(&self.node, &self.model, self.status);
        } else {
            metrics.cancelled.fetch_add(1, Ordering::Relaxed);
            metrics.request(&self.node, &self.model, 499);
            tracing::info!(node = %self.node, model = %self.model, "client went away; the node's generation is cancelled");
        }
    }
}

fn ndjson(value: &serde_json::Value) -> Bytes {
    let mut line = value.to_string();
    line.push('\n');
    Bytes::from(line)
}

/// The explicit end of a failed answer, in the client's framing: an event to send, or an
/// error that cuts a whole answer.
fn failure(shape: &Shape, message: &str) -> Result<Frame<Bytes>, BoxError> {
    let event = match shape {
        Shape::Pass(framing) => error_event(*framing, message),
        Shape::Translated(translation) => Some(translation.failure(message)),
    };
    event.map(Frame::data).ok_or_else(|| BoxError::from(message.to_owned()))
}

impl Finish {
    /// The bookkeeping half of a relay's context.
    fn new(relayed: &mut Relayed) -> Finish {
        Finish {
            metrics: relayed.metrics.clone(),
            node: std::mem::take(&mut relayed.node),
            model: std::mem::take(&mut relayed.model),
            status: relayed.status,
            started: relayed.started,
            completed: false,
            record: relayed.record.take(),
            cold_check: relayed.cold_check.take(),
        }
    }

    /// The answer continues on another node: its hand-off recorded and counted, the new node
    /// named in what the relay's end reports.
    fn handed_off(&mut self, continuation: &super::continuation::Continuation) {
        let Some(handoff) = continuation.handoffs.last() else {
            return;
        };
        tracing::warn!(from = %handoff.from, to = %handoff.to, after_tokens = handoff.after_tokens, "the stream's node was lost; the answer continues on another node");
        self.metrics.continuations.fetch_add(1, Ordering::Relaxed);
        if let Some(record) = self.record.as_mut() {
            record.outcome().continued.push(handoff.clone());
        }
        self.node = handoff.to.clone();
    }

    /// The answer ended with `status` (a failure after its head, or a clean end).
    fn end(&mut self, status: u16) {
        self.status = status;
        self.completed = true;
    }
}

/// One chunk of the node's SSE, translated into the client's framing: the bytes to send now
/// (if any), and the message of a failed translation (the answer then ends).
fn translate_chunk(
    translation: &mut Box<dyn Translation>,
    decoder: &mut SseDecoder,
    data: &[u8],
    mut continuation: Option<&mut super::continuation::Continuation>,
) -> (Option<Bytes>, Option<String>) {
    let mut out = Vec::new();
    let mut failed = None;
    for event in decoder.push(data) {
        let event = match continuation.as_deref_mut() {
            Some(continuation) => match continuation.splice(&event) {
                Some(event) => event.into_owned(),
                None => continue,
            },
            None => event,
        };
        match translation.event(&event) {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(message) => failed = Some(message),
        }
    }
    ((!out.is_empty()).then(|| Bytes::from(out)), failed)
}

/// An OpenAI stream passed to an OpenAI client that may continue on another node: whole
/// events only (a node lost mid-event leaves no half event before the continuation), each
/// read on the way; after a hand-off, the continuing node's events spliced in.
fn pass_events(
    continuation: &mut super::continuation::Continuation,
    decoder: &mut SseDecoder,
    boundary: &mut EventBoundary,
    data: Bytes,
) -> Option<Bytes> {
    let events = decoder.push(&data);
    if continuation.handoffs.is_empty() {
        for event in &events {
            continuation.observe(event);
        }
        return boundary.push(&data);
    }
    let mut out = String::new();
    for event in events {
        if let Some(event) = continuation.splice(&event) {
            out.push_str("data: ");
            out.push_str(&event);
            out.push_str("\n\n");
        }
    }
    (!out.is_empty()).then(|| Bytes::from(out))
}

/// Holds back the bytes of an event not yet whole.
#[derive(Debug, Default)]
struct EventBoundary {
    pending: Vec<u8>,
}

impl EventBoundary {
    /// The bytes up to the end of the last whole event so far.
    fn push(&mut self, data: &[u8]) -> Option<Bytes> {
        self.pending.extend_from_slice(data);
        let end = memchr::memmem::rfind(&self.pending, b"\n\n").map(|at| at + 2)?;
        let whole: Vec<u8> = self.pending.drain(..end).collect();
        Some(Bytes::from(whole))
    }

    /// What is left when the stream ends.
    fn rest(&mut self) -> Option<Bytes> {
        (!self.pending.is_empty()).then(|| Bytes::from(std::mem::take(&mut self.pending)))
    }
}

/// The node's body ended: a translated stream's closing events (or the failure of one that
/// ended before its last event); nothing to add when bytes pass through.
fn end_of_body(finish: &mut Finish, shape: &mut Shape) -> Option<Result<Frame<Bytes>, BoxError>> {
    let mut status = finish.status;
    let last = match shape {
        Shape::Translated(translation) if !translation.finished() => {
            status = 502;
            let message = format!("node {} ended the answer before its last event", finish.node);
            Some(failure(shape, &message))
        }
        Shape::Translated(translation) => Some(Ok(Frame::data(Bytes::from(translation.end())))),
        Shape::Pass(_) => None,
    };
    finish.end(status);
    last
}

/// Show a chunk of the answer to what reads it on the way: the runtime's cached count, the
/// Responses API's id learner.
fn observe(data: &[u8], cached_count: Option<&mut CachedCount>, learner: Option<&mut super::responses::Learner>) {
    if let Some(count) = cached_count {
        count.observe(data);
    }
    if let Some(learner) = learner {
        learner.observe(data);
    }
}

/// What the next wait on the node's body came to.
enum Step {
    /// A frame: its data (`None` for trailers).
    Data(Option<Bytes>),
    /// The body ended.
    Ended,
    /// The answer fails with this status and message (the node failed, the limit passed, or
    /// the controller is closing).
    Failed(u16, String),
}

/// What else than the node's body may end an answer.
struct Ends<'a> {
    /// The controller's shutdown grace is ending.
    closing: &'a tokio_util::sync::CancellationToken,
    /// The answer must move off its node.
    moved_off: &'a tokio_util::sync::CancellationToken,
    /// The answer's time limit.
    limit: Duration,
}

/// Wait for the node's next frame, the answer's time limit, the controller's closing, or the
/// answer's move off its node.
async fn next_step(
    body: &mut Incoming,
    deadline: std::pin::Pin<&mut tokio::time::Sleep>,
    ends: Ends<'_>,
    node: &str,
) -> Step {
    let Ends {
        closing,
        moved_off,
        limit,
    } = ends;
    tokio::select! {
        frame = body.frame() => match frame {
            Some(Ok(frame)) => Step::Data(frame.into_data().ok()),
            Some(Err(e)) => Step::Failed(502, format!("node {node} failed mid-response: {e}")),
            None => Step::Ended,
        },
        _ = deadline => Step::Failed(
            504,
            format!("node {node} took longer than the {limit:?} limit for a whole response"),
        ),
        _ = closing.cancelled() => Step::Failed(
            503,
            "the controller is shutting down and its grace period ended before this answer did".to_owned(),
        ),
        _ = moved_off.cancelled() => Step::Failed(
            502,
            format!("node {node} was drained and its deadline passed before this answer ended"),
        ),
    }
}

/// The answer is whole: note the runtime's cached count, and settle the key's token budget by
/// the answer's usage.
fn account(finish: &mut Finish, cached_count: Option<&CachedCount>, permit: &mut Permit) {
    finish.note_cached(cached_count);
    if let Some(used) = cached_count.and_then(CachedCount::used_tokens) {
        permit.settle(used);
    }
}

pub fn relay(mut relayed: Relayed, mut body: Incoming, permit: Permit) -> ResponseBody {
    let mut finish = Finish::new(&mut relayed);
    let Relayed {
        closing,
        total_timeout,
        mut shape,
        mut learner,
        mut continuation,
        mut moved_off,
        ..
    } = relayed;
    // A body with a declared length may be dropped by the server right after its last byte,
    // without being asked for its end: count the bytes so that such an answer is complete.
    let mut declared = hyper::body::Body::size_hint(&body).exact();
    let stream = async_stream::stream! {
        let mut permit = permit;
        let mut sent: u64 = 0;
        let deadline = tokio::time::sleep(total_timeout);
        tokio::pin!(deadline);
        let mut decoder = SseDecoder::default();
        let mut boundary = EventBoundary::default();
        // Only an answer whose decision is recorded needs the runtime's cached count, and
        // only one charged to a key's token budget its usage.
        let mut cached_count =
            (finish.record.is_some() || finish.cold_check.is_some() || permit.charged()).then(CachedCount::default);
        loop {
            let ends = Ends { closing: &closing, moved_off: &moved_off, limit: total_timeout };
            let step = next_step(&mut body, deadline.as_mut(), ends, &finish.node).await;
            let data = match step {
                Step::Data(Some(data)) => data,
                Step::Data(None) => continue,
                Step::Failed(status, mut message) => {
                    tracing::warn!(node = %finish.node, "{message}");
                    if status == 502
                        && let Some(continuation) = continuation.as_deref_mut().filter(|c| c.possible())
                    {
                        match continuation.resume(&finish.node).await {
                            Ok(next) => {
                                finish.handed_off(continuation);
                                let mut next_permit = next.permit;
                                permit.hand_over_to(&mut next_permit);
                                permit = next_permit;
                                body = next.response.into_body();
                                moved_off = continuation.watch(&next.node);
                                declared = None;
                                decoder = SseDecoder::default();
                                boundary = EventBoundary::default();
                                continue;
                            }
                            Err(why) => {
                                finish.metrics.continuation_failures.fetch_add(1, Ordering::Relaxed);
                                message = format!("{message}; it could not continue on another node: {why}");
                            }
                        }
                    }
                    if let Some(handoffs) = continuation.as_ref().map(|c| &c.handoffs).filter(|h| !h.is_empty()) {
                        let lost: Vec<&str> = handoffs.iter().map(|h| h.from.as_str()).collect();
                        message = format!("{message} (it had continued there after node {} was lost)", lost.join(" and then "));
                    }
                    yield failure(&shape, &message);
                    finish.end(status);
                    break;
                }
                Step::Ended => {
                    account(&mut finish, cached_count.as_ref(), &mut permit);
                    if let Some(rest) = boundary.rest() {
                        yield Ok(Frame::data(rest));
                    }
                    if let Some(last) = end_of_body(&mut finish, &mut shape) {
                        yield last;
                    }
                    break;
                }
            };
            observe(&data, cached_count.as_mut(), learner.as_mut());
            let failed = match &mut shape {
                Shape::Pass(Framing::Sse) if continuation.is_some() => {
                    if let Some(continuation) = continuation.as_deref_mut()
                        && let Some(out) = pass_events(continuation, &mut decoder, &mut boundary, data)
                    {
                        yield Ok::<_, BoxError>(Frame::data(out));
                    }
                    None
                }
                Shape::Pass(_) => {
                    sent += data.len() as u64;
                    if declared == Some(sent) {
                        // Read the node's end of stream before handing over the last bytes:
                        // the server may drop this body right after them, and a dropped
                        // HTTP/2 stream is a reset on the agent's link (enough of those and
                        // the link is closed as abusive).
                        tokio::select! {
                            _ = body.frame() => {}
                            _ = &mut deadline => {}
                        }
                        let status = finish.status;
                        finish.end(status);
                        account(&mut finish, cached_count.as_ref(), &mut permit);
                    }
                    yield Ok::<_, BoxError>(Frame::data(data));
                    None
                }
                Shape::Translated(translation) => {
                    let (out, failed) = translate_chunk(translation, &mut decoder, &data, continuation.as_deref_mut());
                    if let Some(out) = out {
                        yield Ok(Frame::data(out));
                    }
                    failed
                }
            };
            if let Some(message) = failed {
                yield failure(&shape, &message);
                finish.end(502);
                break;
            }
        }
        drop(finish);
    };
    StreamBody::new(stream).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answers_usage_is_read_from_its_end_in_each_apis_shape() {
        let read = |text: &[u8]| {
            let mut count = CachedCount::default();
            count.observe(text);
            count.used_tokens()
        };
        assert_eq!(
            read(b"data: {\"usage\":{\"prompt_tokens\":900,\"completion_tokens\":12,\"prompt_tokens_details\":{\"cached_tokens\":768}}}\n\n"),
            Some(912)
        );
        assert_eq!(
            read(br#"{"usage": {"input_tokens": 40, "output_tokens": 2}}"#),
            Some(42)
        );
        assert_eq!(
            read(br#"{"done": true, "prompt_eval_count": 26, "eval_count": 8}"#),
            Some(34)
        );
        assert_eq!(read(b"data: [DONE]"), None);
    }

    #[test]
    fn the_runtimes_cached_count_is_read_from_the_end_of_its_answer() {
        let mut count = CachedCount::default();
        assert_eq!(count.cached_tokens(), None);
        count.observe(b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n");
        for _ in 0..100 {
            count.observe(&[b' '; 1000]);
        }
        count.observe(&vec![b' '; 3 * USAGE_TAIL_BYTES]);
        count.observe(
            b"data: {\"usage\":{\"prompt_tokens\":900,\"prompt_tokens_details\": {\"cached_tokens\": 768}}}\n\n",
        );
        assert_eq!(count.cached_tokens(), Some(768));
        assert!(count.tail.len() <= 2 * USAGE_TAIL_BYTES);
        let mut anthropic = CachedCount::default();
        anthropic.observe(
            b"event: message_delta\ndata: {\"usage\":{\"output_tokens\":5,\"cache_read_input_tokens\":4096}}\n\n",
        );
        assert_eq!(anthropic.cached_tokens(), Some(4096));
    }
}
