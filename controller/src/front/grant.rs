//! What a caller may do: the models it may use and its priority cap, from its API key or a
//! keyless entry.

/// What a key allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub name: String,
    pub models: Vec<String>,
    pub max_priority: u8,
    /// The key's share of the queue beside other keys of the same priority (1 by default).
    pub weight: u32,
    /// Whether the key's streams continue on another node when their node is lost.
    pub continue_streams: bool,
}

impl Grant {
    pub fn open() -> Self {
        Self {
            name: "open".to_owned(),
            models: vec!["*".to_owned()],
            max_priority: 9,
            weight: 1,
            continue_streams: true,
        }
    }

    /// Where this grant's requests queue, and with what weight.
    pub fn flow(&self) -> super::admission::Flow {
        super::admission::Flow::new(&self.name, self.weight)
    }

    pub fn allows(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == "*" || m == model)
    }
}
