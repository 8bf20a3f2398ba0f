//! The shipped service files: the systemd unit passes `systemd-analyze verify` with no
//! warning about it, and the launchd plist, with a home filled in as docs/agent.md says, parses
//! as a plist whose paths are all absolute and per user. Neither is started here: no systemd
//! boot, no launchd (see docs/agent.md).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn service_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/service"))
}

fn read(name: &str) -> String {
    std::fs::read_to_string(service_dir().join(name)).expect("service file")
}

#[test]
fn the_systemd_unit_verifies_and_gives_the_runtime_a_writable_home_cache_and_path() {
    let unit = read("switchyard-agent.service");
    for line in [
        "ExecStart=/usr/local/bin/switchyard-agent run --config /etc/switchyard/agent.toml",
        "User=switchyard",
        "StateDirectory=switchyard",
        "CacheDirectory=switchyard",
        "Environment=HOME=/var/lib/switchyard",
        "Environment=HF_HOME=/var/cache/switchyard/huggingface",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "NoNewPrivileges=true",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line:?}:\n{unit}");
    }
    let path = unit
        .lines()
        .find_map(|l| l.strip_prefix("Environment=PATH="))
        .expect("a PATH");
    assert!(path.split(':').any(|p| p == "/opt/switchyard/venv/bin"), "{path}");
    assert!(path.split(':').any(|p| p == "/usr/bin"), "{path}");
    assert!(
        !unit.lines().any(|l| l.starts_with("PrivateDevices=")),
        "the runtime needs /dev/nvidia*"
    );

    // tests/run-all.sh installs systemd (for systemd-analyze) where it is missing.
    let version = Command::new("systemd-analyze").arg("--version").output().expect(
        "systemd-analyze must be installed to verify the unit (Debian's `systemd`; tests/run-all.sh installs it)",
    );
    assert!(version.status.success());
    // verify checks that ExecStart's program exists: point it at the agent just built.
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("switchyard-agent.service");
    let built = env!("CARGO_BIN_EXE_switchyard-agent");
    std::fs::write(&copy, unit.replace("/usr/local/bin/switchyard-agent", built)).expect("write");
    let verified = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze verify");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    let about_unit: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("switchyard-agent.service"))
        .collect();
    assert!(verified.status.success() && about_unit.is_empty(), "{said}");

    // The check itself sees mistakes: an unknown key is reported about the unit.
    let misspelt = unit.replace("PrivateTmp=true", "PrivateTmp=true\nPrivateTpm=true");
    std::fs::write(&copy, misspelt.replace("/usr/local/bin/switchyard-agent", built)).expect("write");
    let broken = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("verify");
    let said = String::from_utf8_lossy(&broken.stderr);
    assert!(
        said.contains("switchyard-agent.service") && said.contains("PrivateTpm"),
        "{said}"
    );
}

const HOME: &str = "/Users/ada";

/// The plist as docs/agent.md installs it, as JSON through python3's plistlib; None without python3.
fn installed_plist() -> Option<Value> {
    let template = read("dev.switchyard.agent.plist");
    assert!(
        template.contains("__HOME__"),
        "the sed step in docs/agent.md fills in __HOME__"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dev.switchyard.agent.plist");
    std::fs::write(&path, template.replace("__HOME__", HOME)).expect("write");
    let script = "import json, plistlib, sys\nwith open(sys.argv[1], 'rb') as f:\n    print(json.dumps(plistlib.load(f, fmt=plistlib.FMT_XML)))";
    let Ok(parsed) = Command::new("python3").args(["-c", script]).arg(&path).output() else {
        eprintln!("python3 is not installed: the plist was not parsed");
        return None;
    };
    assert!(parsed.status.success(), "{}", String::from_utf8_lossy(&parsed.stderr));
    Some(serde_json::from_slice(&parsed.stdout).expect("json"))
}

#[test]
fn the_launchd_plist_with_the_home_filled_in_runs_the_agent_per_user_with_absolute_paths() {
    let Some(plist) = installed_plist() else { return };
    assert_eq!(plist["Label"], "dev.switchyard.agent");
    let arguments: Vec<&str> = plist["ProgramArguments"]
        .as_array()
        .expect("ProgramArguments")
        .iter()
        .map(|a| a.as_str().expect("string"))
        .collect();
    let config = format!("{HOME}/Library/Application Support/Switchyard/agent.toml");
    assert_eq!(
        arguments,
        ["/usr/local/bin/switchyard-agent", "run", "--config", config.as_str()]
    );
    let log = format!("{HOME}/Library/Logs/switchyard-agent.log");
    assert_eq!(plist["StandardOutPath"], log.as_str());
    assert_eq!(plist["StandardErrorPath"], log.as_str());
    assert_eq!(
        (plist["RunAtLoad"].as_bool(), plist["KeepAlive"].as_bool()),
        (Some(true), Some(true))
    );

    let path = plist["EnvironmentVariables"]["PATH"].as_str().expect("PATH");
    let entries: Vec<&str> = path.split(':').collect();
    for wanted in [
        format!("{HOME}/Library/Application Support/Switchyard/venv/bin"),
        format!("{HOME}/.local/bin"),
        "/opt/homebrew/bin".to_owned(),
        "/usr/local/bin".to_owned(),
        "/usr/bin".to_owned(),
    ] {
        assert!(entries.contains(&wanted.as_str()), "{wanted} not in {path}");
    }
    let paths = [arguments[0], arguments[3], &log]
        .into_iter()
        .chain(entries.iter().copied());
    for p in paths {
        assert!(
            p.starts_with('/') && !p.contains('~') && !p.contains('$'),
            "{p:?} is not absolute"
        );
        assert!(
            !p.starts_with("/usr/local/var") && !p.starts_with("/usr/local/etc"),
            "{p:?} is root's"
        );
    }
}
