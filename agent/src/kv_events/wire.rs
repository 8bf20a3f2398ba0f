//! vLLM's KV-cache event batches as they arrive on the wire: a multipart ZMQ message
//! `[topic, sequence (8 bytes, big-endian), msgpack payload]`, the payload an array
//! `[timestamp, [event, ...], data-parallel rank]` whose events are maps tagged by `"type"`
//! with default fields omitted (vLLM 0.32, checked against a real server).

use rmpv::Value;

/// A block's identity as vLLM publishes it: an integer (often above `i64::MAX`) or, in the
/// builds that hash with SHA-256, bytes (folded to 64 bits here).
pub type BlockHash = u64;

/// One change to the runtime's prefix cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvEvent {
    /// Full blocks were cached: `token_ids` holds `block_size` tokens per hash, in order, and
    /// the first block follows `parent` (none for a prompt's first block).
    Stored {
        hashes: Vec<BlockHash>,
        parent: Option<BlockHash>,
        token_ids: Vec<u32>,
        block_size: u32,
    },
    /// Blocks were evicted.
    Removed { hashes: Vec<BlockHash> },
    /// The whole cache was dropped.
    AllCleared,
}

/// A decoded message: its sequence number and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub seq: i64,
    pub events: Vec<KvEvent>,
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("a KV event message has {0} parts; vLLM sends [topic, sequence, payload]")]
    Parts(usize),
    #[error("a KV event message's sequence is {0} bytes; vLLM sends 8")]
    Sequence(usize),
    #[error("a KV event payload is not msgpack: {0}")]
    Msgpack(String),
    #[error("a KV event payload is not [timestamp, events, rank]")]
    Shape,
    #[error("a {kind} event lacks its {field}")]
    Field { kind: String, field: &'static str },
}

/// The 8-byte big-endian sequence number of a message (vLLM ends a replay with -1).
pub fn sequence(bytes: &[u8]) -> Result<i64, WireError> {
    let raw: [u8; 8] = bytes.try_into().map_err(|_| WireError::Sequence(bytes.len()))?;
    Ok(i64::from_be_bytes(raw))
}

/// A message's parts after the topic: sequence and payload.
pub fn decode(seq: &[u8], payload: &[u8]) -> Result<Batch, WireError> {
    let seq = sequence(seq)?;
    let value = rmpv::decode::read_value(&mut &payload[..]).map_err(|e| WireError::Msgpack(e.to_string()))?;
    let Value::Array(parts) = value else {
        return Err(WireError::Shape);
    };
    let Some(Value::Array(events)) = parts.get(1) else {
        return Err(WireError::Shape);
    };
    let events = events
        .iter()
        .filter_map(|e| event(e).transpose())
        .collect::<Result<_, _>>()?;
    Ok(Batch { seq, events })
}

/// Positions of the fields in the array layout older vLLM releases send
/// (`array_like=True`: `["BlockStored", block_hashes, parent_block_hash, token_ids,
/// block_size, lora_id, medium]`, `["BlockRemoved", block_hashes, medium]`).
const ARRAY_FIELDS: [(&str, &[&str]); 3] = [
    (
        "BlockStored",
        &["type", "block_hashes", "parent_block_hash", "token_ids", "block_size"],
    ),
    ("BlockRemoved", &["type", "block_hashes"]),
    ("AllBlocksCleared", &["type"]),
];

/// An event in the array layout as the map layout (the names above); others as they are.
fn as_map(value: &Value) -> std::borrow::Cow<'_, Value> {
    let Value::Array(items) = value else {
        return std::borrow::Cow::Borrowed(value);
    };
    let kind = items.first().and_then(Value::as_str).unwrap_or_default();
    let names = ARRAY_FIELDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(&[][..], |(_, names)| *names);
    std::borrow::Cow::Owned(Value::Map(
        names
            .iter()
            .zip(items)
            .map(|(name, item)| (Value::from(*name), item.clone()))
            .collect(),
    ))
}

/// One event; `None` for kinds this copy has no use for (e.g. a future one).
fn event(value: &Value) -> Result<Option<KvEvent>, WireError> {
    let value = &*as_map(value);
    let kind = field(value, "type").and_then(Value::as_str).unwrap_or_default();
    let missing = |field: &'static str| WireError::Field {
        kind: kind.to_owned(),
        field,
    };
    Ok(Some(match kind {
        "BlockStored" => KvEvent::Stored {
            hashes: hashes(value).ok_or_else(|| missing("block_hashes"))?,
            parent: field(value, "parent_block_hash").and_then(block_hash),
            token_ids: field(value, "token_ids")
                .and_then(Value::as_array)
                .ok_or_else(|| missing("token_ids"))?
                .iter()
                .map(|t| t.as_u64().map(|t| t as u32))
                .collect::<Option<_>>()
                .ok_or_else(|| missing("token_ids"))?,
            block_size: field(value, "block_size")
                .and_then(Value::as_u64)
                .filter(|&size| size > 0)
                .ok_or_else(|| missing("block_size"))? as u32,
        },
        "BlockRemoved" => KvEvent::Removed {
            hashes: hashes(value).ok_or_else(|| missing("block_hashes"))?,
        },
        "AllBlocksCleared" => KvEvent::AllCleared,
        _ => return Ok(None),
    }))
}

