//! Whether a test runs here, or says it skipped — one rule for the whole suite:
//!
//! - under CI (`CI` set; `.ci/run` sets it) or the heavy tier (`./test.sh --heavy`), a test
//!   that cannot run **fails**, naming what is missing;
//! - under `./test.sh` (which installs the tools the tests drive), a missing tool fails too;
//! - elsewhere (a bare `cargo test`), the test says why it skipped and passes.

/// True under CI or the heavy tier: nothing may skip.
pub fn strict() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("MESHRPC_HEAVY").is_some()
}

/// The test cannot run here because of `missing`: fails where nothing may skip (or where
/// `./test.sh` should have installed it, `installed_by_test_sh`), else says it skipped.
pub fn cannot_run(missing: &str, installed_by_test_sh: bool) {
    let required = strict() || (installed_by_test_sh && std::env::var_os("MESHRPC_REQUIRE_TOOLS").is_some());
    assert!(!required, "this test cannot run here: {missing}");
    eprintln!("SKIPPED: {missing}");
}

/// True if the heavy tier runs (`./test.sh --heavy`, CI). Otherwise `what` says it
/// skipped — and under CI, which must run it, the test fails.
pub fn heavy(what: &str) -> bool {
    if std::env::var_os("MESHRPC_HEAVY").is_some() {
        return true;
    }
    cannot_run(&format!("{what} is in the heavy tier (./test.sh --heavy)"), false);
    false
}

/// True if the external tool `name` runs (`./test.sh` installs it).
pub fn tool(name: &str) -> bool {
    if std::process::Command::new(name).arg("--version").output().is_ok() {
        return true;
    }
    cannot_run(&format!("{name} is not installed (./test.sh installs it)"), true);
    false
}

/// The Python that has `modules` (PyPI packages `./test.sh` installs into target/py):
/// `MESHRPC_PYTHON`, else python3; without them, skipped or failed as any missing tool.
pub fn python(modules: &[&str]) -> Option<String> {
    let python = std::env::var("MESHRPC_PYTHON").unwrap_or_else(|_| "python3".into());
    let imports = format!("import {}", modules.join(", "));
    let has = std::process::Command::new(&python).args(["-c", &imports]).output().is_ok_and(|o| o.status.success());
    if !has {
        cannot_run(&format!("{python} has no {} (./test.sh installs it)", modules.join(", ")), true);
        return None;
    }
    Some(python)
}

/// True if network namespaces can be made here (root, `ip`); else skipped or failed
/// (also under `./test.sh` as root, which sets `MESHRPC_REQUIRE_NETNS`).
pub fn netns() -> bool {
    match crate::netns::Net::unavailable() {
        None => true,
        Some(why) => {
            let missing = format!("network namespaces ({why}): run as root");
            assert!(std::env::var_os("MESHRPC_REQUIRE_NETNS").is_none(), "this test cannot run here: {missing}");
            cannot_run(&missing, false);
            false
        }
    }
}
