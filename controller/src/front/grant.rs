//! What a caller may do: the models it may use and its priority cap, from its API key or a
//! keyless entry.

/// What a key allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub name: String,
    pub models: Vec<String>,
    pub max_priority: u8,
}

impl Grant {
    pub fn open() -> Self {
        Self {
            name: "open".to_owned(),
            models: vec!["*".to_owned()],
            max_priority: 9,
        }
    }

    pub fn allows(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == "*" || m == model)
    }
}
