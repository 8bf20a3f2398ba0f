//! Agents join the controller over mTLS: real `switchyard serve` and `switchyard-agent run`
//! processes on loopback, with certificates from `switchyard certs`. Refusals (wrong CA,
//! impersonation, expired certificate, plaintext) are asserted by their text on both sides;
//! failures (kill -9, controller restart, network partition) by the node table.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, switchyard};
use crate::process::{Agent, eventually};

const JOIN_WITHIN: Duration = Duration::from_secs(30);

/// Start an agent named `node` with the certificate `bundle` and check that both sides
/// refuse the link with the given words, and that neither `node` nor any of `also_absent`
/// enters the node table.
fn assert_refused_on_both_sides(
    cluster: &Cluster,
    node: &str,
    bundle: &Path,
    controller_says: &str,
    agent_says: &str,
    also_absent: &[&str],
) {
    let controller = cluster.controller("127.0.0.1:0");
    let config = cluster.agent_config(
        &format!("{node}.toml"),
        node,
        bundle,
        controller.agents.as_deref().expect("agents"),
    );
    let agent = Agent::start(&config, None);
    assert!(
        eventually(JOIN_WITHIN, || controller.log_text().contains(controller_says)),
        "{}",
        controller.log_text()
    );
    assert!(
        eventually(JOIN_WITHIN, || agent.log_text().contains(agent_says)),
        "{}",
        agent.log_text()
    );
    for name in std::iter::once(node).chain(also_absent.iter().copied()) {
        assert_eq!(
            controller.node_healthy(name),
            None,
            "a refused agent never enters the node table ({name})"
        );
    }
}

/// The xeon's simulated agent with a certificate of this cluster, started towards
/// `controller`; its config's path, to start it again.
fn xeon_agent(cluster: &Cluster, controller: &crate::process::Controller) -> (std::path::PathBuf, Agent) {
    let bundle = cluster.issue("xeon", &[]);
    let address = controller.agents.as_deref().expect("agents");
    let config = cluster.agent_config("xeon.toml", "xeon", &bundle, address);
    let agent = Agent::start(&config, None);
    (config, agent)
}

#[test]
fn an_agent_with_a_cluster_certificate_joins_and_its_telemetry_reaches_the_node_table() {
    let cluster = Cluster::new(&[]);
    let controller = cluster.controller("127.0.0.1:0");
    let (_, agent) = xeon_agent(&cluster, &controller);
    assert!(
        eventually(JOIN_WITHIN, || controller.node_healthy("xeon") == Some(true)),
        "never joined; controller log:\n{}\nagent log:\n{}",
        controller.log_text(),
        agent.log_text()
    );
    let nodes = controller.admin("/admin/nodes");
    let node = &nodes["snapshot"]["nodes"][0];
    assert_eq!(node["runtime"], "simulated");
    assert_eq!(node["max_concurrency"], 2);
    assert_eq!(node["models"][0]["local"], "qwen2.5-coder:7b");
    let link = &nodes["links"][0];
    assert_eq!(link["connected"], true);
    assert_eq!(link["cert"]["common_name"], "xeon");
    assert!(link["cert"]["expires_in_s"].as_i64().is_some_and(|s| s > 89 * 86_400));
    let certs = controller.admin("/admin/certs");
    assert_eq!(certs["nodes"][0]["node"], "xeon");
    let listed = controller.cli_ok(&["nodes"]);
    assert!(
        listed.contains("xeon") && listed.contains("mTLS from 127.0.0.1"),
        "{listed}"
    );
    assert!(
        agent.log_text().contains("linked to the controller"),
        "{}",
        agent.log_text()
    );
}

#[test]
fn a_certificate_from_another_cluster_ca_is_refused_on_both_sides() {
    let cluster = Cluster::new(&[]);
    let other = Cluster::new(&[]);
    // The agent trusts the right CA but presents a certificate signed by another one.
    let foreign = other.issue("xeon", &[]);
    std::fs::copy(cluster.certs().join("ca.pem"), foreign.join("ca.pem")).expect("copy ca");
    assert_refused_on_both_sides(
        &cluster,
        "xeon",
        &foreign,
        "not issued by this cluster's CA",
        "received fatal alert",
        &[],
    );
}

#[test]
fn an_agent_claiming_another_nodes_name_is_refused_on_both_sides() {
    let cluster = Cluster::new(&[]);
    let xeon = cluster.issue("xeon", &[]);
    let refusal = "certificate is for node 'xeon' but the agent says it is 'ryzen'";
    let agent_says = format!("the controller refused this agent: {refusal}");
    // Neither under the claimed name nor under the certificate's.
    assert_refused_on_both_sides(&cluster, "ryzen", &xeon, refusal, &agent_says, &["xeon"]);
}

