//! A request's session, from whatever the client already sends, in a documented order:
//! `x-switchyard-session`; the coding agents' own headers (Claude Code's
//! `x-claude-code-session-id`, Codex's `x-codex-turn-metadata` `session_id` or `session-id`,
//! OpenCode's `x-session-id`, Dynamo's `x-dynamo-session-id`); then the body's OpenAI `user`
//! or Anthropic `metadata.user_id`. The first present wins. Where the agent says which
//! session spawned this one (a sub-agent), that parent comes too. With none of them, a
//! conversation long enough for its cache to matter (a system prompt and first user message
//! of 1 KiB or more) is its own session: `prompt-` and a hash of those two, the same for
//! every turn of it. Keys over 128 bytes are kept as their first 64 bytes and a hash of the
//! whole, so sessions stay apart.

use http::HeaderMap;
use serde_json::Value;

/// The longest session key kept as sent.
pub const MAX_SESSION_BYTES: usize = 128;

/// Where a session key came from (a request's `session-source` tag, for policies and the
/// decision record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionSource {
    Switchyard,
    ClaudeCode,
    Codex,
    OpenCode,
    Dynamo,
    OpenAiUser,
    AnthropicUser,
    /// No session was sent: the hash of the system prompt and the first user message.
    PromptHash,
}

impl SessionSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionSource::Switchyard => "switchyard",
            SessionSource::ClaudeCode => "claude-code",
            SessionSource::Codex => "codex",
            SessionSource::OpenCode => "opencode",
            SessionSource::Dynamo => "dynamo",
            SessionSource::OpenAiUser => "openai-user",
            SessionSource::AnthropicUser => "anthropic-user",
            SessionSource::PromptHash => "prompt-hash",
        }
    }
}

/// A request's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub key: String,
    pub source: SessionSource,
    /// The session that spawned this one (a sub-agent's parent), where the agent says.
    pub parent: Option<String>,
}

