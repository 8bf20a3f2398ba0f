//! Deterministic generated inputs for the tests of the parsers that face the outside
//! (request bodies, hint headers, stream events, policy files): a seeded xorshift and a
//! generator of JSON values with awkward text (quotes, escapes, non-ASCII, control bytes,
//! words the parsers look for). Every run checks the same inputs; a failure names its case.

pub use crate::rng::Rng;

impl Rng {
    /// Text made of pieces the parsers care about.
    pub fn text(&mut self) -> String {
        const PIECES: [&str; 14] = [
            "model", "a", "\"", "\\", "é", "{", "]", ",", " ", "\u{1}", "\n", "data:", "[DONE]", "usage",
        ];
        (0..self.below(6))
            .map(|_| PIECES[self.below(PIECES.len() as u64) as usize])
            .collect()
    }

    /// A JSON value, at most four levels deep.
    pub fn value(&mut self, depth: u32) -> serde_json::Value {
        use serde_json::{Value, json};
        match self.below(if depth > 2 { 5 } else { 7 }) {
            0 => Value::Null,
            1 => json!(self.below(2) == 0),
            2 => json!(self.next_u64() as f64 / 7.0),
            3 => json!(self.below(100_000)),
            4 => json!(self.text()),
            5 => Value::Array((0..self.below(4)).map(|_| self.value(depth + 1)).collect()),
            _ => Value::Object(
                (0..self.below(4))
                    .map(|_| (self.text(), self.value(depth + 1)))
                    .collect(),
            ),
        }
    }

    /// `text` with a few bytes changed, dropped or repeated.
    pub fn mutate(&mut self, text: &str) -> String {
        let mut bytes = text.as_bytes().to_vec();
        for _ in 0..1 + self.below(4) {
            if bytes.is_empty() {
                break;
            }
            let at = self.below(bytes.len() as u64) as usize;
            match self.below(3) {
                0 => {
                    const SWAPS: &[u8] = b"\"[]{}=,.\n#0a";
                    bytes[at] = SWAPS[self.below(SWAPS.len() as u64) as usize];
                }
                1 => {
                    bytes.remove(at);
                }
                _ => {
                    let end = (at + 1 + self.below(16) as usize).min(bytes.len());
                    let copy = bytes[at..end].to_vec();
                    bytes.splice(at..at, copy);
                }
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}
