//! Rewriting the one thing the data plane changes in a request: the top-level `model` value,
//! spliced into the client's bytes so that everything else (key order, spacing, numbers as
//! written, fields Switchyard does not know) reaches the runtime exactly as sent.

use bytes::{Bytes, BytesMut};

/// Why the body's `model` could not be found. The front door has already parsed the body as
/// a JSON object with a string `model`, so these mean a bug or a hostile body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelFieldError {
    #[error("the request body is not a JSON object")]
    NotAnObject,
    #[error("the request body's JSON ends early")]
    Truncated,
    #[error("the request body names `model` more than once")]
    Duplicate,
    #[error("the request body has no top-level `model`")]
    Missing,
}

/// `body` with its top-level `model` value replaced by the JSON string `model`.
pub fn replace_model(body: &Bytes, model: &str) -> Result<Bytes, ModelFieldError> {
    let (start, end) = model_value_span(body)?;
    let quoted = serde_json::to_string(model).map_err(|_| ModelFieldError::Missing)?;
    let mut out = BytesMut::with_capacity(body.len() - (end - start) + quoted.len());
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(quoted.as_bytes());
    out.extend_from_slice(&body[end..]);
    Ok(out.freeze())
}

/// Byte range of the top-level `model` value.
fn model_value_span(body: &[u8]) -> Result<(usize, usize), ModelFieldError> {
    let mut at = skip_space(body, 0);
    if body.get(at) != Some(&b'{') {
        return Err(ModelFieldError::NotAnObject);
    }
    at = skip_space(body, at + 1);
    if body.get(at) == Some(&b'}') {
        return Err(ModelFieldError::Missing);
    }
    let mut found = None;
    loop {
        let key_start = at;
        at = skip_string(body, at)?;
        let is_model = key_is_model(&body[key_start..at]);
        at = skip_space(body, at);
        if body.get(at) != Some(&b':') {
            return Err(ModelFieldError::Truncated);
        }
        let value_start = skip_space(body, at + 1);
        let value_end = skip_value(body, value_start)?;
        if is_model {
            if found.is_some() {
                return Err(ModelFieldError::Duplicate);
            }
            found = Some((value_start, value_end));
        }
        at = skip_space(body, value_end);
        match body.get(at) {
            Some(b',') => at = skip_space(body, at + 1),
            Some(b'}') => return found.ok_or(ModelFieldError::Missing),
            _ => return Err(ModelFieldError::Truncated),
        }
    }
}

fn key_is_model(quoted: &[u8]) -> bool {
    if quoted == b"\"model\"" {
        return true;
    }
    // A key written with escapes (`"mod\u0065l"`) is still `model`.
    quoted.contains(&b'\\') && serde_json::from_slice::<String>(quoted).is_ok_and(|k| k == "model")
}

