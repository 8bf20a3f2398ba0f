//! Routing as the seed says it, through a real controller and simulated seed machines:
//! production waits for a full ryzen instead of taking a free xeon ("Production: Ryzen
//! exclusively"), and still hands over when the ryzen is down.

use std::io::Read;

use crate::cluster::Cluster;
use crate::first_hour::{KEY, chat, controller, simulated, simulated_with};
use crate::process::curl_with_key;

fn node_of(text: &str) -> String {
    text.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-switchyard-node: ")
                .map(|n| n.trim().to_owned())
        })
        .unwrap_or_default()
}

#[test]
fn production_waits_for_a_full_ryzen_and_goes_to_the_xeon_only_when_the_ryzen_is_down() {
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "");
    let ryzen = simulated_with(&cluster, &controller, "ryzen", "ryzen", &["qwen25-coder-7b"], 1);
    let _xeon = simulated(&cluster, &controller, "xeon", "xeon", &["qwen25-coder-7b"]);
    let url = format!("{}/v1/chat/completions", controller.url);

    // The ryzen's one slot taken by a production stream (45 tokens/s: 90 tokens take ~2 s).
    let (mut first, mut reader) = crate::first_hour::stream_started(&url, &["-H", "x-switchyard-task: production"], 90);
    let (status, text) = curl_with_key(
        &url,
        KEY,
        &[
            "-H",
            "x-switchyard-task: production",
            "-d",
            &chat("qwen25-coder-7b", 4, false),
        ],
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        node_of(&text),
        "ryzen",
        "waited for the ryzen, not the free xeon: {text}"
    );
    let mut rest = String::new();
    reader.read_to_string(&mut rest).expect("rest");
    let _ = first.wait();
    assert!(rest.trim_end().ends_with("data: [DONE]"), "{rest}");

    // The ryzen is down: production goes to the xeon.
    drop(ryzen);
    assert!(crate::process::eventually(std::time::Duration::from_secs(5), || {
        controller.node_healthy("ryzen") == Some(false)
    }));
    let (status, text) = curl_with_key(
        &url,
        KEY,
        &[
            "-H",
            "x-switchyard-task: production",
            "-d",
            &chat("qwen25-coder-7b", 4, false),
        ],
    );
    assert_eq!((status, node_of(&text).as_str()), (200, "xeon"), "{text}");
}
