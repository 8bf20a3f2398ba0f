//! Joining a controller, end to end through the real `switchyard-agent` binary: `init
//! --bundle` with a bundle made here by rcgen as `switchyard certs issue` makes it, plain
//! `init`'s advice, and the warning (or error) the agent gives at each dial when its
//! certificate is about to expire (or has).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use switchyard_agent::config::AgentConfig;

use crate::shared_bundle::{JOIN, bundle};
use crate::support::*;

/// `dir/{ca.pem,node.pem,node.key,join.toml}` for `node`, valid for `days` more days.
fn node_bundle(dir: &Path, node: &str, days: i64) {
    let join = JOIN.replace("\"xeon\"", &format!("{node:?}"));
    bundle(dir, node, days, Some(&join));
}

fn agent_cli(args: &[&str], paths: &[&Path]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard-agent"));
    command.args(args).env("SWITCHYARD_LOG", "warn");
    for path in paths {
        command.arg(path);
    }
    command.output().expect("run switchyard-agent")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn init_bundle_copies_the_certificates_and_writes_a_config_that_joins_the_controller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("xeon");
    node_bundle(&bundle, "xeon", 90);
    let output = dir.path().join("etc/switchyard/agent.toml");

    let refused = agent_cli(&["init", "--node", "ryzen", "--bundle"], &[&bundle]);
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("node.pem is for node 'xeon', not 'ryzen'"), "{stderr}");

    let done = agent_cli(&["init", "--bundle"], &[&bundle, Path::new("--output"), &output]);
    let stdout = text(&done.stdout);
    assert!(done.status.success(), "{stdout}\n{}", text(&done.stderr));
    assert!(
        stdout.contains("for node 'xeon', joining the controller at controller.lan:7443:"),
        "{stdout}"
    );
    assert!(stdout.contains("(node.key with mode 0600)"), "{stdout}");
    assert!(
        stdout.contains("the certificate for node 'xeon' is valid until"),
        "{stdout}"
    );
    assert!(stdout.contains("next: `switchyard-agent run --config "), "{stdout}");

    let certs = dir.path().join("etc/switchyard/certs");
    for file in ["ca.pem", "node.pem", "node.key"] {
        assert_eq!(
            std::fs::read(certs.join(file)).expect("copied"),
            std::fs::read(bundle.join(file)).expect("bundle"),
            "{file}"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&certs.join("node.key")), 0o600);
    }
    let config = AgentConfig::load(&output).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.node, "xeon");
    let link = config.controller.expect("[controller]");
    assert_eq!(link.address, "controller.lan:7443");
    assert_eq!(link.server_name(), "controller.lan");
    assert_eq!(
        (link.ca, link.cert, link.key),
        (certs.join("ca.pem"), certs.join("node.pem"), certs.join("node.key"))
    );

    let again = agent_cli(&["init", "--bundle"], &[&bundle, Path::new("--output"), &output]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already has a [controller] section; pass --force"),
        "{}",
        text(&again.stderr)
    );
    let forced = agent_cli(
        &["init", "--force", "--controller", "10.1.2.3:7443", "--bundle"],
        &[&bundle, Path::new("--output"), &output],
    );
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    let config = AgentConfig::load(&output).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.controller.expect("[controller]").address, "10.1.2.3:7443");
}

#[test]
fn plain_init_names_the_node_and_says_how_to_join_then_init_bundle_adds_the_controller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("agent.toml");
    let done = agent_cli(&["init", "--node", "xeon", "--output"], &[&output]);
    let stdout = text(&done.stdout);
    assert!(done.status.success(), "{stdout}\n{}", text(&done.stderr));
    assert!(stdout.contains("The node name is 'xeon' (from --node)."), "{stdout}");
    assert!(stdout.contains("has no [controller] section yet"), "{stdout}");
    assert!(
        stdout.contains("`switchyard certs issue --dir certs --node xeon`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("switchyard-agent init --bundle DIR --output "),
        "{stdout}"
    );

    let bundle = dir.path().join("bundle");
    node_bundle(&bundle, "xeon", 90);
    let joined = agent_cli(&["init", "--bundle"], &[&bundle, Path::new("--output"), &output]);
    let stdout = text(&joined.stdout);
    assert!(joined.status.success(), "{stdout}\n{}", text(&joined.stderr));
    assert!(stdout.starts_with("added a [controller] section to "), "{stdout}");
    assert!(AgentConfig::load(&output).expect("loads").controller.is_some());
}

/// A simulated agent whose controller link uses the bundle in `bundle` and dials a closed port.
fn linked_agent(bundle: &Path) -> (Process, tempfile::TempDir) {
    agent(&format!(
        "node = \"xeon\"\nmax_concurrency = 1\nmax_tokens = 64\n[runtime]\nkind = \"simulated\"\nprofile = \"xeon\"\n\
         [controller]\naddress = \"127.0.0.1:1\"\nserver_name = \"localhost\"\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        bundle.join("ca.pem"),
        bundle.join("node.pem"),
        bundle.join("node.key"),
    ))
}

#[tokio::test]
async fn a_certificate_that_expires_within_two_weeks_is_warned_about_at_each_dial() {
    let dir = tempfile::tempdir().expect("tempdir");
    node_bundle(dir.path(), "xeon", 5);
    let (agent, _config) = linked_agent(dir.path());
    let warned = |log: &str| log.matches("the certificate for node 'xeon' expires on").count();
    assert!(
        eventually(Duration::from_secs(10), || async { warned(&agent.log()) >= 2 }).await,
        "{}",
        agent.log()
    );
    let log = agent.log();
    assert!(log.contains("WARN"), "{log}");
    assert!(log.contains("(in 4 days)") || log.contains("(in 5 days)"), "{log}");
    assert!(log.contains("switchyard certs renew --dir certs --node xeon"), "{log}");
    // Once per dial: each warning is followed by that dial's own outcome.
    assert!(warned(&log) <= log.matches("dialling again").count() + 1, "{log}");
}

#[tokio::test]
async fn an_expired_certificate_is_an_error_naming_the_file_before_any_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    node_bundle(dir.path(), "xeon", -3);
    let (agent, _config) = linked_agent(dir.path());
    let expected = format!(
        "{}: the certificate for node 'xeon' expired on",
        dir.path().join("node.pem").display()
    );
    assert!(
        eventually(Duration::from_secs(10), || async { agent.log().contains(&expected) }).await,
        "{}",
        agent.log()
    );
    assert!(agent.log().contains("ERROR"), "{}", agent.log());
    assert!(!agent.log().contains("cannot reach the controller"), "{}", agent.log());
}
