//! Text from clients and policies made safe for one log line: control characters (line
//! breaks above all, which would let a client or a policy forge log lines) are written as
//! escapes; everything else, quotes included, is kept as it is.

use std::borrow::Cow;

/// `text` with its control characters escaped (`\n`, `\u{1b}`...).
pub fn log_safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_and_control_characters_are_escaped_and_quotes_kept() {
        assert_eq!(log_safe("rule 'batch' (task \"b\")"), "rule 'batch' (task \"b\")");
        assert!(matches!(log_safe("plain"), Cow::Borrowed(_)));
        assert_eq!(
            log_safe("ok\n2026-12-07 INFO forged\r\u{1b}[31m"),
            "ok\\n2026-12-07 INFO forged\\r\\u{1b}[31m"
        );
        assert!(!log_safe("a\u{2028}b").contains('\u{2028}'));
    }
}
