//! `init --bundle` against bundles made here with rcgen, as `switchyard certs issue` makes
//! them: what it writes, and each refusal with its message.

use std::path::PathBuf;

use super::*;

#[path = "../../tests/shared/bundle.rs"]
mod shared_bundle;
use shared_bundle::{JOIN, bundle};

const RECOMMENDED: &str = "node = \"NODE\"\nmax_concurrency = 2\nmax_tokens = 2048\n\n[runtime]\nkind = \"ollama\"\n\
                           base_url = \"http://127.0.0.1:11434\"\n";

fn recommend(node: &str) -> String {
    RECOMMENDED.replace("NODE", node)
}

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new(node: &str, days: i64, join: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        bundle(&dir.path().join("bundle"), node, days, join);
        Self { dir }
    }
    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }
    fn output(&self) -> PathBuf {
        self.dir.path().join("etc/agent.toml")
    }
    fn join(&self, controller: Option<&str>, node: Option<&str>, force: bool) -> Result<Joined, JoinError> {
        let (bundle, output) = (self.bundle(), self.output());
        let request = JoinRequest {
            bundle: &bundle,
            output: &output,
            controller,
            node,
            force,
        };
        join(&request, recommend)
    }
}

fn refused(result: Result<Joined, JoinError>) -> String {
    match result {
        Ok(joined) => panic!("accepted:\n{}", joined.config),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_bundle_becomes_certs_beside_the_config_and_a_controller_section_that_loads() {
    let case = Case::new("xeon", 90, Some(JOIN));
    let joined = case.join(None, Some("xeon"), false).expect("joins");
    assert_eq!(
        (joined.node.as_str(), joined.address.as_str()),
        ("xeon", "controller.lan:7443")
    );
    assert!(joined.copied && !joined.kept_config);
    let certs = case.dir.path().join("etc/certs");
    for file in ["ca.pem", "node.pem", "node.key"] {
        assert_eq!(
            std::fs::read(certs.join(file)).expect("copied"),
            std::fs::read(case.bundle().join(file)).expect("original"),
            "{file}"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(certs.join("node.key"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let written = std::fs::read_to_string(case.output()).expect("config");
    assert_eq!(written, joined.config);
    assert!(written.starts_with(&recommend("xeon")), "{written}");
    let config = AgentConfig::load(&case.output()).expect("loads");
    assert_eq!(config.node, "xeon");
    let link = config.controller.expect("[controller]");
    assert_eq!(link.address, "controller.lan:7443");
    assert_eq!(link.server_name.as_deref(), Some("controller.lan"));
    assert_eq!(link.cert, certs.join("node.pem"));
    assert!(written.contains("ca = \"certs/ca.pem\""), "relative paths: {written}");
    assert!(NodeCert::read(&link.cert).is_ok());
}

#[test]
fn the_controller_flag_overrides_join_toml_and_stands_in_when_it_has_no_address() {
    let case = Case::new("xeon", 90, Some("node = \"xeon\"\n"));
    let message = refused(case.join(None, None, false));
    assert!(message.starts_with("no controller address: "), "{message}");
    assert!(message.contains("pass --controller HOST:PORT"), "{message}");
    assert!(!case.output().exists(), "nothing is written before every check passed");

    let joined = case.join(Some("10.0.0.5:7443"), None, false).expect("joins");
    assert_eq!(joined.address, "10.0.0.5:7443");
    assert!(!joined.config.contains("server_name"), "{}", joined.config);

    let case = Case::new("xeon", 90, None);
    assert!(
        case.join(Some("c.lan:7443"), None, false).is_ok(),
        "join.toml is optional with --controller"
    );
    let message = refused(Case::new("xeon", 90, Some(JOIN)).join(Some("controller.lan"), None, false));
    assert!(
        message.starts_with("--controller \"controller.lan\": not HOST:PORT"),
        "{message}"
    );
}

#[test]
fn a_node_flag_other_than_the_certificates_name_is_refused() {
    let case = Case::new("xeon", 90, Some(JOIN));
    let message = refused(case.join(None, Some("ryzen"), false));
    assert!(
        message.contains("node.pem is for node 'xeon', not 'ryzen'"),
        "{message}"
    );
    assert!(
        message.contains("switchyard certs issue --dir certs --node ryzen"),
        "{message}"
    );
}

#[test]
fn a_bad_join_file_is_refused_naming_the_file_and_the_field() {
    let case = Case::new("xeon", 90, Some("node = \"xeon\"\nadress = \"c:1\"\n"));
    let message = refused(case.join(None, None, false));
    assert!(message.contains("join.toml: invalid join file"), "{message}");
    assert!(message.contains("unknown field `adress`"), "{message}");

    let case = Case::new("xeon", 90, Some("node = \"xeon\"\naddress = \"controller.lan\"\n"));
    let message = refused(case.join(None, None, false));
    assert!(
        message.contains("join.toml: field `address`: \"controller.lan\" is not HOST:PORT"),
        "{message}"
    );

    let case = Case::new("xeon", 90, Some(&JOIN.replace("\"xeon\"", "\"ryzen\"")));
    let message = refused(case.join(None, None, false));
    assert!(message.contains("says node 'ryzen' but"), "{message}");
    assert!(
        message.contains("is for node 'xeon'; the bundle is mixed up"),
        "{message}"
    );
}

#[test]
fn an_expired_certificate_or_a_key_from_another_certificate_is_refused() {
    let case = Case::new("xeon", -1, Some(JOIN));
    let message = refused(case.join(None, None, false));
    assert!(
        message.contains("the certificate for node 'xeon' expired on"),
        "{message}"
    );

    let case = Case::new("xeon", 90, Some(JOIN));
    let other = case.dir.path().join("other");
    bundle(&other, "xeon", 90, None);
    std::fs::copy(other.join("node.key"), case.bundle().join("node.key")).expect("swap key");
    let message = refused(case.join(None, None, false));
    assert!(message.contains("node.key do not form a pair"), "{message}");

    let case = Case::new("xeon", 90, None);
    std::fs::remove_file(case.bundle().join("node.pem")).expect("rm");
    let message = refused(case.join(Some("c:1"), None, false));
    assert!(message.contains("not a node bundle (no node.pem in it)"), "{message}");
}

#[test]
fn an_existing_config_keeps_its_settings_and_gains_the_section_once() {
    let case = Case::new("xeon", 90, Some(JOIN));
    std::fs::create_dir_all(case.output().parent().expect("parent")).expect("mkdir");
    let edited = recommend("xeon").replace("max_concurrency = 2", "max_concurrency = 3");
    std::fs::write(case.output(), &edited).expect("write");
    let joined = case.join(None, None, false).expect("joins");
    assert!(joined.kept_config);
    assert!(joined.config.starts_with(&edited), "{}", joined.config);
    assert_eq!(AgentConfig::load(&case.output()).expect("loads").max_concurrency, 3);

    let message = refused(case.join(None, None, false));
    assert!(
        message.contains("already has a [controller] section; pass --force"),
        "{message}"
    );

    let joined = case.join(None, None, true).expect("--force rewrites");
    assert!(!joined.kept_config);
    assert_eq!(AgentConfig::load(&case.output()).expect("loads").max_concurrency, 2);

    std::fs::write(case.output(), recommend("ryzen-box")).expect("write");
    let message = refused(case.join(None, None, false));
    assert!(
        message.contains("says node = \"ryzen-box\" but the certificate is for node 'xeon'"),
        "{message}"
    );
}

#[test]
fn certificates_already_beside_the_config_need_force_unless_they_are_the_bundle() {
    let case = Case::new("xeon", 90, Some(JOIN));
    bundle(&case.dir.path().join("etc/certs"), "xeon", 90, None);
    let message = refused(case.join(None, None, false));
    assert!(
        message.ends_with("certs/ca.pem: exists; pass --force to overwrite it"),
        "{message}"
    );
    assert!(!case.output().exists());
    assert!(case.join(None, None, true).expect("--force").copied);

    // The bundle copied to certs/ by hand, then joined in place.
    let case = Case::new("xeon", 90, Some(JOIN));
    let in_place = case.dir.path().join("etc/certs");
    bundle(&in_place, "xeon", 90, Some(JOIN));
    let output = case.output();
    let request = JoinRequest {
        bundle: &in_place,
        output: &output,
        controller: None,
        node: None,
        force: false,
    };
    let joined = join(&request, recommend).expect("joins in place");
    assert!(!joined.copied);
    assert!(AgentConfig::load(&output).expect("loads").controller.is_some());
}

#[test]
fn the_controller_section_quotes_what_it_writes() {
    let section = controller_section("c.lan:7443", Some("we\"ird"));
    let config = AgentConfig::parse(&(recommend("xeon") + &section), "test").expect("parses");
    assert_eq!(config.controller.expect("link").server_name.as_deref(), Some("we\"ird"));
}
