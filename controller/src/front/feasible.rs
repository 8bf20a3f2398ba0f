//! Requests no node could serve, refused before the policy is asked: a `max_tokens` above
//! every limit of the nodes serving the model is the client's to fix (400), not a capacity
//! problem to retry (503); with no node joined at all (the controller has just started and
//! its agents are linking), any request is a 503 to retry, not a model that does not exist.

use switchyard_protocol::{ClusterSnapshot, RequestInfo};

use super::FrontError;

/// `Err` when `max_tokens` exceeds, on every node that serves the model (healthy or not: a node
/// coming back does not raise its limit), the node's `max_tokens` or the model's context.
pub fn check(snapshot: &ClusterSnapshot, info: &RequestInfo) -> Result<(), FrontError> {
    if snapshot.nodes.is_empty() {
        return Err(FrontError::NoSlot(
            "no node has joined this controller yet (it has just started and its agents are linking, or none links to it); retry shortly".to_owned(),
        ));
    }
    let Some(requested) = info.max_tokens else {
        return Ok(());
    };
    let limits = snapshot.nodes.iter().filter_map(|node| {
        let variant = node.variant(&info.model)?;
        let context = if variant.context_length == 0 {
            u32::MAX
        } else {
            variant.context_length
        };
        Some((node.name.as_str(), node.max_tokens.min(context)))
    });
    let Some((node, largest)) = limits.max_by_key(|(_, limit)| *limit) else {
        return Ok(()); // no node serves it: the policy answers 404
    };
    if requested <= largest {
        return Ok(());
    }
    Err(FrontError::TooManyTokens {
        model: info.model.clone(),
        requested,
        largest,
        node: node.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_protocol::{ModelVariant, NodeSnapshot};

    fn node(name: &str, max_tokens: u32, context: u32) -> NodeSnapshot {
        NodeSnapshot {
            name: name.into(),
            labels: Vec::new(),
            runtime: switchyard_protocol::RuntimeKind::Simulated,
            healthy: name != "down",
            in_flight: 0,
            queued: 0,
            max_concurrency: 1,
            max_tokens,
            cpu_util_pct: 0.0,
            mem_used_mb: 0,
            mem_total_mb: 0,
            gpus: Vec::new(),
            on_battery: None,
            thermal_throttled: false,
            tokens_per_sec: None,
            ttft_ms: None,
            prefill_tokens_per_sec: None,
            models: vec![ModelVariant {
                logical: "m".into(),
                local: "m".into(),
                quantization: None,
                context_length: context,
                loaded: true,
                load_ms: None,
            }],
            last_seen_ms: 0,
        }
    }

    #[test]
    fn max_tokens_above_every_nodes_limit_is_the_clients_error() {
        let snapshot = ClusterSnapshot {
            nodes: vec![
                node("xeon", 2048, 32768),
                node("down", 4096, 8192),
                node("m4", 8192, 1024),
            ],
        };
        let mut info = RequestInfo::for_model("m".to_owned());
        for ok in [None, Some(2048), Some(4096)] {
            info.max_tokens = ok;
            assert_eq!(check(&snapshot, &info), Ok(()), "{ok:?}");
        }
        info.max_tokens = Some(5000);
        let error = check(&snapshot, &info).expect_err("too many");
        assert_eq!(error.status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(error.retry_after(), None);
        assert_eq!(
            error.to_string(),
            "max_tokens 5000 is more than any node serving model 'm' accepts (the most is 4096, on down); lower max_tokens"
        );
        info.model = "unknown".into();
        assert_eq!(check(&snapshot, &info), Ok(()), "the policy says 404");
    }

    #[test]
    fn with_no_node_joined_a_request_is_a_503_to_retry_not_an_unknown_model() {
        let error = check(&ClusterSnapshot::default(), &RequestInfo::for_model("m".to_owned())).expect_err("no node");
        assert_eq!(error.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(error.retry_after().is_some());
        assert!(error.to_string().contains("no node has joined"), "{error}");
    }
}
