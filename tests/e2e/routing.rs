//! Routing as the seed says it, through a real controller and simulated seed machines:
//! production waits for a full ryzen instead of taking a free xeon ("Production: Ryzen
//! exclusively"), and still hands over when the ryzen is down.

use std::io::Read;

use crate::cluster::Cluster;
use crate::first_hour::{KEY, chat, controller, simulated, simulated_with};

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
    let (status, text) = crate::first_hour::chat_as(&url, "production", 4);
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
    let (status, text) = crate::first_hour::chat_as(&url, "production", 4);
    assert_eq!((status, node_of(&text).as_str()), (200, "xeon"), "{text}");
}

/// The node a short development prompt goes to now (it must be answered).
fn development_goes_to(url: &str) -> String {
    let (status, text) = crate::first_hour::chat_as(url, "development", 2);
    assert_eq!(status, 200, "no request may fail: {text}");
    node_of(&text)
}

/// How long until development work goes to `node`, asking every 50 ms for at most 10 s.
fn moves_to(url: &str, node: &str) -> std::time::Duration {
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(10) {
        if development_goes_to(url) == node {
            return started.elapsed();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("development work never went to {node}");
}

#[test]
fn a_laptop_on_battery_or_going_to_sleep_gets_no_new_work_within_two_seconds_and_comes_back() {
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "");
    // A fake power source, laid out like /sys/class/power_supply: the real parser reads it.
    let power = cluster.dir.path().join("power/BAT0");
    std::fs::create_dir_all(&power).expect("power dir");
    std::fs::write(power.join("type"), "Battery\n").expect("type");
    std::fs::write(power.join("capacity"), "81\n").expect("capacity");
    std::fs::write(power.join("status"), "Charging\n").expect("status");
    let supply = cluster.dir.path().join("power").display().to_string();
    let m4 = crate::first_hour::simulated_env(
        &cluster,
        &controller,
        "m4",
        "m4",
        &["qwen25-coder-7b"],
        1,
        &[("SWITCHYARD_POWER_SUPPLY_DIR", supply.as_str())],
    );
    let _ryzen = simulated(&cluster, &controller, "ryzen", "ryzen", &["qwen25-coder-7b"]);
    let url = format!("{}/v1/chat/completions", controller.url);
    assert_eq!(development_goes_to(&url), "m4");

    // Unplugged: new development work leaves the laptop (the seed: on AC only).
    std::fs::write(power.join("status"), "Discharging\n").expect("status");
    let moved = moves_to(&url, "ryzen");
    assert!(moved < std::time::Duration::from_secs(2), "took {moved:?}");
    let table = controller.cli_ok(&["nodes"]);
    assert!(table.contains("battery 81%"), "{table}");
    std::fs::write(power.join("status"), "Charging\n").expect("status");
    assert!(moves_to(&url, "m4") < std::time::Duration::from_secs(2));

    // Going to sleep (the operator's hook tells the agent): a stream in flight finishes,
    // new work goes elsewhere, and the laptop is back when it wakes.
    let (mut stream, mut reader) =
        crate::first_hour::stream_started(&url, &["-H", "x-switchyard-task: development"], 40);
    let client = |path: &str| {
        std::process::Command::new("curl")
            .args(["-sS", "-X", "POST", "--max-time", "5"])
            .arg(format!("{}{path}", m4.url))
            .output()
            .expect("curl")
    };
    assert!(String::from_utf8_lossy(&client("/power/sleep").stdout).contains("\"sleeping\":true"));
    let moved = moves_to(&url, "ryzen");
    assert!(moved < std::time::Duration::from_secs(2), "took {moved:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).expect("rest");
    let _ = stream.wait();
    assert!(
        rest.trim_end().ends_with("data: [DONE]"),
        "the stream in flight finished:\n{rest}"
    );
    let view = controller.admin("/admin/nodes");
    assert!(
        view["unhealthy"]["m4"]
            .as_str()
            .is_some_and(|r| r.contains("going to sleep")),
        "{view}"
    );
    client("/power/wake");
    assert!(moves_to(&url, "m4") < std::time::Duration::from_secs(2));
}

/// A response header's value, from `curl -i` output.
fn header_of(text: &str, name: &str) -> Option<String> {
    let prefix = format!("{name}: ");
    text.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix(&prefix)
            .map(|v| v.trim().to_owned())
    })
}

