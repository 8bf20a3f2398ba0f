//! Where in a policy file a stage's params went wrong: components see their `[params]` as
//! JSON and name the key's path (`invalid [params] at rules[1].min_priority: ...`); this
//! finds the TOML line that an operator edits (the key's line inside that stage, else the
//! stage's params table, else the stage).

/// The 1-based line of the key a component's params error is about, in `text` (the policy
/// file), for stage `stage`.
pub fn params_line(text: &str, stage: usize, message: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let headers: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim() == "[[stage]]")
        .map(|(i, _)| i)
        .collect();
    let start = *headers.get(stage)?;
    let end = headers.get(stage + 1).copied().unwrap_or(lines.len());
    // `rules[1]` in the path: from the second `[[stage.params.rules]]` of the stage on.
    let mut from = start;
    for (table, index) in indexed_tables(message) {
        let header = format!(".{table}]]");
        if let Some(found) = (from..end)
            .filter(|&i| lines[i].trim_start().starts_with("[[") && lines[i].trim_end().ends_with(&header))
            .nth(index)
        {
            from = found;
        }
    }
    let region = from..end;
    let key = offending_key(message);
    let key_line = key.and_then(|key| {
        region.clone().find(|&i| {
            let line = lines[i].trim_start();
            line.strip_prefix(key.as_str())
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
    });
    let params_line = region.clone().find(|&i| {
        let line = lines[i].trim_start();
        line.starts_with("[stage.params") || line.starts_with("[[stage.params") || line.starts_with("params")
    });
    Some(key_line.or(params_line).unwrap_or(start) + 1)
}

/// The `name[i]` segments of the message's path, in order.
fn indexed_tables(message: &str) -> Vec<(String, usize)> {
    let Some(path) = message
        .split("invalid [params] at ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
    else {
        return Vec::new();
    };
    path.split('.')
        .filter_map(|segment| {
            let (name, rest) = segment.split_once('[')?;
            Some((name.to_owned(), rest.trim_end_matches(']').parse().ok()?))
        })
        .collect()
}

/// The key a serde message is about: an unknown field's name, else the last name in the
/// path (`invalid [params] at rules[1].min_priority: ...`).
fn offending_key(message: &str) -> Option<String> {
    if let Some(rest) = message.split("unknown field `").nth(1) {
        return rest.split('`').next().map(str::to_owned);
    }
    let path = message.split("invalid [params] at ").nth(1)?.split(':').next()?;
    let last = path.rsplit('.').next()?;
    let name = last.split('[').next()?;
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "name = \"p\"\n\n[[stage]]\ncomponent = \"builtin:seed-rules\"\n\n\
                          [[stage.params.rules]]\nname = \"a\"\nmin_priority = 1\nnodes = [\"m4\"]\n\
                          [[stage.params.rules]]\nname = \"b\"\nmin_priority = \"high\"\nnodes = [\"x\"]\n\n\
                          [[stage]]\ncomponent = \"builtin:thermal-guard\"\n[stage.params]\nmax_gpu_temp = 80\n";

    #[test]
    fn the_line_is_the_offending_keys_in_its_stage() {
        assert_eq!(
            params_line(
                POLICY,
                0,
                "invalid [params] at rules[1].min_priority: invalid type: string \"high\", expected u8"
            ),
            Some(12)
        );
        assert_eq!(
            params_line(
                POLICY,
                1,
                "invalid [params]: unknown field `max_gpu_temp`, expected one of ..."
            ),
            Some(18)
        );
        assert_eq!(
            params_line(POLICY, 0, "[params] rules: at least one rule is needed"),
            Some(6),
            "no key named: the params table"
        );
        assert_eq!(params_line(POLICY, 5, "x"), None);
    }
}