#[test]
fn an_expired_certificate_is_refused_by_the_agent_before_dialling_and_by_the_controller() {
    let cluster = Cluster::new(&[]);
    let expired = cluster.issue("xeon", &["--expires-at", "2021-01-01T00:00:00Z"]);
    let controller = cluster.controller("127.0.0.1:0");
    let address = controller.agents.clone().expect("agents");
    let config = cluster.agent_config("xeon.toml", "xeon", &expired, &address);
    let agent = Agent::start(&config, None);
    assert!(
        eventually(JOIN_WITHIN, || agent.log_text().contains("expired on")),
        "{}",
        agent.log_text()
    );
    // A client that presents it anyway (not our agent) is refused at the handshake.
    present_certificate(&address, &expired);
    assert!(
        eventually(JOIN_WITHIN, || controller
            .log_text()
            .contains("its certificate has expired")),
        "{}",
        controller.log_text()
    );
    assert_eq!(controller.node_healthy("xeon"), None, "never in the node table");
}

/// A TLS 1.3 client that presents `bundle`'s node certificate and trusts its CA, as an agent.
fn node_tls(bundle: &Path) -> rustls::ClientConfig {
    use std::sync::Arc;
    use switchyard_protocol::tls::{load_certs, load_key, load_roots};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(load_roots(&bundle.join("ca.pem")).expect("roots"))
        .with_client_auth_cert(
            load_certs(&bundle.join("node.pem")).expect("cert"),
            load_key(&bundle.join("node.key")).expect("key"),
        )
        .expect("client config")
}

/// Handshake with `bundle`'s certificate as an agent would, and read until the controller
/// answers or closes (TLS 1.3 refuses a client certificate after the client's handshake).
fn present_certificate(address: &str, bundle: &Path) {
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;
    let config = node_tls(bundle);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(address).await.expect("connect");
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        if let Ok(mut tls) = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
        {
            let mut byte = [0u8; 1];
            let _ = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut byte)).await;
        }
    });
}

#[test]
fn plaintext_on_the_agent_port_is_refused() {
    use std::io::{Read, Write};
    let cluster = Cluster::new(&[]);
    let controller = cluster.controller("127.0.0.1:0");
    let mut stream = std::net::TcpStream::connect(controller.agents.as_deref().expect("agents")).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream
        .write_all(b"GET /telemetry HTTP/1.1\r\nHost: controller\r\n\r\n")
        .expect("write");
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    assert!(
        !String::from_utf8_lossy(&reply).contains("HTTP/1.1"),
        "plaintext got an HTTP answer: {reply:?}"
    );
    assert!(
        eventually(JOIN_WITHIN, || controller
            .log_text()
            .contains("the peer is not speaking TLS")),
        "{}",
        controller.log_text()
    );
}

#[test]
fn a_killed_agent_is_out_of_rotation_within_3_s_and_back_when_restarted() {
    let cluster = Cluster::new(&[]);
    let controller = cluster.controller("127.0.0.1:0");
    let (config, mut agent) = xeon_agent(&cluster, &controller);
    assert!(eventually(JOIN_WITHIN, || controller.node_healthy("xeon") == Some(true)));

    agent.kill_hard();
    let killed = Instant::now();
    assert!(eventually(Duration::from_secs(10), || controller.node_healthy("xeon")
        == Some(false)));
    let detected = killed.elapsed();
    eprintln!("kill -9: out of rotation after {detected:?}");
    assert!(detected < Duration::from_secs(3), "out of rotation after {detected:?}");

    let _agent = Agent::start(&config, None);
    assert!(
        eventually(JOIN_WITHIN, || controller.node_healthy("xeon") == Some(true)),
        "{}",
        controller.log_text()
    );
    // Back and chosen: the route goes to it again.
    let explained = controller.cli_ok(&["route", "explain", "--model", "qwen25-coder-7b"]);
    assert!(explained.contains("\"node\": \"xeon\""), "{explained}");
}

#[test]
fn a_restarted_controller_gets_every_agent_back_without_intervention() {
    let cluster = Cluster::new(&[]);
    let controller = cluster.controller("127.0.0.1:0");
    let address = controller.agents.clone().expect("agents");
    let mut agents = Vec::new();
    for node in ["xeon", "ryzen"] {
        let bundle = cluster.issue(node, &[]);
        agents.push(Agent::start(
            &cluster.agent_config(&format!("{node}.toml"), node, &bundle, &address),
            None,
        ));
    }
    assert!(eventually(JOIN_WITHIN, || controller.node_healthy("xeon")
        == Some(true)
        && controller.node_healthy("ryzen") == Some(true)));
    let status = controller.stop();
    assert!(status.success(), "{status:?}");

    let controller = cluster.controller(&address);
    assert!(
        eventually(JOIN_WITHIN, || controller.node_healthy("xeon") == Some(true)
            && controller.node_healthy("ryzen") == Some(true)),
        "agents did not come back; controller log:\n{}",
        controller.log_text()
    );
    for agent in agents {
        assert!(agent.log_text().contains("dialling again"), "{}", agent.log_text());
    }
}