fn skip_space(body: &[u8], mut at: usize) -> usize {
    while matches!(body.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// `at` is on an opening quote; returns the index after the closing one.
fn skip_string(body: &[u8], at: usize) -> Result<usize, ModelFieldError> {
    if body.get(at) != Some(&b'"') {
        return Err(ModelFieldError::Truncated);
    }
    let mut i = at + 1;
    loop {
        match memchr::memchr2(b'"', b'\\', &body[i.min(body.len())..]) {
            None => return Err(ModelFieldError::Truncated),
            Some(offset) => {
                i += offset;
                if body[i] == b'\\' {
                    i += 2;
                } else {
                    return Ok(i + 1);
                }
            }
        }
    }
}

/// Index after the JSON value that starts at `at`.
fn skip_value(body: &[u8], at: usize) -> Result<usize, ModelFieldError> {
    match body.get(at) {
        None => Err(ModelFieldError::Truncated),
        Some(b'"') => skip_string(body, at),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut i = at;
            while let Some(&byte) = body.get(i) {
                match byte {
                    b'"' => {
                        i = skip_string(body, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            Err(ModelFieldError::Truncated)
        }
        Some(_) => {
            let mut i = at;
            while let Some(&byte) = body.get(i) {
                if matches!(byte, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    return Ok(i);
                }
                i += 1;
            }
            Err(ModelFieldError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replaced(body: &str, model: &str) -> Result<String, ModelFieldError> {
        replace_model(&Bytes::copy_from_slice(body.as_bytes()), model)
            .map(|b| String::from_utf8(b.to_vec()).expect("utf-8"))
    }

    #[test]
    fn only_the_model_value_changes_and_every_other_byte_stays() {
        let body = "{ \"messages\" : [{\"role\":\"user\",\"content\":\"say \\\"model\\\": {x}\"}],\n  \"model\":\"qwen\" , \"top_k\":1.50e0, \"tools\":[{\"model\":\"inner\"}]}";
        let out = replaced(body, "Qwen/Qwen2.5 \"7B\"").expect("found");
        assert_eq!(out, body.replace("\"qwen\"", "\"Qwen/Qwen2.5 \\\"7B\\\"\""));
        let value: serde_json::Value = serde_json::from_str(&out).expect("still JSON");
        assert_eq!(value["model"], "Qwen/Qwen2.5 \"7B\"");
        assert_eq!(value["tools"][0]["model"], "inner");
    }

    #[test]
    fn escaped_keys_nested_models_and_bad_bodies_are_handled() {
        assert_eq!(
            replaced(r#"{"mod\u0065l":"a"}"#, "b").expect("found"),
            r#"{"mod\u0065l":"b"}"#
        );
        assert_eq!(replaced(r#"{"x":{"model":"a"}}"#, "b"), Err(ModelFieldError::Missing));
        assert_eq!(
            replaced(r#"{"model":"a","model":"c"}"#, "b"),
            Err(ModelFieldError::Duplicate)
        );
        assert_eq!(replaced(r#"["model"]"#, "b"), Err(ModelFieldError::NotAnObject));
        assert_eq!(replaced(r#"{"model":"a""#, "b"), Err(ModelFieldError::Truncated));
        assert_eq!(replaced(r#"{"a":"\"#, "b"), Err(ModelFieldError::Truncated));
        assert_eq!(replaced("{}", "b"), Err(ModelFieldError::Missing));
    }

    #[test]
    fn for_many_generated_bodies_only_the_model_changes() {
        let mut rng = crate::generated::Rng::new(0x5eed_cafe_f00d_d00d);
        for case in 0..2000 {
            let mut object = serde_json::Map::new();
            for _ in 0..rng.below(5) {
                let key = rng.text();
                if key != "model" {
                    object.insert(key, rng.value(0));
                }
            }
            object.insert("model".to_owned(), serde_json::json!(rng.text()));
            let value = serde_json::Value::Object(object);
            let body = if rng.below(2) == 0 {
                serde_json::to_string(&value)
            } else {
                serde_json::to_string_pretty(&value)
            }
            .expect("serialise");
            let local = rng.text();
            let out = replaced(&body, &local).unwrap_or_else(|e| panic!("case {case}: {e}: {body}"));
            // (Compared with the body as parsed: serde_json's float parsing does not round-trip
            // every generated number exactly, on either side.)
            let mut expected: serde_json::Value = serde_json::from_str(&body).expect("the body is JSON");
            expected["model"] = serde_json::json!(local);
            let got: serde_json::Value = serde_json::from_str(&out).expect("still JSON");
            assert_eq!(got, expected, "case {case}: {body}");
            // Every byte outside the model value is the client's: the bodies share a prefix
            // and a suffix that leave at most the model value's length different.
            let model_text = serde_json::to_string(&value["model"]).expect("model");
            let (a, b) = (body.as_bytes(), out.as_bytes());
            let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
            let suffix = a[prefix..]
                .iter()
                .rev()
                .zip(b[prefix..].iter().rev())
                .take_while(|(x, y)| x == y)
                .count();
            assert!(
                prefix + suffix + model_text.len() >= a.len(),
                "case {case}: {body} -> {out}"
            );
        }
    }

    #[test]
    fn any_prefix_of_a_body_is_refused_without_panicking() {
        let body = r#"{"model": "m", "messages": [{"content": "a\\b\"c", "n": [1, {"x": null}]}], "stream": true}"#;
        for end in 0..body.len() {
            let _ = replaced(&body[..end], "x");
        }
        assert!(replaced(body, "x").is_ok());
    }
}