fn field<'a>(map: &'a Value, name: &str) -> Option<&'a Value> {
    map.as_map()?
        .iter()
        .find(|(key, _)| key.as_str() == Some(name))
        .map(|(_, value)| value)
        .filter(|value| !value.is_nil())
}

fn hashes(value: &Value) -> Option<Vec<BlockHash>> {
    field(value, "block_hashes")?
        .as_array()?
        .iter()
        .map(block_hash)
        .collect()
}

fn block_hash(value: &Value) -> Option<BlockHash> {
    match value {
        Value::Integer(n) => n.as_u64().or_else(|| n.as_i64().map(|n| n as u64)),
        Value::Binary(bytes) => Some(bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        })),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A payload the way vLLM 0.32 builds one: maps tagged by "type", defaults omitted.
    pub(crate) fn payload(events: Vec<Value>) -> Vec<u8> {
        let batch = Value::Array(vec![Value::F64(1.5), Value::Array(events), Value::Integer(0.into())]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &batch).expect("encode");
        bytes
    }

    pub(crate) fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(entries.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
    }

    pub(crate) fn stored(hashes: &[u64], parent: Option<u64>, tokens: &[u32], block_size: u32) -> Value {
        let mut entries = vec![
            ("type", Value::from("BlockStored")),
            (
                "block_hashes",
                Value::Array(hashes.iter().map(|h| Value::from(*h)).collect()),
            ),
            (
                "token_ids",
                Value::Array(tokens.iter().map(|t| Value::from(*t)).collect()),
            ),
            ("block_size", Value::from(block_size)),
        ];
        if let Some(parent) = parent {
            entries.push(("parent_block_hash", Value::from(parent)));
        }
        map(entries)
    }

    #[test]
    fn a_batch_of_each_kind_decodes_with_hashes_above_i64_max() {
        let big = u64::MAX - 7;
        let bytes = payload(vec![
            stored(&[big, 2], None, &[1, 2, 3, 4], 2),
            map(vec![
                ("type", Value::from("BlockRemoved")),
                ("block_hashes", Value::Array(vec![Value::from(big)])),
            ]),
            map(vec![("type", Value::from("AllBlocksCleared"))]),
            map(vec![("type", Value::from("SomethingNew"))]),
        ]);
        let batch = decode(&7_i64.to_be_bytes(), &bytes).expect("decodes");
        assert_eq!(batch.seq, 7);
        assert_eq!(
            batch.events,
            vec![
                KvEvent::Stored {
                    hashes: vec![big, 2],
                    parent: None,
                    token_ids: vec![1, 2, 3, 4],
                    block_size: 2
                },
                KvEvent::Removed { hashes: vec![big] },
                KvEvent::AllCleared,
            ]
        );
    }

    #[test]
    fn the_array_layout_of_older_vllm_releases_decodes_too() {
        let stored = Value::Array(vec![
            Value::from("BlockStored"),
            Value::Array(vec![Value::from(7u64)]),
            Value::Nil,
            Value::Array((0..4u32).map(Value::from).collect()),
            Value::from(4),
            Value::Nil,
            Value::from("GPU"),
        ]);
        let removed = Value::Array(vec![
            Value::from("BlockRemoved"),
            Value::Array(vec![Value::from(7u64)]),
            Value::from("GPU"),
        ]);
        let batch = decode(&1_i64.to_be_bytes(), &payload(vec![stored, removed])).expect("decodes");
        assert_eq!(
            batch.events,
            vec![
                KvEvent::Stored {
                    hashes: vec![7],
                    parent: None,
                    token_ids: vec![0, 1, 2, 3],
                    block_size: 4
                },
                KvEvent::Removed { hashes: vec![7] },
            ]
        );
    }

    #[test]
    fn bad_messages_say_what_is_wrong() {
        assert_eq!(decode(&[0; 4], &payload(vec![])), Err(WireError::Sequence(4)));
        assert_eq!(decode(&[0; 8], b"\x01"), Err(WireError::Shape));
        let no_tokens = payload(vec![map(vec![
            ("type", Value::from("BlockStored")),
            ("block_hashes", Value::Array(vec![Value::from(1)])),
            ("block_size", Value::from(16)),
        ])]);
        assert_eq!(
            decode(&[0; 8], &no_tokens).expect_err("no token_ids").to_string(),
            "a BlockStored event lacks its token_ids"
        );
    }
}
