//! An incremental Server-Sent Events decoder (the agent reads runtimes with it, the
//! controller translates streams with it): bytes in (any chunking), `data:` payloads out.
//! Comment lines (`: keepalive`) and other fields are skipped; events end at a blank line.

#[derive(Debug, Default)]
pub struct SseDecoder {
    buffer: Vec<u8>,
    /// How much of `buffer` is known to hold no line end: a long line arriving in many
    /// pieces is scanned once, not from its start at every piece.
    scanned: usize,
    data: Vec<String>,
}

impl SseDecoder {
    /// Feed bytes; returns the `data` of every event completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer[self.scanned..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|at| at + self.scanned)
        {
            self.scanned = 0;
            let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(self.data.join("\n"));
                    self.data.clear();
                }
            } else if let Some(value) = line.strip_prefix("data:") {
                self.data.push(value.strip_prefix(' ').unwrap_or(value).to_owned());
            }
        }
        self.scanned = self.buffer.len();
        events
    }

    /// The last event, if the stream ended without its blank line.
    pub fn finish(&mut self) -> Option<String> {
        self.scanned = 0;
        let rest = std::mem::take(&mut self.buffer);
        if let Some(value) = String::from_utf8_lossy(&rest).trim_end().strip_prefix("data:") {
            self.data.push(value.trim_start().to_owned());
        }
        (!self.data.is_empty()).then(|| std::mem::take(&mut self.data).join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_any_chunking_and_comments_are_skipped() {
        let stream = b": keepalive 1/1\n\ndata: {\"a\":1}\n\ndata: {\"b\":2}\r\n\r\ndata: [DONE]\n\n";
        let whole: Vec<String> = SseDecoder::default().push(stream);
        assert_eq!(whole, ["{\"a\":1}", "{\"b\":2}", "[DONE]"]);
        for split in 1..stream.len() {
            let mut decoder = SseDecoder::default();
            let mut events = decoder.push(&stream[..split]);
            events.extend(decoder.push(&stream[split..]));
            assert_eq!(events, whole, "split at {split}");
        }
    }

    #[test]
    fn multi_line_data_joins_and_a_missing_final_blank_line_is_tolerated() {
        let mut decoder = SseDecoder::default();
        assert_eq!(decoder.push(b"data: one\ndata: two\n\ndata: last"), ["one\ntwo"]);
        assert_eq!(decoder.finish().as_deref(), Some("last"));
    }

    #[test]
    fn a_long_line_in_small_pieces_is_one_payload() {
        let payload = "x".repeat(200_000);
        let text = format!("data: {payload}\n\n");
        let mut decoder = SseDecoder::default();
        let mut events = Vec::new();
        for piece in text.as_bytes().chunks(7) {
            events.extend(decoder.push(piece));
        }
        assert_eq!(events, vec![payload]);
    }

    mod properties {
        use super::super::SseDecoder;
        use proptest::prelude::*;

        proptest! {
            /// Events written as SSE come back the same however the bytes are cut, with
            /// comments between them and either line ending.
            #[test]
            fn events_come_back_the_same_under_any_chunking(
                events in prop::collection::vec(prop::collection::vec("[^\r\n]{0,20}", 1..3), 0..6),
                cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
                crlf in any::<bool>(),
            ) {
                let end = if crlf { "\r\n" } else { "\n" };
                let mut text = String::new();
                for lines in &events {
                    text.push_str(&format!(": keepalive{end}"));
                    for line in lines {
                        text.push_str(&format!("data: {line}{end}"));
                    }
                    text.push_str(end);
                }
                let bytes = text.as_bytes();
                let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
                points.sort_unstable();
                let mut decoder = SseDecoder::default();
                let mut got = Vec::new();
                let mut from = 0;
                for at in points.into_iter().chain([bytes.len()]) {
                    got.extend(decoder.push(&bytes[from..at]));
                    from = at;
                }
                // `data: ` with its one separating space: the payload is the line as written.
                let expected: Vec<String> = events.iter().map(|lines| lines.join("\n")).collect();
                prop_assert_eq!(got, expected);
                prop_assert_eq!(decoder.finish(), None);
            }

            /// Any bytes: payloads or nothing, never a panic.
            #[test]
            fn any_bytes_decode_without_a_panic(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8)) {
                let mut decoder = SseDecoder::default();
                for chunk in &chunks {
                    let _ = decoder.push(chunk);
                }
                let _ = decoder.finish();
            }
        }
    }
}
