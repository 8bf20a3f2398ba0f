//! How an HTTP answer body is framed, from its content type: what the agent's tap and the
//! controller's relay need to know to watch a stream or end it explicitly.

/// The framing of an answer body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `text/event-stream`: `data:` events.
    Sse,
    /// `application/x-ndjson` (Ollama's native streams): one JSON object a line.
    Ndjson,
    /// One document.
    Whole,
}

impl Framing {
    pub fn from_content_type(content_type: &str) -> Framing {
        if content_type.starts_with("text/event-stream") {
            Framing::Sse
        } else if content_type.starts_with("application/x-ndjson") {
            Framing::Ndjson
        } else {
            Framing::Whole
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Framing;

    #[test]
    fn content_types_name_their_framing() {
        assert_eq!(
            Framing::from_content_type("text/event-stream; charset=utf-8"),
            Framing::Sse
        );
        assert_eq!(Framing::from_content_type("application/x-ndjson"), Framing::Ndjson);
        assert_eq!(Framing::from_content_type("application/json"), Framing::Whole);
    }
}
