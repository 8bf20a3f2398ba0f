//! `switchyard-agent init`: detect the machine (OS, architecture, CPU, RAM, NVIDIA GPUs and
//! their VRAM through NVML, Apple Silicon) and write a starting config with the seed
//! document's recommendations for that class of machine, for the user to edit. Joining a
//! controller (`init --bundle`) is `join_bundle`'s.

use switchyard_protocol::AgentTelemetry;

/// The seed's three classes of machine, plus a plain CPU box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineClass {
    /// Apple Silicon laptop: MLX, development, one request at a time.
    AppleSilicon,
    /// An NVIDIA GPU with 20 GB or more: vLLM, production.
    LargeGpu,
    /// A smaller NVIDIA GPU: quantized models through Ollama, batch.
    SmallGpu,
    /// No GPU: Ollama on the CPU.
    CpuOnly,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MachineFacts {
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub cpu_brand: String,
    pub cpu_cores: u32,
    pub ram_mb: u64,
    pub apple_silicon: bool,
    /// (name, VRAM in MB) of each NVIDIA GPU.
    pub gpus: Vec<(String, u64)>,
}

impl MachineFacts {
    pub fn from_telemetry(t: &AgentTelemetry) -> Self {
        Self {
            hostname: t.host.hostname.clone(),
            os: format!("{} {}", t.host.os, t.host.os_version).trim().to_owned(),
            arch: t.host.arch.clone(),
            cpu_brand: t.host.cpu_brand.clone(),
            cpu_cores: t.host.cpu_cores,
            ram_mb: t.system.mem_total_mb,
            apple_silicon: t.host.apple_silicon,
            gpus: t.gpus.iter().map(|g| (g.name.clone(), g.mem_total_mb)).collect(),
        }
    }

    pub fn class(&self) -> MachineClass {
        let vram = self.gpus.iter().map(|(_, mb)| *mb).max().unwrap_or(0);
        if self.apple_silicon {
            MachineClass::AppleSilicon
        } else if vram >= 20 * 1024 {
            MachineClass::LargeGpu
        } else if vram > 0 {
            MachineClass::SmallGpu
        } else {
            MachineClass::CpuOnly
        }
    }
}

/// A node name from a hostname: lowercase letters, digits and '-'.
pub fn node_name(hostname: &str) -> String {
    let name: String = hostname
        .split('.')
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches('-').to_owned();
    if name.is_empty() {
        "node".to_owned()
    } else {
        name.chars().take(63).collect()
    }
}

/// The port `mlx_lm.server` gets on Apple Silicon: its own default, 8080, is the controller's.
pub const MLX_PORT: u16 = 8090;

/// What plain `init` prints after the config: the node's name and how to join a controller.
pub fn unjoined_note(node: &str, hostname: Option<&str>, output: &std::path::Path) -> String {
    let from = match hostname {
        Some(hostname) => format!("from the hostname {hostname:?}; --node NAME picks another"),
        None => "from --node".to_owned(),
    };
    format!(
        "The node name is '{node}' ({from}).\n\
         {shown} has no [controller] section yet: the agent serves only its local API.\n\
         To join a controller: on the controller run `switchyard certs issue --dir certs --node {node}`, \
         copy certs/nodes/{node}/ to this machine as DIR, then run\n  \
         switchyard-agent init --bundle DIR --output {quoted}",
        shown = output.display(),
        quoted = shell_word(&output.display().to_string()),
    )
}