/// A header's value, trimmed; `None` when absent, empty or not text.
pub(super) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// A session key of bounded size that tells the same sessions apart as `raw` does.
pub fn bounded(raw: &str) -> String {
    if raw.len() <= MAX_SESSION_BYTES {
        return raw.to_owned();
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(raw.as_bytes());
    format!("{}~{}", super::clip::clip(raw, 64), hex::encode(&digest[..8]))
}

/// Codex's turn metadata (JSON): its `session_id`, and `parent_thread_id` for a sub-agent.
fn codex_turn(headers: &HeaderMap) -> Option<(String, Option<String>)> {
    let metadata: Value = serde_json::from_str(header(headers, "x-codex-turn-metadata")?).ok()?;
    let session = metadata["session_id"].as_str().filter(|s| !s.is_empty())?.to_owned();
    let parent = metadata["parent_thread_id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    Some((session, parent))
}

/// The request's session, if the client sent one anywhere Switchyard knows.
pub fn session_of(headers: &HeaderMap, body: &Value) -> Option<Session> {
    let found = |key: &str, source, parent: Option<&str>| {
        Some(Session {
            key: bounded(key),
            source,
            parent: parent.map(bounded),
        })
    };
    if let Some(key) = header(headers, "x-switchyard-session") {
        return found(key, SessionSource::Switchyard, None);
    }
    if let Some(key) = header(headers, "x-claude-code-session-id") {
        // A sub-agent's parent: the agent that spawned it, else the main session.
        let parent = header(headers, "x-claude-code-parent-agent-id")
            .or_else(|| header(headers, "x-claude-code-agent-id").map(|_| key));
        return found(key, SessionSource::ClaudeCode, parent);
    }
    if let Some((key, parent)) = codex_turn(headers) {
        let parent = parent.or_else(|| header(headers, "x-codex-parent-thread-id").map(str::to_owned));
        return found(&key, SessionSource::Codex, parent.as_deref());
    }
    if let Some(key) = header(headers, "session-id") {
        return found(key, SessionSource::Codex, header(headers, "x-codex-parent-thread-id"));
    }
    if let Some(key) = header(headers, "x-session-id") {
        return found(key, SessionSource::OpenCode, None);
    }
    if let Some(key) = header(headers, "x-dynamo-session-id") {
        return found(
            key,
            SessionSource::Dynamo,
            header(headers, "x-dynamo-parent-session-id"),
        );
    }
    if let Some(user) = body["user"].as_str().filter(|u| !u.is_empty()) {
        return found(user, SessionSource::OpenAiUser, None);
    }
    if let Some(user) = body["metadata"]["user_id"].as_str().filter(|u| !u.is_empty()) {
        return found(user, SessionSource::AnthropicUser, None);
    }
    conversation_hash(body).map(|key| Session {
        key,
        source: SessionSource::PromptHash,
        parent: None,
    })
}

/// The shortest system prompt and first user message that make a conversation its own
/// session when the client sent none (shorter ones gain nothing from a warm cache).
pub const PROMPT_HASH_MIN_BYTES: usize = 1024;

/// `prompt-` and 16 hex digits of the SHA-256 of the system prompt (Anthropic's `system`,
/// OpenAI's `instructions`, or the first `system`/`developer` message) and the first user
/// message; `None` below [`PROMPT_HASH_MIN_BYTES`] or without messages.
fn conversation_hash(body: &Value) -> Option<String> {
    let messages = body["messages"].as_array().or_else(|| body["input"].as_array())?;
    let text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let system = ["system", "instructions"]
        .iter()
        .map(|key| text(&body[*key]))
        .find(|s| !s.is_empty())
        .or_else(|| {
            messages
                .iter()
                .find(|m| matches!(m["role"].as_str(), Some("system" | "developer")))
                .map(|m| text(&m["content"]))
        })
        .unwrap_or_default();
    let first_user = messages
        .iter()
        .find(|m| m["role"] == "user")
        .map(|m| text(&m["content"]))?;
    if system.len() + first_user.len() < PROMPT_HASH_MIN_BYTES {
        return None;
    }
    use sha2::Digest;
    let mut digest = sha2::Sha256::new();
    digest.update(system.as_bytes());
    digest.update([0x1e]);
    digest.update(first_user.as_bytes());
    Some(format!("prompt-{}", hex::encode(&digest.finalize()[..8])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        map
    }

    #[test]
    fn a_long_conversation_without_a_session_is_its_own_session_on_every_turn() {
        let system = "You are a careful coding agent. ".repeat(40);
        let turn = |history: &[&str]| {
            let mut messages = vec![serde_json::json!({"role": "system", "content": system})];
            for (i, text) in history.iter().enumerate() {
                let role = if i % 2 == 0 { "user" } else { "assistant" };
                messages.push(serde_json::json!({"role": role, "content": text}));
            }
            serde_json::json!({ "model": "m", "messages": messages })
        };
        let none = HeaderMap::new();
        let first = session_of(&none, &turn(&["fix the parser"])).expect("a session");
        assert_eq!(first.source, SessionSource::PromptHash);
        assert!(
            first.key.starts_with("prompt-") && first.key.len() == 23,
            "{}",
            first.key
        );
        let later = session_of(&none, &turn(&["fix the parser", "done", "now the tests"])).expect("a session");
        assert_eq!(later.key, first.key, "every turn of it");
        let other = session_of(&none, &turn(&["write the docs"])).expect("a session");
        assert_ne!(other.key, first.key, "another conversation");
        // Anthropic's top-level system prompt counts the same way.
        let anthropic = serde_json::json!({"model": "m", "system": system, "messages": [{"role": "user", "content": "fix the parser"}]});
        assert_eq!(session_of(&none, &anthropic).expect("a session").key, first.key);
        // A short conversation gains nothing from a warm cache: no session.
        let short = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(session_of(&none, &short), None);
        // A session the client sends wins.
        let mut sent = HeaderMap::new();
        sent.insert("x-session-id", "oc-1".parse().expect("value"));
        assert_eq!(
            session_of(&sent, &turn(&["fix the parser"])).expect("a session").key,
            "oc-1"
        );
    }

    #[test]
    fn each_agents_own_header_gives_the_session_in_the_documented_order() {
        let body = serde_json::json!({ "user": "alice" });
        let of = |pairs: &[(&str, &str)]| session_of(&headers(pairs), &body).expect("a session");
        let claude = of(&[("x-claude-code-session-id", "cc-1")]);
        assert_eq!(
            (claude.key.as_str(), claude.source),
            ("cc-1", SessionSource::ClaudeCode)
        );
        let sub = of(&[
            ("x-claude-code-session-id", "cc-1"),
            ("x-claude-code-agent-id", "agent-7"),
            ("x-claude-code-parent-agent-id", "agent-2"),
        ]);
        assert_eq!(sub.parent.as_deref(), Some("agent-2"));
        let codex = of(&[(
            "x-codex-turn-metadata",
            r#"{"session_id": "cx-9", "thread_id": "t-2", "parent_thread_id": "t-1", "turn_id": "u"}"#,
        )]);
        assert_eq!(
            (codex.key.as_str(), codex.source, codex.parent.as_deref()),
            ("cx-9", SessionSource::Codex, Some("t-1"))
        );
        assert_eq!(of(&[("session-id", "cx-3")]).source, SessionSource::Codex);
        assert_eq!(of(&[("x-session-id", "oc-1")]).source, SessionSource::OpenCode);
        assert_eq!(of(&[("x-dynamo-session-id", "d-1")]).source, SessionSource::Dynamo);
        // Switchyard's own header first; the body's `user` last.
        let ours = of(&[("x-switchyard-session", "s"), ("x-claude-code-session-id", "cc-1")]);
        assert_eq!((ours.key.as_str(), ours.source), ("s", SessionSource::Switchyard));
        let user = of(&[]);
        assert_eq!((user.key.as_str(), user.source), ("alice", SessionSource::OpenAiUser));
        let anthropic = session_of(
            &HeaderMap::new(),
            &serde_json::json!({ "metadata": { "user_id": "u-1" } }),
        )
        .expect("a session");
        assert_eq!(anthropic.source, SessionSource::AnthropicUser);
        assert!(session_of(&HeaderMap::new(), &serde_json::json!({})).is_none());
        // Malformed Codex metadata is no session (and no error).
        assert!(session_of(&headers(&[("x-codex-turn-metadata", "{oops")]), &serde_json::json!({})).is_none());
    }

    #[test]
    fn a_long_key_is_bounded_and_stays_distinct() {
        let a = bounded(&format!("{}a", "k".repeat(5000)));
        let b = bounded(&format!("{}b", "k".repeat(5000)));
        assert!(a.len() <= MAX_SESSION_BYTES && b.len() <= MAX_SESSION_BYTES);
        assert_ne!(a, b);
        assert_eq!(bounded("short"), "short");
    }
}
