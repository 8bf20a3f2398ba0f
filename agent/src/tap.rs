//! A tap on a relayed answer: watches the runtime's bytes go by (never changes, copies or
//! re-parses them per event) and, when the answer ends or is dropped, records time to first
//! token and decode speed. SSE streams are counted by their `data:` lines; the `usage` object
//! is parsed once, from the one event that carries it; a whole JSON answer is parsed once at
//! the end, only for its `usage`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::Deserialize;
pub use switchyard_protocol::Framing;

use crate::performance::{InFlight, PREFILL_SAMPLE_TOKENS, PerformanceTracker};

/// Largest whole (non-streamed) answer kept to read its `usage` from.
const WHOLE_ANSWER_LIMIT: usize = 1024 * 1024;
/// Largest SSE event kept because it mentions `usage`.
const USAGE_EVENT_LIMIT: usize = 64 * 1024;

#[derive(Debug, Default, Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: Option<Usage>,
    /// Ollama's native counter.
    #[serde(default)]
    eval_count: Option<u64>,
    /// llama.cpp's server: the prompt tokens it processed (not found in its cache) and how
    /// long that took.
    #[serde(default)]
    timings: Option<Timings>,
}

#[derive(Debug, Default, Deserialize)]
struct Usage {
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Debug, Default, Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct Timings {
    #[serde(default)]
    prompt_n: Option<u64>,
    #[serde(default)]
    prompt_ms: Option<f64>,
    #[serde(default)]
    cache_n: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKind {
    Undecided,
    Event,
    /// `data: [`..., perhaps the `[DONE]` that ends a stream.
    Marker,
    Other,
}

/// The tap's state for one answer; its `Drop` records what it saw.
#[derive(Debug)]
pub struct Tap {
    framing: Framing,
    /// Whether this answer is a generation (chat, completions), worth a speed sample.
    generation: bool,
    started: Instant,
    first_data: Option<Instant>,
    events: u64,
    /// The whole answer (whole framing), or the current SSE line.
    line: Vec<u8>,
    line_kind: LineKind,
    completion_tokens: Option<u64>,
    /// Prompt tokens the runtime did not find in its cache (`usage`), and the time it says it
    /// took to process them (`timings`, llama.cpp).
    uncached_prompt_tokens: Option<u64>,
    prefill_ms: Option<f64>,
    /// The whole prompt and its cached part, as the runtime reported them.
    prompt_and_cached: Option<(u64, u64)>,
    /// The stream's own end marker went by (`data: [DONE]`, Ollama's `"done": true`).
    saw_end: bool,
    tracker: Arc<PerformanceTracker>,
    in_flight: InFlight,
}

impl Tap {
    /// `in_flight`: taken when the request went to the runtime, so that the time the runtime
    /// spent before its first byte counts as busy (a whole answer's head comes at its end).
    pub fn new(
        framing: Framing,
        generation: bool,
        started: Instant,
        tracker: Arc<PerformanceTracker>,
        in_flight: InFlight,
    ) -> Tap {
        Tap {
            framing,
            generation,
            started,
            first_data: None,
            events: 0,
            line: Vec::new(),
            line_kind: LineKind::Undecided,
            completion_tokens: None,
            uncached_prompt_tokens: None,
            prefill_ms: None,
            prompt_and_cached: None,
            saw_end: false,
            tracker,
            in_flight,
        }
    }

    /// Look at one data frame as it passes.
    pub fn observe(&mut self, data: &Bytes) {
        if data.is_empty() {
            return;
        }
        match self.framing {
            Framing::Whole => {
                if self.line.len() + data.len() <= WHOLE_ANSWER_LIMIT {
                    self.line.extend_from_slice(data);
                }
            }
            Framing::Sse => self.observe_sse(data),
            Framing::Ndjson => {
                self.first_data.get_or_insert_with(Instant::now);
                self.events += memchr::memchr_iter(b'\n', data).count() as u64;
                // Ollama's final line carries the counters: keep the last line seen.
                let body = data.strip_suffix(b"\n").unwrap_or(data);
                let start = memchr::memrchr(b'\n', body).map_or(0, |i| i + 1);
                if says_done(&body[start..]) {
                    self.saw_end = true;
                    self.parse_counters(&body[start..]);
                }
            }
        }
    }

    fn observe_sse(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    self.line_part(&data[..i], true);
                    data = &data[i + 1..];
                }
                None => {
                    self.line_part(data, false);
                    data = &[];
                }
            }
        }
    }

    /// A piece of the current SSE line (`ended`: the line ends after it). A line is an event
    /// when it is `data:` with a JSON object (not `[DONE]`, not a comment); an event's bytes
    /// are kept until its end, and parsed only when they mention `usage`.
    fn line_part(&mut self, part: &[u8], ended: bool) {
        if self.line_kind != LineKind::Other {
            let room = USAGE_EVENT_LIMIT.saturating_sub(self.line.len());
            self.line.extend_from_slice(&part[..part.len().min(room)]);
        }
        if self.line_kind == LineKind::Undecided && (self.line.len() >= 7 || ended) {
            let first = self
                .line
                .strip_prefix(b"data:")
                .and_then(|payload| payload.trim_ascii_start().first().copied());
            if first == Some(b'{') {
                self.line_kind = LineKind::Event;
                self.events += 1;
                self.first_data.get_or_insert_with(Instant::now);
            } else if first == Some(b'[') {
                self.line_kind = LineKind::Marker;
            } else if !b"data:".starts_with(&self.line[..self.line.len().min(5)]) || ended || self.line.len() >= 7 {
                self.line_kind = LineKind::Other;
            }
        }
        if ended {
            if self.line_kind == LineKind::Marker && self.line[5..].trim_ascii() == b"[DONE]" {
                self.saw_end = true;
            }
            if self.line_kind == LineKind::Event && ends_a_stream(&self.line[5..]) {
                self.saw_end = true;
            }
            if self.line_kind == LineKind::Event
                && (memchr::memmem::find(&self.line, b"\"usage\"").is_some()
                    || memchr::memmem::find(&self.line, b"\"timings\"").is_some())
            {
                let line = std::mem::take(&mut self.line);
                self.parse_counters(&line[5..]);
            }
            self.line.clear();
            self.line_kind = LineKind::Undecided;
        }
    }

    /// Why the answer must not look complete although the runtime's body ended cleanly: a
    /// stream that stopped before its own end marker.
    pub fn unfinished(&self) -> Option<&'static str> {
        match self.framing {
            Framing::Sse if !self.saw_end => Some(
                "the runtime ended its stream before its end (`data: [DONE]`, `message_stop`, `response.completed`)",
            ),
            Framing::Ndjson if !self.saw_end => Some("the runtime ended its stream before the `done` object"),
            _ => None,
        }
    }

    fn parse_counters(&mut self, json: &[u8]) {
        if let Ok(found) = serde_json::from_slice::<UsageOnly>(json) {
            let tokens = found
                .usage
                .as_ref()
                .and_then(|u| u.completion_tokens)
                .or(found.eval_count);
            if tokens.is_some() {
                self.completion_tokens = tokens;
            }
            if let Some(usage) = &found.usage
                && let Some(prompt) = usage.prompt_tokens
            {
                let cached = usage.prompt_tokens_details.as_ref().and_then(|d| d.cached_tokens);
                self.uncached_prompt_tokens = Some(prompt.saturating_sub(cached.unwrap_or(0)));
                self.prompt_and_cached = Some((prompt, cached.unwrap_or(0)));
            }
            if let Some(timings) = found.timings
                && let (Some(processed), Some(ms)) = (timings.prompt_n, timings.prompt_ms)
            {
                self.uncached_prompt_tokens = Some(processed);
                self.prefill_ms = Some(ms);
                if let Some(cached) = timings.cache_n {
                    self.prompt_and_cached = Some((processed + cached, cached));
                }
            }
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if !self.generation {
            return;
        }
        let now = Instant::now();
        match self.framing {
            Framing::Whole => {
                let whole = std::mem::take(&mut self.line);
                self.parse_counters(&whole);
            }
            Framing::Sse | Framing::Ndjson => {
                if self.line_kind == LineKind::Event {
                    self.line_part(&[], true);
                }
            }
        }
        if let Some((prompt, cached)) = self.prompt_and_cached {
            self.tracker.add_prompt(prompt, cached);
        }
        match self.framing {
            Framing::Whole => {
                let seconds = now.duration_since(self.started).as_secs_f32();
                if let Some(tokens) = self.completion_tokens {
                    self.tracker.add_tokens(tokens);
                }
                if let Some(tokens) = self.completion_tokens.filter(|t| *t > 0)
                    && seconds > 0.0
                {
                    self.tracker.record_speed(tokens as f32 / seconds);
                }
                // A whole answer's first token is not seen: only the runtime's own timing.
                if let (Some(uncached), Some(ms)) = (self.uncached_prompt_tokens, self.prefill_ms) {
                    self.tracker.record_prefill(uncached, (ms / 1000.0) as f32);
                }
            }
            Framing::Sse | Framing::Ndjson => {
                let Some(first) = self.first_data else { return };
                let ttft_ms = first.duration_since(self.started).as_secs_f32() * 1000.0;
                // Without a usage object, every event but the closing one is a token.
                let tokens = self.completion_tokens.unwrap_or(self.events.saturating_sub(1));
                self.tracker.add_tokens(tokens);
                let decode = now.duration_since(first).as_secs_f32();
                let speed = (tokens > 1 && decode > 0.0).then(|| (tokens - 1) as f32 / decode);
                // A long uncached prompt's first token measures prefill, not the start: it is a
                // prefill sample, and the time to first token stays that of short prompts (a
                // policy adds `uncached / prefill speed` to it; counted in both, it would be
                // paid twice).
                match self.uncached_prompt_tokens.filter(|t| *t >= PREFILL_SAMPLE_TOKENS) {
                    Some(uncached) => {
                        // Without the runtime's own timing, only a request that found a free
                        // slot measures prefill (a queued one's first token holds its wait).
                        match self.prefill_ms {
                            Some(ms) => self.tracker.record_prefill(uncached, (ms / 1000.0) as f32),
                            None if self.in_flight.found_free_slot => {
                                self.tracker.record_prefill(uncached, ttft_ms / 1000.0)
                            }
                            None => {}
                        }
                        if let Some(speed) = speed {
                            self.tracker.record_speed(speed);
                        }
                    }
                    None => self.tracker.record(ttft_ms, speed),
                }
            }
        }
    }
}

