//! The Prometheus text exposition's helpers: a metric's `# HELP` and `# TYPE` lines, a metric
//! of one value, a metric with a series per label value, and label values escaped so that no
//! name can break the exposition.

use std::fmt::Write;

/// A metric's `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A metric with one value and no labels.
pub fn scalar(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// A metric with one series per value of `label`: `(label value, value)` pairs.
pub fn series<'a, V: std::fmt::Display>(
    out: &mut String,
    (name, kind, help): (&str, &str, &str),
    label: &str,
    values: impl IntoIterator<Item = (&'a str, V)>,
) {
    header(out, name, kind, help);
    for (value_of_label, value) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {value}", Label(value_of_label));
    }
}

/// A Prometheus label value, escaped (`\\`, `\"` and `\n`): a name from a certificate, a
/// policy file or a client can never break the exposition or add series.
#[derive(Debug, Clone, Copy)]
pub struct Label<'a>(pub &'a str);

impl std::fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Label;

    #[test]
    fn label_values_cannot_close_the_label_or_start_a_line() {
        let hostile = "x\",status=\"404\"} 1\nswitchyard_node_healthy{node=\"m4\"} 0\\";
        assert_eq!(
            Label(hostile).to_string(),
            "x\\\",status=\\\"404\\\"} 1\\nswitchyard_node_healthy{node=\\\"m4\\\"} 0\\\\"
        );
    }
}
