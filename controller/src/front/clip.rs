//! Text a client chose, clipped to a byte bound at a character boundary (for the record,
//! the log and session keys).

/// `raw` clipped to at most `max` bytes at a character boundary.
pub fn clip(raw: &str, max: usize) -> &str {
    if raw.len() <= max {
        return raw;
    }
    let mut end = max;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    &raw[..end]
}
