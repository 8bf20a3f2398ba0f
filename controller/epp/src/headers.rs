//! Envoy's header messages, both ways: reading a request's headers (values arrive as
//! `raw_value` bytes from current Envoys, as `value` from older ones) and building the
//! mutations and metadata the picker answers with.

use envoy_types::pb::envoy::config::core::v3::{HeaderMap as EnvoyHeaders, HeaderValue, HeaderValueOption, Metadata};
use envoy_types::pb::envoy::service::ext_proc::v3::HeaderMutation;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

/// Envoy's headers as an `http::HeaderMap` (pseudo-headers such as `:path` left out) and the
/// request's path.
pub fn read(headers: Option<&EnvoyHeaders>) -> (http::HeaderMap, String) {
    let mut map = http::HeaderMap::new();
    let mut path = String::new();
    for header in headers.map(|h| h.headers.as_slice()).unwrap_or_default() {
        let value = if header.raw_value.is_empty() {
            header.value.as_bytes()
        } else {
            header.raw_value.as_slice()
        };
        if header.key == ":path" {
            path = String::from_utf8_lossy(value)
                .split('?')
                .next()
                .unwrap_or_default()
                .to_owned();
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(header.key.as_bytes()),
            http::HeaderValue::from_bytes(value),
        ) {
            map.append(name, value);
        }
    }
    (map, path)
}

/// `:status` from a response's headers (0 when absent).
pub fn status(headers: Option<&EnvoyHeaders>) -> u16 {
    headers
        .map(|h| h.headers.as_slice())
        .unwrap_or_default()
        .iter()
        .find(|h| h.key == ":status")
        .and_then(|h| {
            let value = if h.raw_value.is_empty() {
                h.value.as_bytes()
            } else {
                &h.raw_value
            };
            std::str::from_utf8(value).ok()?.parse().ok()
        })
        .unwrap_or(0)
}

/// Set each (name, value), replacing what the request had.
pub fn set(pairs: &[(&str, String)]) -> HeaderMutation {
    HeaderMutation {
        set_headers: pairs
            .iter()
            .map(|(key, value)| HeaderValueOption {
                header: Some(HeaderValue {
                    key: (*key).to_owned(),
                    raw_value: value.clone().into_bytes(),
                    ..Default::default()
                }),
                // OVERWRITE_IF_EXISTS_OR_ADD
                append_action: 2,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// The gateway's subset hint: the endpoints (`host:port`) it allows, from the filter metadata
/// namespace `envoy.lb.subset_hint`, key `x-gateway-destination-endpoint-subset` (a list of
/// strings, or one comma-separated string), as the endpoint-picker protocol puts it.
pub fn subset_hint(metadata: Option<&Metadata>) -> Option<Vec<String>> {
    let hint = metadata?
        .filter_metadata
        .get(SUBSET_NAMESPACE)?
        .fields
        .get(crate::SUBSET_KEY)?;
    Some(match hint.kind.as_ref()? {
        Kind::ListValue(list) => list
            .values
            .iter()
            .filter_map(|v| match &v.kind {
                Some(Kind::StringValue(s)) => Some(s.trim().to_owned()),
                _ => None,
            })
            .collect(),
        Kind::StringValue(s) => s
            .split(',')
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect(),
        _ => Vec::new(),
    })
}

const SUBSET_NAMESPACE: &str = "envoy.lb.subset_hint";

/// `{namespace: {key: value}}` as dynamic metadata.
pub fn metadata(namespace: &str, key: &str, value: &str) -> Struct {
    let inner = Struct {
        fields: [(
            key.to_owned(),
            Value {
                kind: Some(Kind::StringValue(value.to_owned())),
            },
        )]
        .into(),
    };
    Struct {
        fields: [(
            namespace.to_owned(),
            Value {
                kind: Some(Kind::StructValue(inner)),
            },
        )]
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_plain_values_are_read_and_the_path_loses_its_query() {
        let headers = EnvoyHeaders {
            headers: vec![
                HeaderValue {
                    key: ":path".into(),
                    raw_value: b"/v1/chat/completions?x=1".to_vec(),
                    ..Default::default()
                },
                HeaderValue {
                    key: "x-claude-code-session-id".into(),
                    value: "s-1".into(),
                    ..Default::default()
                },
                HeaderValue {
                    key: ":status".into(),
                    raw_value: b"429".to_vec(),
                    ..Default::default()
                },
            ],
        };
        let (map, path) = read(Some(&headers));
        assert_eq!(path, "/v1/chat/completions");
        assert_eq!(
            map.get("x-claude-code-session-id").map(|v| v.as_bytes()),
            Some(&b"s-1"[..])
        );
        assert_eq!(status(Some(&headers)), 429);
        assert_eq!(status(None), 0);
    }
}
