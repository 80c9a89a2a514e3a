//! What a kernel test needs, checked in one place, so that no test passes without running.
//!
//! Kernel tests need root (network namespaces, nftables, eBPF) and some programs (`ip`, `nft`,
//! `iptables-nft`, `ping`, `kubectl`, …). Two checks, one for each moment:
//!
//! - **Build time.** A build script calls [`emit_build_cfg`]. When the build runs without root
//!   and without `MASQ_REQUIRE_PRIVILEGED`, it sets the cfg `masq_unprivileged`, and every
//!   root-only test carries `#[cfg_attr(masq_unprivileged, ignore = "needs root")]`: a developer
//!   without root sees those tests listed as ignored, with the reason, never as passed.
//!   `scripts/test` (and so CI) sets `MASQ_REQUIRE_PRIVILEGED=1`, so nothing is ignored there.
//! - **Run time.** A test calls [`require`] before it touches the kernel: a missing need fails
//!   the test with its reason (a binary built as root but run without it, a program missing
//!   from `PATH`). [`unmet`] only says what is missing, for `masq demo` and the benchmarks.
//!
//! ```text
//! #[test]
//! #[cfg_attr(masq_unprivileged, ignore = "needs root")]
//! fn masquerades_in_a_namespace() {
//!     masq_needs::require(&["nft", "ping"]);
//!     // … build a topology, install a datapath, send traffic …
//! }
//! ```
#![deny(missing_docs)]

/// Set (to anything) when every kernel test must run: builds without root then ignore nothing,
/// and the tests fail for want of root instead. `scripts/test` sets it.
pub const REQUIRE_VAR: &str = "MASQ_REQUIRE_PRIVILEGED";

/// The cfg a build script sets when root-only tests are to be listed as ignored.
pub const UNPRIVILEGED_CFG: &str = "masq_unprivileged";

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// What a kernel test lacks here, if anything: root (to create network namespaces and load
/// programs) and the given programs, besides `ip`, which every namespace needs.
pub fn unmet(programs: &[&str]) -> Option<String> {
    if !is_root() {
        return Some("needs root (network namespaces, nftables, eBPF)".into());
    }
    missing_program(&[&["ip"], programs].concat())
}

/// The first of `programs` that cannot be started from `PATH`, as a reason.
fn missing_program(programs: &[&str]) -> Option<String> {
    programs.iter().find_map(|program| {
        let runs = std::process::Command::new(program)
            .arg("-V")
            .output()
            .is_ok();
        (!runs).then(|| format!("needs the {program} program on PATH"))
    })
}

/// Fails the calling test, with the reason, when it cannot run here ([`unmet`]). A kernel test
/// calls this before anything else; it never returns early on its own.
#[track_caller]
pub fn require(programs: &[&str]) {
    fail_on(unmet(programs));
}

/// [`require`] for a test that needs programs but not root (`kubectl kustomize`).
#[track_caller]
pub fn require_programs(programs: &[&str]) {
    fail_on(missing_program(programs));
}

#[track_caller]
fn fail_on(unmet: Option<String>) {
    let Some(reason) = unmet else {
        return;
    };
    let why = if std::env::var_os(REQUIRE_VAR).is_some() {
        format!("{REQUIRE_VAR} is set: every kernel test must run")
    } else {
        "a test that cannot run fails rather than pass unrun; built without root, the \
         root-only tests are listed as ignored instead"
            .to_string()
    };
    panic!("this test {reason} ({why})");
}

/// For build scripts: declares the cfg [`UNPRIVILEGED_CFG`] and sets it when the build runs
/// without root and without [`REQUIRE_VAR`]. Builds again when either may have changed (`sudo`
/// sets `SUDO_UID` and `USER`).
pub fn emit_build_cfg() {
    println!("cargo::rustc-check-cfg=cfg({UNPRIVILEGED_CFG})");
    for var in [REQUIRE_VAR, "USER", "SUDO_UID"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    if lists_root_tests_as_ignored(is_root(), std::env::var_os(REQUIRE_VAR).is_some()) {
        println!("cargo::rustc-cfg={UNPRIVILEGED_CFG}");
    }
}

/// A build without root lists root-only tests as ignored, unless every test must run.
fn lists_root_tests_as_ignored(root: bool, required: bool) -> bool {
    !root && !required
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unprivileged_build_without_the_variable_ignores_root_tests() {
        assert!(lists_root_tests_as_ignored(false, false));
        assert!(
            !lists_root_tests_as_ignored(false, true),
            "CI without root: they fail"
        );
        assert!(!lists_root_tests_as_ignored(true, false));
    }

    #[test]
    fn a_missing_program_is_named() {
        let reason = missing_program(&["sh", "masq-no-such-program"]).unwrap();
        assert_eq!(reason, "needs the masq-no-such-program program on PATH");
        assert_eq!(missing_program(&["sh"]), None);
    }

    #[test]
    #[should_panic(expected = "this test needs the masq-no-such-program program on PATH")]
    fn a_test_that_cannot_run_fails_with_the_reason() {
        require_programs(&["masq-no-such-program"]);
    }
}