#[test]
fn answers_carry_their_energy_estimate_and_metrics_count_it_labelled_by_source() {
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "");
    let _xeon = simulated(&cluster, &controller, "xeon", "xeon", &["qwen25-coder-7b"]);
    let url = format!("{}/v1/chat/completions", controller.url);
    let ask = || {
        let (status, text) = crate::first_hour::chat_as(&url, "batch", 20);
        assert_eq!(status, 200, "{text}");
        text
    };
    // The agent reports joules per token once it has generated some: the seed's 260 W for
    // the xeon while it serves (labelled as the seed's figure), over the tokens it made.
    let started = std::time::Instant::now();
    let answer = loop {
        let text = ask();
        if header_of(&text, "x-switchyard-energy-mj").is_some() {
            break text;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "no energy estimate ever came:\n{text}"
        );
    };
    assert_eq!(
        header_of(&answer, "x-switchyard-energy-source").as_deref(),
        Some("seed-figure")
    );
    let millijoules: f64 = header_of(&answer, "x-switchyard-energy-mj")
        .and_then(|v| v.parse().ok())
        .expect("a number");
    // 20 tokens at 22 tok/s take 0.9 s plus 0.2 s to the first token: about 14 J per token at
    // 260 W; never less than decoding alone (260 / 22 = 11.8 J), nor several times more.
    let per_token = millijoules / 1000.0 / 20.0;
    assert!((11.0..30.0).contains(&per_token), "{per_token} J per token:\n{answer}");

    let metrics = crate::process::curl_with_key(&format!("{}/metrics", controller.url), KEY, &[]).1;
    let value = |prefix: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
    };
    assert!(value("switchyard_node_energy_joules_total{node=\"xeon\",source=\"seed-figure\"}") > 0.0);
    let per_1k = value("switchyard_energy_wh_per_1k_requests{node=\"all\"}");
    assert!(per_1k > 0.0, "{metrics}");
    let table = controller.cli_ok(&["nodes"]);
    assert!(table.contains("J/tok") && table.contains(" ~"), "{table}");
    assert!(table.contains("not measured"), "{table}");
}

#[test]
fn a_laptop_past_its_thermal_threshold_gets_no_new_work_within_two_seconds_and_comes_back_cool() {
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "");
    // The simulated m4 heats with sustained generation and throttles at 82 °C (about four
    // minutes of generation from idle); a hundred times faster than life here.
    let m4 = crate::first_hour::simulated_full(
        &cluster,
        &controller,
        "m4",
        "m4",
        &["qwen25-coder-7b"],
        1,
        "time_scale = 0.01\n",
        &[],
    );
    let _ryzen = simulated(&cluster, &controller, "ryzen", "ryzen", &["qwen25-coder-7b"]);
    let url = format!("{}/v1/chat/completions", controller.url);
    assert_eq!(development_goes_to(&url), "m4");

    // Long generations straight at the m4's own API keep it generating until it throttles
    // (and while it stays throttled); a watcher notes when its telemetry first says so.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let heater = {
        let stop = stop.clone();
        let agent_url = format!("{}/v1/chat/completions", m4.url);
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && rounds < 40 {
                rounds += 1;
                let status = std::process::Command::new("curl")
                    .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30", "-d"])
                    .arg(chat("qwen25-coder-7b", 2000, false))
                    .arg(&agent_url)
                    .output()
                    .expect("curl");
                assert_eq!(
                    String::from_utf8_lossy(&status.stdout),
                    "200",
                    "{}",
                    String::from_utf8_lossy(&status.stderr)
                );
            }
        })
    };
    let telemetry_url = format!("{}/telemetry", m4.url);
    let throttled = || {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .arg(&telemetry_url)
            .output()
            .expect("curl");
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .map(|t| t["power"]["thermal_throttled"] == true)
            .unwrap_or(false)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !throttled() {
        assert!(
            std::time::Instant::now() < deadline,
            "the m4 never throttled; its log:\n{}\ntelemetry: {:?}",
            m4.log_text(),
            std::process::Command::new("curl")
                .args(["-sS", "--max-time", "5"])
                .arg(&telemetry_url)
                .output()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // From the agent's report of the throttle to development work going elsewhere; every
    // request on the way is answered (development_goes_to asserts a 200).
    let moved = moves_to(&url, "ryzen");
    assert!(moved < std::time::Duration::from_secs(2), "took {moved:?}");
    let view = controller.admin("/admin/nodes");
    let m4_view = view["snapshot"]["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["name"] == "m4").cloned())
        .expect("m4 listed");
    assert_eq!(m4_view["thermal_throttled"], true, "{m4_view}");

    // Generation stops, the laptop cools below its threshold and gets development work again.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    heater.join().expect("heater");
    assert!(moves_to(&url, "m4") < std::time::Duration::from_secs(5));
}
