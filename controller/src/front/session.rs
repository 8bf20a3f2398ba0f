//! A request's session, from whatever the client already sends, in a documented order:
//! `x-switchyard-session`; the coding agents' own headers (Claude Code's
//! `x-claude-code-session-id`, Codex's `x-codex-turn-metadata` `session_id` or `session-id`,
//! OpenCode's `x-session-id`, Dynamo's `x-dynamo-session-id`); then the body's OpenAI `user`
//! or Anthropic `metadata.user_id`. The first present wins. Where the agent says which
//! session spawned this one (a sub-agent), that parent comes too. Keys over 128 bytes are
//! kept as their first 64 bytes and a hash of the whole, so sessions stay apart.

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
    None
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
