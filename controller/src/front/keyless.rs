//! Keyless access for clients that cannot send a key (the `ollama` CLI and most Ollama front
//! ends): `[[keyless]]` entries grant requests that carry no `Authorization` header, from
//! listed networks (the TCP peer's address, never a forwarded header), on listed APIs, the
//! models and priority cap of a key. A request that does send a key is always checked as one.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use super::ClientApi;
use super::grant::Grant;

/// One `[[keyless]]` entry of the controller config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeylessConfig {
    /// Shown in logs and metrics in place of a key's name.
    pub name: String,
    /// Networks (CIDR, e.g. `192.168.1.0/24`, or single addresses) whose requests need no key.
    pub networks: Vec<String>,
    /// The APIs it covers: `ollama` (the default) and/or `openai`.
    #[serde(default = "ollama_only")]
    pub apis: Vec<KeylessApi>,
    /// Logical models it may use; `["*"]` (the default) for all.
    #[serde(default = "all_models")]
    pub models: Vec<String>,
    /// Highest priority (0-9) it may ask for (default 5: below keyed production work).
    #[serde(default = "default_priority")]
    pub max_priority: u8,
}

/// An API a keyless entry covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeylessApi {
    Ollama,
    Openai,
}

fn ollama_only() -> Vec<KeylessApi> {
    vec![KeylessApi::Ollama]
}

fn all_models() -> Vec<String> {
    vec!["*".to_owned()]
}

fn default_priority() -> u8 {
    5
}

/// The most IPv4 addresses one keyless entry may cover together (sixteen /8 networks).
const MAX_KEYLESS_V4_ADDRESSES: u64 = 16 << 24;

/// A resolved `[[keyless]]` entry.
#[derive(Debug, Clone)]
pub struct KeylessRule {
    networks: Vec<IpNet>,
    apis: Vec<KeylessApi>,
    grant: Grant,
}

impl KeylessRule {
    /// Resolve entry `index`; errors name the entry, the field and the fix.
    pub fn from_config(index: usize, entry: &KeylessConfig) -> Result<Self, String> {
        let at = format!("keyless[{index}] ({})", entry.name);
        if entry.networks.is_empty() {
            return Err(format!(
                "{at}: `networks` is empty; list the networks whose clients need no key, e.g. [\"192.168.1.0/24\"]"
            ));
        }
        let networks = entry
            .networks
            .iter()
            .map(|text| {
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{at}: networks: {text:?} is not a network; use CIDR such as \"192.168.1.0/24\" or one address"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(any) = networks.iter().find(|n| n.prefix_len() == 0) {
            return Err(format!(
                "{at}: networks: {any} is every address; list the networks you trust instead"
            ));
        }
        // The broadest private networks are 10.0.0.0/8 and fc00::/7: anything broader
        // reaches into the public internet, and so does a list that adds up to most of it.
        if let Some(broad) = networks.iter().find(|n| match n {
            IpNet::V4(v4) => v4.prefix_len() < 8,
            IpNet::V6(v6) => v6.prefix_len() < 7,
        }) {
            return Err(format!(
                "{at}: networks: {broad} is broader than any private network (10.0.0.0/8, fc00::/7); list the networks you trust instead"
            ));
        }
        let v4_addresses: u64 = networks
            .iter()
            .filter_map(|n| match n {
                IpNet::V4(v4) => Some(1u64 << (32 - u32::from(v4.prefix_len()))),
                IpNet::V6(_) => None,
            })
            .sum();
        if v4_addresses > MAX_KEYLESS_V4_ADDRESSES {
            return Err(format!(
                "{at}: networks: together they cover {v4_addresses} IPv4 addresses, more than {MAX_KEYLESS_V4_ADDRESSES} (sixteen /8 networks); list the networks you trust instead"
            ));
        }
        if entry.max_priority > 9 {
            return Err(format!("{at}: max_priority must be 0-9"));
        }
        Ok(Self {
            networks,
            apis: entry.apis.clone(),
            grant: Grant {
                name: entry.name.clone(),
                models: entry.models.clone(),
                max_priority: entry.max_priority,
                weight: 1,
                continue_streams: true,
            },
        })
    }

    /// The grant for a keyless request from `peer` on `api`, if this entry covers it.
    pub fn grant_for(&self, peer: IpAddr, api: ClientApi) -> Option<&Grant> {
        let wanted = match api {
            ClientApi::Ollama => KeylessApi::Ollama,
            ClientApi::OpenAi => KeylessApi::Openai,
            // Anthropic's clients always send a key.
            ClientApi::Anthropic => return None,
        };
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
            v4 => v4,
        };
        (self.apis.contains(&wanted) && self.networks.iter().any(|n| n.contains(&peer))).then_some(&self.grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(networks: &[&str]) -> KeylessConfig {
        KeylessConfig {
            name: "lan".into(),
            networks: networks.iter().map(|s| (*s).to_owned()).collect(),
            apis: ollama_only(),
            models: all_models(),
            max_priority: 5,
        }
    }

    #[test]
    fn keyless_covers_only_its_networks_and_apis() {
        let rule = KeylessRule::from_config(0, &entry(&["192.168.1.0/24", "10.0.0.7"])).expect("valid");
        let lan: IpAddr = "192.168.1.20".parse().expect("ip");
        let mapped: IpAddr = "::ffff:192.168.1.20".parse().expect("ip");
        assert_eq!(
            rule.grant_for(lan, ClientApi::Ollama).map(|g| g.name.as_str()),
            Some("lan")
        );
        assert!(
            rule.grant_for(mapped, ClientApi::Ollama).is_some(),
            "IPv4 seen through a dual-stack socket"
        );
        assert!(
            rule.grant_for("10.0.0.7".parse().expect("ip"), ClientApi::Ollama)
                .is_some()
        );
        assert!(
            rule.grant_for("10.0.0.8".parse().expect("ip"), ClientApi::Ollama)
                .is_none()
        );
        assert!(
            rule.grant_for(lan, ClientApi::OpenAi).is_none(),
            "OpenAI clients can send keys"
        );
    }

    #[test]
    fn bad_entries_name_the_field_and_the_fix() {
        let err = KeylessRule::from_config(2, &entry(&["192.168.1.0/33"])).expect_err("bad");
        assert_eq!(
            err,
            "keyless[2] (lan): networks: \"192.168.1.0/33\" is not a network; use CIDR such as \"192.168.1.0/24\" or one address"
        );
        let err = KeylessRule::from_config(0, &entry(&["0.0.0.0/0"])).expect_err("everyone");
        assert!(err.contains("is every address"), "{err}");
        // Everyone, in pieces.
        let err = KeylessRule::from_config(0, &entry(&["0.0.0.0/1", "128.0.0.0/1"])).expect_err("halves");
        assert!(err.contains("0.0.0.0/1 is broader than any private network"), "{err}");
        let err = KeylessRule::from_config(0, &entry(&["::/1", "8000::/1"])).expect_err("halves");
        assert!(err.contains("broader than any private network"), "{err}");
        let many: Vec<String> = (1..=20).map(|i| format!("{i}.0.0.0/8")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let err = KeylessRule::from_config(0, &entry(&many)).expect_err("most of it");
        assert!(err.contains("together they cover"), "{err}");
        assert!(KeylessRule::from_config(0, &entry(&["10.0.0.0/8", "192.168.0.0/16", "fc00::/7"])).is_ok());
        let err = KeylessRule::from_config(0, &entry(&[])).expect_err("empty");
        assert!(err.contains("`networks` is empty"), "{err}");
    }
}