/// Whether an SSE event is the last of a stream that has no `[DONE]`: Anthropic's
/// `message_stop`, the Responses API's `response.completed` (or `.incomplete`, `.failed`).
/// The type comes first in these events; only their first bytes are looked at.
fn ends_a_stream(event: &[u8]) -> bool {
    let head = &event[..event.len().min(96)];
    [
        &b"\"message_stop\""[..],
        b"\"response.completed\"",
        b"\"response.incomplete\"",
        b"\"response.failed\"",
    ]
    .iter()
    .any(|marker| memchr::memmem::find(head, marker).is_some())
}

/// Whether an NDJSON line is Ollama's last (`"done": true`, however spaced).
fn says_done(line: &[u8]) -> bool {
    let Some(at) = memchr::memmem::find(line, b"\"done\"") else {
        return false;
    };
    let rest = line[at + 6..].trim_ascii_start();
    rest.strip_prefix(b":")
        .is_some_and(|value| value.trim_ascii_start().starts_with(b"true"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap(framing: Framing) -> (Tap, Arc<PerformanceTracker>) {
        let tracker = Arc::new(PerformanceTracker::default());
        let in_flight = tracker.start();
        (
            Tap::new(framing, true, Instant::now(), tracker.clone(), in_flight),
            tracker,
        )
    }

    const STREAM: &[u8] = b": keepalive\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n\
        data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n\
        data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":7}}\n\ndata: [DONE]\n\n";

    #[test]
    fn sse_events_and_usage_are_found_however_the_stream_is_split() {
        for split in 1..STREAM.len() {
            let (mut tap, _tracker) = tap(Framing::Sse);
            tap.observe(&Bytes::copy_from_slice(&STREAM[..split]));
            tap.observe(&Bytes::copy_from_slice(&STREAM[split..]));
            assert_eq!(tap.events, 3, "split at {split}");
            assert!(tap.unfinished().is_none(), "split at {split}");
            assert_eq!(tap.completion_tokens, Some(7), "split at {split}");
        }
    }

    #[test]
    fn prefill_speed_comes_from_uncached_prompt_tokens_and_llama_cpp_s_own_timings() {
        // vLLM's shape: 1000 prompt tokens, 200 cached: 800 processed by the first token.
        let (mut sse, tracker) = tap(Framing::Sse);
        std::thread::sleep(std::time::Duration::from_millis(20));
        sse.observe(&Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n\
            data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":200}}}\n\ndata: [DONE]\n\n",
        ));
        drop(sse);
        let performance = tracker.snapshot();
        let speed = performance.prefill_tokens_per_sec.expect("a prefill sample");
        assert!(speed > 0.0 && speed < 800.0 / 0.019, "{speed}");
        assert_eq!(performance.ttft_ms, None, "a long prefill is not the start's time");
        // llama.cpp's timings: 4000 tokens processed in 2 s, whatever the wall clock says.
        let (mut whole, tracker) = tap(Framing::Whole);
        whole.observe(&Bytes::from_static(
            b"{\"usage\":{\"prompt_tokens\":4010,\"completion_tokens\":1},\"timings\":{\"prompt_n\":4000,\"prompt_ms\":2000.0,\"cache_n\":10}}",
        ));
        drop(whole);
        let performance = tracker.snapshot();
        assert_eq!(performance.prefill_tokens_per_sec, Some(2000.0));
        assert_eq!(
            (performance.prompt_tokens_total, performance.cached_prompt_tokens_total),
            (4010, 10)
        );
        // Queued behind the node's slots: its first token holds the wait, so no sample.
        let busy = Arc::new(PerformanceTracker::default().with_slots(1));
        let _running = busy.start();
        let mut queued = Tap::new(Framing::Sse, true, Instant::now(), busy.clone(), busy.start());
        queued.observe(&Bytes::from_static(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n",
        ));
        drop(queued);
        assert_eq!(busy.snapshot().prefill_tokens_per_sec, None);
        // A fully cached prompt (a handful of tokens processed) is no sample.
        let (mut cached, tracker) = tap(Framing::Sse);
        cached.observe(&Bytes::from_static(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5000,\"completion_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":4992}}}\n\ndata: [DONE]\n\n",
        ));
        drop(cached);
        let performance = tracker.snapshot();
        assert_eq!(performance.prefill_tokens_per_sec, None);
        assert_eq!(
            (performance.prompt_tokens_total, performance.cached_prompt_tokens_total),
            (5000, 4992)
        );
    }

    #[test]
    fn anthropic_and_responses_streams_end_with_their_own_last_events() {
        for stream in [
            &b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"[..],
            b"event: response.created\ndata: {\"type\":\"response.created\"}\n\nevent: response.completed\ndata: {\"type\": \"response.completed\", \"response\": {}}\n\n",
        ] {
            let (mut tap, _tracker) = tap(Framing::Sse);
            tap.observe(&Bytes::copy_from_slice(stream));
            assert!(tap.unfinished().is_none(), "{}", String::from_utf8_lossy(stream));
        }
        // Cut before its last event: unfinished.
        let (mut cut, _tracker) = tap(Framing::Sse);
        cut.observe(&Bytes::from_static(
            b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n",
        ));
        assert!(cut.unfinished().is_some());
    }

    #[test]
    fn a_stream_without_usage_counts_its_events_and_a_whole_answer_reads_its_usage() {
        let (mut sse, tracker) = tap(Framing::Sse);
        sse.observe(&Bytes::from_static(
            b"data: {\"x\":1}\n\ndata: {\"x\":2}\n\ndata: {\"x\":3}\n\ndata: [DONE]\n\n",
        ));
        assert_eq!((sse.events, sse.completion_tokens), (3, None));
        assert!(sse.unfinished().is_none());
        drop(sse);
        assert_eq!(tracker.snapshot().samples, 1);
        assert_eq!(tracker.in_flight(), 0);

        let (mut whole, tracker) = tap(Framing::Whole);
        whole.observe(&Bytes::from_static(b"{\"id\":\"x\",\"usage\":{\"completion_tokens\":"));
        whole.observe(&Bytes::from_static(b"12}}"));
        assert_eq!(tracker.in_flight(), 1);
        std::thread::sleep(std::time::Duration::from_millis(2));
        drop(whole);
        assert!(tracker.snapshot().tokens_per_sec.is_some_and(|s| s > 0.0));
    }

    #[test]
    fn ollama_ndjson_counts_lines_and_reads_eval_count_from_the_done_line() {
        let (mut tap, _tracker) = tap(Framing::Ndjson);
        tap.observe(&Bytes::from_static(
            b"{\"message\":{\"content\":\"a\"},\"done\":false}\n",
        ));
        assert!(tap.unfinished().is_some());
        tap.observe(&Bytes::from_static(
            b"{\"message\": {\"content\": \"\"}, \"done\": true, \"eval_count\": 5}\n",
        ));
        assert_eq!((tap.events, tap.completion_tokens), (2, Some(5)));
        assert!(tap.unfinished().is_none());
    }

    #[test]
    fn a_stream_cut_before_its_end_marker_is_unfinished() {
        let (mut tap, _tracker) = tap(Framing::Sse);
        tap.observe(&Bytes::from_static(b"data: {\"x\":1}\n\ndata: {\"x\":2}\n\n"));
        assert!(tap.unfinished().is_some());
        tap.observe(&Bytes::from_static(b"data: [DON"));
        tap.observe(&Bytes::from_static(b"E]\n\n"));
        assert!(tap.unfinished().is_none());
    }
}