/// `word` as one shell word: as it is when that is safe, else single-quoted.
pub fn shell_word(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%~".contains(&b));
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// A suggested `[[models]]` entry: (logical, local, quantization, context length, tier).
type SuggestedModel = (&'static str, &'static str, &'static str, u32, &'static str);

/// What the starting config recommends for one class of machine.
struct Recommendation {
    /// The class's one-line description, after `# Class: `.
    title: &'static str,
    /// The `role` label.
    role: &'static str,
    concurrency: u32,
    max_tokens: u32,
    /// The body of the `[runtime]` section.
    runtime: String,
    models: Vec<SuggestedModel>,
}

/// The starting config for `facts`, as commented TOML.
pub fn recommend(facts: &MachineFacts, node: &str) -> String {
    let detected = detected_line(facts);
    let Recommendation {
        title,
        role,
        concurrency,
        max_tokens,
        runtime,
        models,
    } = recommendation(facts.class());
    let mut text = format!(
        "# Written by `switchyard-agent init`: a starting point, edit it.\n{detected}# Class: {title}\n\n\
         node = \"{node}\"\nmax_concurrency = {concurrency}\nmax_tokens = {max_tokens}\ntelemetry_interval_ms = 1000\n\n\
         [labels]\nrole = \"{role}\"\n\n[runtime]\n{runtime}"
    );
    for (logical, local, quantization, context, tier) in models {
        text.push_str(&format!(
            "\n[[models]]\nlogical = \"{logical}\"\nlocal = \"{local}\"\nquantization = \"{quantization}\"\ncontext_length = {context}\ntier = \"{tier}\"\n"
        ));
    }
    text
}

/// The `# Detected: ...` comment line describing the machine.
fn detected_line(facts: &MachineFacts) -> String {
    format!(
        "# Detected: {os} {arch}, {cpu} ({cores} cores), {ram} MB RAM{gpus}.\n",
        os = facts.os,
        arch = facts.arch,
        cpu = facts.cpu_brand,
        cores = facts.cpu_cores,
        ram = facts.ram_mb,
        gpus = if facts.gpus.is_empty() {
            ", no NVIDIA GPU".to_owned()
        } else {
            facts
                .gpus
                .iter()
                .map(|(n, mb)| format!(", {n} ({mb} MB VRAM)"))
                .collect::<String>()
        },
    )
}

/// The recommendation for a class of machine.
fn recommendation(class: MachineClass) -> Recommendation {
    match class {
        MachineClass::AppleSilicon => apple_silicon(),
        MachineClass::LargeGpu => large_gpu(),
        MachineClass::SmallGpu => small_gpu(),
        MachineClass::CpuOnly => cpu_only(),
    }
}

/// The recommendation for Apple Silicon (the seed's M4 MacBook).
fn apple_silicon() -> Recommendation {
    Recommendation {
        title: "Apple Silicon: like the seed's M4 MacBook (development, short interactive work, often away).",
        role: "development",
        concurrency: 1,
        max_tokens: 2048,
        runtime: format!(
            "kind = \"mlx\"\nbase_url = \"http://127.0.0.1:{MLX_PORT}\"\ncommand = [\"mlx_lm.server\", \"--model\", \"mlx-community/Qwen2.5-Coder-7B-Instruct-4bit\", \"--port\", \"{MLX_PORT}\"]\n"
        ),
        models: vec![
            (
                "qwen25-coder-7b",
                "mlx-community/Qwen2.5-Coder-7B-Instruct-4bit",
                "4bit",
                32768,
                "good",
            ),
            (
                "mistral-7b",
                "mlx-community/Mistral-7B-Instruct-v0.3-4bit",
                "4bit",
                32768,
                "good",
            ),
            (
                "phi-3-mini",
                "mlx-community/Phi-3-mini-4k-instruct-4bit",
                "4bit",
                4096,
                "fast",
            ),
        ],
    }
}

/// The recommendation for a 20 GB+ NVIDIA GPU (the seed's Ryzen + RTX 3090).
fn large_gpu() -> Recommendation {
    Recommendation {
        title: "A 20 GB+ NVIDIA GPU: like the seed's Ryzen + RTX 3090 (production, big models, vLLM).",
        role: "production",
        concurrency: 4,
        max_tokens: 4096,
        runtime: "kind = \"vllm\"\nbase_url = \"http://127.0.0.1:8000\"\ncommand = [\"vllm\", \"serve\", \"Qwen/Qwen2.5-Coder-32B-Instruct-AWQ\", \"--port\", \"8000\", \"--gpu-memory-utilization\", \"0.95\", \"--max-num-seqs\", \"4\"]\n".to_owned(),
        models: vec![(
            "qwen25-coder-32b",
            "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ",
            "awq",
            8192,
            "best",
        )],
    }
}

/// The recommendation for a smaller NVIDIA GPU (the seed's Xeon + RTX 4060 Ti).
fn small_gpu() -> Recommendation {
    Recommendation {
        title: "A smaller NVIDIA GPU: like the seed's Xeon + RTX 4060 Ti (quantized models, batch, always on).",
        role: "batch",
        concurrency: 2,
        max_tokens: 2048,
        runtime:
            "kind = \"ollama\"\nbase_url = \"http://127.0.0.1:11434\"\npull_on_demand = true\nkeep_alive = \"30m\"\n"
                .to_owned(),
        models: vec![
            (
                "qwen25-coder-7b",
                "qwen2.5-coder:7b-instruct-q4_K_M",
                "Q4_K_M",
                32768,
                "good",
            ),
            ("neural-chat-7b", "neural-chat:7b-v3.3-q4_K_M", "Q4_K_M", 8192, "fast"),
            ("mistral-7b", "mistral:7b-instruct-q4_K_M", "Q4_K_M", 32768, "good"),
        ],
    }
}

/// The recommendation for a machine without a GPU.
fn cpu_only() -> Recommendation {
    Recommendation {
        title: "No GPU: quantized models on the CPU through Ollama, one request at a time.",
        role: "batch",
        concurrency: 1,
        max_tokens: 2048,
        runtime:
            "kind = \"ollama\"\nbase_url = \"http://127.0.0.1:11434\"\npull_on_demand = true\nkeep_alive = \"30m\"\n"
                .to_owned(),
        models: vec![(
            "phi-3-mini",
            "phi3:3.8b-mini-4k-instruct-q4_K_M",
            "Q4_K_M",
            4096,
            "fast",
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AgentConfig, RuntimeKind};

    fn facts(apple: bool, gpus: &[(&str, u64)]) -> MachineFacts {
        MachineFacts {
            hostname: "Ryzen-Box.local".into(),
            os: "Linux".into(),
            arch: "x86_64".into(),
            cpu_brand: "AMD Ryzen 9 3900X".into(),
            cpu_cores: 24,
            ram_mb: 65536,
            apple_silicon: apple,
            gpus: gpus.iter().map(|(n, m)| ((*n).to_owned(), *m)).collect(),
        }
    }

    #[test]
    fn each_class_of_machine_gets_the_seeds_recommendation_as_a_valid_config() {
        let cases = [
            (facts(true, &[]), RuntimeKind::Mlx, 1, 2048, "development"),
            (
                facts(false, &[("NVIDIA GeForce RTX 3090", 24576)]),
                RuntimeKind::Vllm,
                4,
                4096,
                "production",
            ),
            (
                facts(false, &[("NVIDIA GeForce RTX 4060 Ti", 16380)]),
                RuntimeKind::Ollama,
                2,
                2048,
                "batch",
            ),
            (facts(false, &[]), RuntimeKind::Ollama, 1, 2048, "batch"),
        ];
        for (facts, kind, concurrency, max_tokens, role) in cases {
            let text = recommend(&facts, &node_name(&facts.hostname));
            let config = AgentConfig::parse(&text, "init").unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(config.runtime.kind, kind, "{text}");
            assert_eq!((config.max_concurrency, config.max_tokens), (concurrency, max_tokens));
            assert_eq!(config.labels["role"], role);
            assert_eq!(config.node, "ryzen-box");
            assert!(!config.models.is_empty());
        }
    }

    #[test]
    fn apple_silicon_runs_mlx_on_a_port_other_than_the_controllers_8080() {
        let text = recommend(&facts(true, &[]), "m4");
        let config = AgentConfig::parse(&text, "init").expect("parses");
        assert_eq!(config.base_url(), format!("http://127.0.0.1:{MLX_PORT}"));
        let command = config.runtime.command.expect("mlx_lm.server is supervised");
        let port = command.iter().skip_while(|a| *a != "--port").nth(1).expect("--port");
        assert_eq!(port, &MLX_PORT.to_string());
        assert!(!text.contains("8080"), "{text}");
    }

    #[test]
    fn plain_init_says_the_node_name_and_the_one_command_to_join() {
        let note = unjoined_note("ryzen-box", Some("Ryzen-Box.local"), std::path::Path::new("agent.toml"));
        assert!(
            note.contains("The node name is 'ryzen-box' (from the hostname \"Ryzen-Box.local\""),
            "{note}"
        );
        assert!(note.contains("agent.toml has no [controller] section yet"), "{note}");
        assert!(
            note.contains("`switchyard certs issue --dir certs --node ryzen-box`"),
            "{note}"
        );
        assert!(
            note.ends_with("switchyard-agent init --bundle DIR --output agent.toml"),
            "{note}"
        );
        let spaced = unjoined_note(
            "m4",
            None,
            std::path::Path::new("/Users/a/Library/Application Support/Switchyard/agent.toml"),
        );
        assert!(spaced.contains("(from --node)"), "{spaced}");
        assert!(
            spaced.ends_with("--output '/Users/a/Library/Application Support/Switchyard/agent.toml'"),
            "{spaced}"
        );
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("/etc/switchyard/agent.toml"), "/etc/switchyard/agent.toml");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
