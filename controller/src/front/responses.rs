//! The Responses API's `previous_response_id`: a stateful runtime (vLLM, OpenAI-compatible
//! servers that store responses) can continue a conversation only on the node that produced
//! its previous response. The controller remembers which node produced each response id it
//! relayed (the last [`REMEMBERED`], read from the first bytes of the answer), and a request
//! that names one goes to that node whatever the policy chose; an id it does not know is
//! left to the policy and the runtime (which answers `previous_response_not_found` when it
//! does not hold it either).

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;

/// Response ids remembered (about 100 bytes each).
pub const REMEMBERED: usize = 100_000;
/// How far into an answer its response id is looked for.
pub const SNIFF_BYTES: usize = 16 * 1024;
/// The longest response id kept.
const MAX_ID_BYTES: usize = 128;

/// Which node produced each response id.
#[derive(Debug, Default)]
pub struct ResponseOrigins {
    inner: Mutex<Origins>,
}

#[derive(Debug, Default)]
struct Origins {
    node: HashMap<String, String>,
    order: VecDeque<String>,
}

impl ResponseOrigins {
    pub fn node_of(&self, id: &str) -> Option<String> {
        self.inner.lock().node.get(id).cloned()
    }

    pub fn remember(&self, id: &str, node: &str) {
        if id.is_empty() || id.len() > MAX_ID_BYTES {
            return;
        }
        let mut inner = self.inner.lock();
        if inner.node.insert(id.to_owned(), node.to_owned()).is_none() {
            inner.order.push_back(id.to_owned());
        }
        while inner.order.len() > REMEMBERED {
            if let Some(oldest) = inner.order.pop_front() {
                inner.node.remove(&oldest);
            }
        }
    }
}

/// The response id in the first bytes of an answer (a whole response object, or a stream's
/// `response.created` event): the first `"id"` whose value starts with `resp`.
pub fn response_id(head: &[u8]) -> Option<String> {
    let mut rest = head;
    while let Some(at) = memchr::memmem::find(rest, b"\"id\"") {
        rest = &rest[at + 4..];
        let value = rest.trim_ascii_start().strip_prefix(b":")?.trim_ascii_start();
        let Some(value) = value.strip_prefix(b"\"") else {
            continue;
        };
        let end = memchr::memchr(b'"', value)?;
        let id = std::str::from_utf8(&value[..end]).ok()?;
        if id.starts_with("resp") {
            return Some(id.to_owned());
        }
    }
    None
}

/// Learns the response id of one relayed answer from its first bytes.
#[derive(Debug)]
pub struct Learner {
    pub origins: std::sync::Arc<ResponseOrigins>,
    pub node: String,
    head: Vec<u8>,
    done: bool,
}

impl Learner {
    pub fn new(origins: std::sync::Arc<ResponseOrigins>, node: &str) -> Self {
        Self {
            origins,
            node: node.to_owned(),
            head: Vec::new(),
            done: false,
        }
    }

    /// Look at the next bytes of the answer (until the id is found or enough was seen).
    pub fn observe(&mut self, data: &[u8]) {
        if self.done {
            return;
        }
        let room = SNIFF_BYTES.saturating_sub(self.head.len());
        self.head.extend_from_slice(&data[..data.len().min(room)]);
        if let Some(id) = response_id(&self.head) {
            self.origins.remember(&id, &self.node);
            self.done = true;
        } else if self.head.len() >= SNIFF_BYTES {
            self.done = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_id_is_found_in_a_whole_answer_or_a_streams_first_event() {
        assert_eq!(
            response_id(br#"{"id": "resp_abc123", "object": "response"}"#).as_deref(),
            Some("resp_abc123")
        );
        let stream = b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_9\",\"output\":[{\"id\":\"msg_1\"}]}}\n\n";
        assert_eq!(response_id(stream).as_deref(), Some("resp_9"));
        // Other ids first (an item's) are skipped; a cut value is not taken.
        assert_eq!(
            response_id(br#"{"item": {"id": "msg_1"}, "id": "resp_2"}"#).as_deref(),
            Some("resp_2")
        );
        assert_eq!(response_id(br#"{"id": "resp_cut"#), None);
        assert_eq!(response_id(b"{\"error\": {}}"), None);
    }

    #[test]
    fn origins_are_learned_across_frames_and_bounded() {
        let origins = std::sync::Arc::new(ResponseOrigins::default());
        let mut learner = Learner::new(origins.clone(), "xeon");
        learner.observe(b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"re");
        assert_eq!(origins.node_of("resp_7"), None);
        learner.observe(b"sp_7\"}}\n\n");
        assert_eq!(origins.node_of("resp_7").as_deref(), Some("xeon"));
        for i in 0..REMEMBERED + 5 {
            origins.remember(&format!("resp_{i}"), "ryzen");
        }
        assert_eq!(origins.node_of("resp_0"), None, "the oldest went");
        assert_eq!(
            origins.node_of(&format!("resp_{}", REMEMBERED + 4)).as_deref(),
            Some("ryzen")
        );
        assert_eq!(origins.inner.lock().node.len(), REMEMBERED);
    }
}
