//! An incremental Server-Sent Events decoder (the agent reads runtimes with it, the
//! controller translates streams with it): bytes in (any chunking), `data:` payloads out.
//! Comment lines (`: keepalive`) and other fields are skipped; events end at a blank line.

#[derive(Debug, Default)]
pub struct SseDecoder {
    buffer: Vec<u8>,
    data: Vec<String>,
}

impl SseDecoder {
    /// Feed bytes; returns the `data` of every event completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
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
        events
    }

    /// The last event, if the stream ended without its blank line.
    pub fn finish(&mut self) -> Option<String> {
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
}
