//! A node bundle made with rcgen, as `switchyard certs issue` makes it: shared by the agent's
//! unit tests (`src/join_bundle/tests.rs`) and its integration tests (`tests/all/joining.rs`).

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// The `join.toml` a bundle for the xeon carries.
pub const JOIN: &str = "# Written by `switchyard certs issue`: what `switchyard-agent init --bundle` needs to join.\n\
                        node = \"xeon\"\naddress = \"controller.lan:7443\"\nserver_name = \"controller.lan\"\n";

/// A bundle for `node` in `dir` (`ca.pem`, `node.pem`, `node.key`, and `join` as `join.toml`),
/// valid for `days` more days (negative: expired that long ago).
pub fn bundle(dir: &Path, node: &str, days: i64, join: Option<&str>) {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "Switchyard cluster CA test");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_pem = ca.self_signed(&ca_key).expect("ca").pem();
    let issuer = Issuer::new(ca, ca_key);
    let mut params = CertificateParams::new(vec![node.to_owned()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, node);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(days.abs() + 2);
    params.not_after = now + time::Duration::days(days);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &issuer).expect("sign");
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join("ca.pem"), ca_pem).expect("ca.pem");
    std::fs::write(dir.join("node.pem"), cert.pem()).expect("node.pem");
    std::fs::write(dir.join("node.key"), key.serialize_pem()).expect("node.key");
    if let Some(join) = join {
        std::fs::write(dir.join("join.toml"), join).expect("join.toml");
    }
}
