//! [`ensure`] against stand-ins for rustc and rustup (shell scripts: the real target cannot
//! be removed from the machine the tests run on): a rustc whose target library folder is
//! empty until a rustup stand-in fills it, or fails to.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;

/// A folder with `rustc` (prints `libdir`) and `rustup` (runs `rustup_body`, logging its
/// arguments to `rustup.log`).
fn stand_ins(dir: &Path, rustup_body: &str) -> (Toolchain, PathBuf) {
    let libdir = dir.join("lib/rustlib/wasm32-wasip2/lib");
    std::fs::create_dir_all(&libdir).expect("libdir");
    let script = |name: &str, body: &str| {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    };
    let rustc = script("rustc", &format!("echo {}", libdir.display()));
    let rustup = script(
        "rustup",
        &format!("echo \"$@\" >> {}/rustup.log\n{rustup_body}", dir.display()),
    );
    (
        Toolchain {
            rustc,
            rustup,
            toolchain: Some("stable-x86_64-unknown-linux-gnu".into()),
        },
        libdir,
    )
}

fn rustup_calls(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("rustup.log")).unwrap_or_default()
}

#[test]
fn a_present_target_is_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (toolchain, libdir) = stand_ins(dir.path(), "exit 1");
    std::fs::write(libdir.join("libstd.rlib"), "").expect("std");
    assert_eq!(ensure(&toolchain), Ok(Ensured::Present));
    assert_eq!(rustup_calls(dir.path()), "", "rustup is not asked");
}

#[test]
fn a_missing_target_is_added_with_rustup_for_the_builds_toolchain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (toolchain, libdir) = stand_ins(dir.path(), "");
    let fill = dir.path().join("rustup");
    std::fs::write(
        &fill,
        format!(
            "#!/bin/sh\necho \"$@\" >> {0}/rustup.log\ntouch {1}/libstd.rlib\n",
            dir.path().display(),
            libdir.display()
        ),
    )
    .expect("rustup");
    assert_eq!(ensure(&toolchain), Ok(Ensured::Added));
    assert_eq!(
        rustup_calls(dir.path()),
        "target add wasm32-wasip2 --toolchain stable-x86_64-unknown-linux-gnu\n"
    );
}

#[test]
fn a_target_that_cannot_be_added_stops_the_build_with_one_line_that_says_what_to_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    // rustup fails (offline, or a toolchain it does not manage).
    let (toolchain, _) = stand_ins(dir.path(), "echo 'error: no network' >&2; exit 1");
    assert_eq!(ensure(&toolchain), Err(CANNOT_ADD.to_owned()));
    assert!(!CANNOT_ADD.contains('\n'));

    // rustup says it worked but the target is still not there.
    let (toolchain, _) = stand_ins(dir.path(), "exit 0");
    assert_eq!(ensure(&toolchain), Err(CANNOT_ADD.to_owned()));

    // No rustup at all (a distribution's rustc).
    let missing = Toolchain {
        rustup: dir.path().join("no-such-rustup"),
        ..toolchain
    };
    let error = ensure(&missing).expect_err("no rustup");
    assert!(
        error.starts_with(CANNOT_ADD) && error.contains("rustup could not start"),
        "{error}"
    );
}