/// Connect with a node certificate as an agent would and return the controller
/// certificate's serial.
fn controller_serial(address: &str, bundle: &Path) -> String {
    use std::sync::Arc;
    use switchyard_protocol::tls::cert_info;
    let config = node_tls(bundle);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(address).await.expect("connect");
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("handshake");
        let certs = tls.get_ref().1.peer_certificates().expect("server certs");
        cert_info(&certs[0]).expect("info").serial
    })
}

#[test]
fn a_controller_certificate_replaced_on_disk_is_used_by_new_handshakes_without_a_restart() {
    let cluster = Cluster::new(&[]);
    let controller = cluster.controller("127.0.0.1:0");
    let address = controller.agents.clone().expect("agents");
    let bundle = cluster.issue("xeon", &[]);
    let config = cluster.agent_config("xeon.toml", "xeon", &bundle, &address);
    let agent = Agent::start(&config, None);
    assert!(eventually(JOIN_WITHIN, || controller.node_healthy("xeon") == Some(true)));
    let before = controller_serial(&address, &bundle);
    let pid = controller.pid();

    switchyard(&[
        "certs",
        "issue",
        "--dir",
        cluster.certs().to_str().expect("utf-8"),
        "--controller",
    ]);
    assert!(
        eventually(Duration::from_secs(15), || controller_serial(&address, &bundle)
            != before),
        "new handshakes still get the old certificate; log:\n{}",
        controller.log_text()
    );
    assert!(controller.log_text().contains("new handshakes use them"));
    assert_eq!(controller.pid(), pid, "the controller was not restarted");
    assert_eq!(
        controller.node_healthy("xeon"),
        Some(true),
        "the linked agent stays in rotation"
    );

    // The agent reads its own files at each attempt: a re-issued node certificate is used at
    // its next link, without restarting the agent.
    let old_serial = controller.admin("/admin/nodes")["links"][0]["cert"]["serial"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    cluster.issue("xeon", &[]);
    drop(controller);
    let restarted = cluster.controller(&address);
    assert!(eventually(JOIN_WITHIN, || {
        let links = restarted.admin("/admin/nodes")["links"].clone();
        links[0]["connected"] == true && links[0]["cert"]["serial"].as_str().is_some_and(|s| s != old_serial)
    }));
    drop(agent);
}

/// A network namespace joined to this host by a veth pair: the agent runs inside it, so the
/// link crosses a real interface that can be cut (a partition, not a kill). Removed on drop.
struct Namespace {
    name: String,
    host_if: String,
    host_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Namespace {
    fn create() -> Result<Namespace, String> {
        let id = std::process::id() % 100_000;
        let subnet = std::process::id() % 250 + 1;
        let ns = Namespace {
            name: format!("sy-e2e-{id}"),
            host_if: format!("syh{id}"),
            host_ip: format!("10.231.{subnet}.1"),
        };
        let ns_if = format!("syn{id}");
        ip(&["netns", "add", &ns.name])?;
        ip(&["link", "add", &ns.host_if, "type", "veth", "peer", "name", &ns_if])?;
        ip(&["link", "set", &ns_if, "netns", &ns.name])?;
        ip(&["addr", "add", &format!("{}/30", ns.host_ip), "dev", &ns.host_if])?;
        ip(&["link", "set", &ns.host_if, "up"])?;
        let inside = |args: &[&str]| {
            let mut full = vec!["netns", "exec", ns.name.as_str(), "ip"];
            full.extend(args);
            ip(&full)
        };
        inside(&["addr", "add", &format!("10.231.{subnet}.2/30"), "dev", &ns_if])?;
        inside(&["link", "set", &ns_if, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn cut(&self) {
        ip(&["link", "set", &self.host_if, "down"]).expect("cut the link");
    }

    fn heal(&self) {
        ip(&["link", "set", &self.host_if, "up"]).expect("heal the link");
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

#[test]
fn a_partitioned_agent_is_out_of_rotation_within_3_s_and_back_when_the_network_heals() {
    // Needs CAP_NET_ADMIN (the test command runs as root, as CI does): without it this
    // fails loudly rather than passing without having run.
    let namespace = match Namespace::create() {
        Ok(namespace) => namespace,
        Err(e) => panic!(
            "cannot build the test network (network namespaces need root or CAP_NET_ADMIN, and iproute2's `ip`): {e}"
        ),
    };
    let cluster = Cluster::new(&[]);
    let controller = cluster.controller(&format!("{}:0", namespace.host_ip));
    let address = controller.agents.clone().expect("agents");
    let bundle = cluster.issue("xeon", &[]);
    let config = cluster.agent_config("xeon.toml", "xeon", &bundle, &address);
    let agent = Agent::start(&config, Some(&namespace.name));
    assert!(
        eventually(JOIN_WITHIN, || controller.node_healthy("xeon") == Some(true)),
        "never joined across the namespace; agent log:\n{}",
        agent.log_text()
    );

    namespace.cut();
    let cut = Instant::now();
    assert!(eventually(Duration::from_secs(10), || controller.node_healthy("xeon")
        == Some(false)));
    let detected = cut.elapsed();
    eprintln!("partition: out of rotation after {detected:?}");
    assert!(detected < Duration::from_secs(3), "out of rotation after {detected:?}");
    assert!(
        controller.log_text().contains("node out of rotation"),
        "{}",
        controller.log_text()
    );

    namespace.heal();
    assert!(
        eventually(Duration::from_secs(45), || controller.node_healthy("xeon")
            == Some(true)),
        "did not come back after the partition healed; agent log:\n{}",
        agent.log_text()
    );
    assert_eq!(agent.stop().code(), Some(0));
}

#[test]
fn a_second_agent_with_a_nodes_certificate_is_refused_and_the_first_keeps_serving() {
    let cluster = Cluster::new(&[]);
    let controller = cluster.controller("127.0.0.1:0");
    let address = controller.agents.clone().expect("agents");
    let bundle = cluster.issue("xeon", &[]);
    let config = cluster.agent_config("xeon.toml", "xeon", &bundle, &address);
    let first = Agent::start(&config, None);
    assert!(eventually(JOIN_WITHIN, || controller.node_healthy("xeon") == Some(true)));
    let peer_of = |c: &crate::process::Controller| -> String {
        c.admin("/admin/nodes")["links"]
            .as_array()
            .and_then(|links| links.iter().find(|l| l["node"] == "xeon"))
            .map(|l| l["peer"].to_string())
            .unwrap_or_default()
    };
    let first_peer = peer_of(&controller);

    let mut second = Agent::start(&config, None);
    let refusal = "node 'xeon' is already linked";
    assert!(
        eventually(JOIN_WITHIN, || second.log_text().contains(refusal)),
        "{}",
        second.log_text()
    );
    assert!(controller.log_text().contains(refusal), "{}", controller.log_text());
    // The impostor leaves: the real agent was never displaced, and stays in rotation.
    second.kill_hard();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(controller.node_healthy("xeon"), Some(true));
    assert_eq!(peer_of(&controller), first_peer);
    drop(first);
}

#[test]
fn only_listed_nodes_join_and_a_revoked_certificate_is_refused() {
    let cluster = Cluster::new(&[]);
    cluster.configure_agents("nodes = [\"xeon\"]\n");
    let controller = cluster.controller("127.0.0.1:0");
    let address = controller.agents.clone().expect("agents");
    // A valid certificate for a node the operator did not list is refused, on both sides.
    let ryzen = cluster.agent_config("ryzen.toml", "ryzen", &cluster.issue("ryzen", &[]), &address);
    let ryzen = Agent::start(&ryzen, None);
    let not_listed = "node 'ryzen' is not among the controller's [agents] nodes (xeon)";
    assert!(
        eventually(JOIN_WITHIN, || ryzen.log_text().contains(not_listed)),
        "{}",
        ryzen.log_text()
    );
    // The listed one joins; its serial, once revoked, keeps it out after a restart.
    let xeon_config = cluster.agent_config("xeon.toml", "xeon", &cluster.issue("xeon", &[]), &address);
    let xeon = Agent::start(&xeon_config, None);
    assert!(eventually(JOIN_WITHIN, || controller.node_healthy("xeon") == Some(true)));
    let serial = controller.admin("/admin/certs")["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["node"] == "xeon"))
        .and_then(|n| n["cert"]["serial"].as_str().map(str::to_owned))
        .expect("the xeon's serial");
    drop(xeon);
    assert!(controller.stop().success());
    cluster.configure_agents(&format!("revoked_serials = [\"{}\"]\n", serial.to_uppercase()));
    let controller = cluster.controller(&address);
    let xeon = Agent::start(&xeon_config, None);
    assert!(
        eventually(JOIN_WITHIN, || xeon.log_text().contains("is revoked")),
        "{}",
        xeon.log_text()
    );
    assert_ne!(controller.node_healthy("xeon"), Some(true));
}
