//! A cluster on loopback for end-to-end tests: certificates from `switchyard certs`, an
//! admin token, a controller config, and agent configs that link to it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{BIN, Controller};

/// A cluster folder: certificates, admin token, controller config.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub token: String,
}

pub fn switchyard(args: &[&str]) {
    let output = Command::new(BIN).args(args).output().expect("run switchyard");
    assert!(
        output.status.success(),
        "switchyard {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Cluster {
    pub fn new(sans: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        let mut args = vec!["certs", "init", "--dir", certs.to_str().expect("utf-8")];
        for san in sans {
            args.extend(["--san", san]);
        }
        switchyard(&args);
        let token = "e2e-admin-token-0123456789abcdef".to_owned();
        std::fs::write(dir.path().join("admin.token"), &token).expect("token");
        std::fs::write(
            dir.path().join("controller.toml"),
            "listen = \"127.0.0.1:0\"\n[admin]\ntoken_file = \"admin.token\"\n\
             [agents]\nlisten = \"127.0.0.1:0\"\nca = \"certs/ca.pem\"\ncert = \"certs/controller.pem\"\nkey = \"certs/controller.key\"\n",
        )
        .expect("controller.toml");
        Cluster { dir, token }
    }

    pub fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    pub fn issue(&self, node: &str, extra: &[&str]) -> PathBuf {
        let certs = self.certs();
        let mut args = vec![
            "certs",
            "issue",
            "--dir",
            certs.to_str().expect("utf-8"),
            "--node",
            node,
        ];
        args.extend(extra);
        switchyard(&args);
        certs.join("nodes").join(node)
    }

    pub fn controller(&self, agents_listen: &str) -> Controller {
        Controller::serve(&self.dir.path().join("controller.toml"), &self.token, agents_listen)
    }

    /// An agent config: simulated runtime, the given name, linking with `bundle`.
    pub fn agent_config(&self, file: &str, node: &str, bundle: &Path, address: &str) -> PathBuf {
        self.agent_config_with(
            file,
            node,
            bundle,
            address,
            "max_concurrency = 2\ntelemetry_interval_ms = 250\n[runtime]\nkind = \"simulated\"\nprofile = \"xeon\"\n",
            "qwen2.5-coder:7b",
        )
    }

    /// An agent config with `head` (limits, interval and the [runtime] table) serving the
    /// logical `qwen25-coder-7b` as `local`.
    pub fn agent_config_with(
        &self,
        file: &str,
        node: &str,
        bundle: &Path,
        address: &str,
        head: &str,
        local: &str,
    ) -> PathBuf {
        let path = self.dir.path().join(file);
        std::fs::write(
            &path,
            format!(
                "node = \"{node}\"\nmax_tokens = 2048\n{head}\
                 [[models]]\nlogical = \"qwen25-coder-7b\"\nlocal = \"{local}\"\ncontext_length = 256\n\
                 [controller]\naddress = \"{address}\"\nserver_name = \"localhost\"\n\
                 ca = \"{b}/ca.pem\"\ncert = \"{b}/node.pem\"\nkey = \"{b}/node.key\"\n",
                b = bundle.display()
            ),
        )
        .expect("agent config");
        path
    }

    /// Issue `node`'s certificate, write its config (`head`, serving the logical
    /// `qwen25-coder-7b` as `local`) and start its agent.
    pub fn agent(&self, node: &str, address: &str, head: &str, local: &str) -> crate::process::Agent {
        let bundle = self.issue(node, &[]);
        let config = self.agent_config_with(&format!("{node}.toml"), node, &bundle, address, head, local);
        crate::process::Agent::start(&config, None)
    }

    /// Add keys to the controller config's `[agents]` table (`nodes`, `revoked_serials`).
    pub fn configure_agents(&self, keys: &str) {
        let path = self.dir.path().join("controller.toml");
        let text = std::fs::read_to_string(&path).expect("controller.toml");
        let text = text.replacen("[agents]\n", &format!("[agents]\n{keys}"), 1);
        std::fs::write(&path, text).expect("controller.toml");
    }

    /// Append TOML to the controller config (policies, keys, limits).
    pub fn configure(&self, toml: &str) {
        let path = self.dir.path().join("controller.toml");
        let mut text = std::fs::read_to_string(&path).expect("controller.toml");
        text.push_str(toml);
        std::fs::write(&path, text).expect("controller.toml");
    }
}
