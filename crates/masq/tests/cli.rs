//! The `masq` binary as users and scripts see it: exit codes, one line per problem, output
//! shapes. Each test runs the real binary in its own temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn masq(args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_masq"))
        .args(args)
        .output()
        .expect("masq runs");
    Run {
        code: status.code().expect("masq exits, not killed"),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn no_panic(run: &Run) {
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("backtrace"),
        "{}",
        run.stderr
    );
}

// === validate ===

#[test]
fn validate_accepts_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "config",
        "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqLinkLocal: true\nresyncInterval: 5m\nextra: 1\n",
    );
    let run = masq(&["validate", path.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("valid"), "{}", run.stdout);
    // The unknown key is a warning on stderr.
    assert!(
        run.stderr.contains("warning") && run.stderr.contains("\"extra\""),
        "{}",
        run.stderr
    );
}

#[test]
fn validate_lists_every_problem_one_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "config",
        "nonMasqueradeCIDRs:\n  - 10.0.0.1/8\n  - 10.256.0.0/16\n  - abcdefg\n  - fd00::/8\nresyncInterval: 10ms\n",
    );
    let run = masq(&["validate", path.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    no_panic(&run);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 5, "{}", run.stderr);
    let prefix = format!("masq: {}: ", path.display());
    assert!(lines.iter().all(|l| l.starts_with(&prefix)), "{lines:#?}");
    assert!(lines[0].contains("10.0.0.0/8"));
    assert!(lines[1].contains("\"10.256.0.0/16\""));
    assert!(lines[2].contains("\"abcdefg\""));
    assert!(lines[3].contains("--enable-ipv6"));
    assert!(lines[4].contains("resyncInterval"));
    // With IPv6 on, that line goes away.
    let run = masq(&["validate", "--enable-ipv6", path.to_str().unwrap()]);
    assert_eq!(run.stderr.lines().count(), 4, "{}", run.stderr);
}

#[test]
fn validate_reports_syntax_errors_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = write(dir.path(), "yaml", "*");
    let run = masq(&["validate", yaml.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("invalid YAML at line 1 column 1"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    let json = write(dir.path(), "json", "{*");
    let run = masq(&["validate", json.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("invalid JSON at line 1 column 2"),
        "{}",
        run.stderr
    );
}

#[test]
fn validate_a_missing_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent");
    let run = masq(&["validate", path.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no such file"), "{}", run.stderr);
}

// === explain ===

#[test]
fn explain_text_table() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("absent");
    let run = masq(&[
        "explain",
        "--config",
        config.to_str().unwrap(),
        "--src",
        "10.244.1.5",
        "8.8.8.8",
        "10.1.2.3",
        "169.254.169.254",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["DESTINATION", "SOURCE", "ACTION", "REASON", "MATCHED"],
            vec!["8.8.8.8", "10.244.1.5", "masquerade", "default", "-"],
            vec![
                "10.1.2.3",
                "10.244.1.5",
                "keep",
                "non-masquerade-cidr",
                "10.0.0.0/8"
            ],
            vec![
                "169.254.169.254",
                "10.244.1.5",
                "keep",
                "link-local",
                "169.254.0.0/16"
            ],
        ]
    );
}

#[test]
fn explain_json_shape_follows_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config",
        "nonMasqueradeCIDRs: [10.0.0.0/8, 10.1.0.0/16]\nnonMasqueradeSrcCIDRs: [10.244.9.0/24]\n",
    );
    let run = masq(&[
        "explain",
        "--config",
        config.to_str().unwrap(),
        "-o",
        "json",
        "10.1.2.3",
        "192.168.1.1",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let value: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        value,
        json!([
            {"destination": "10.1.2.3", "source": null, "action": "keep",
             "reason": "non-masquerade-cidr", "matched": "10.1.0.0/16"},
            {"destination": "192.168.1.1", "source": null, "action": "masquerade",
             "reason": "default", "matched": null},
        ])
    );
    let run = masq(&[
        "explain",
        "--config",
        config.to_str().unwrap(),
        "--output=json",
        "--src=10.244.9.9",
        "8.8.8.8",
    ]);
    let value: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        value,
        json!([{"destination": "8.8.8.8", "source": "10.244.9.9", "action": "keep",
                "reason": "non-masquerade-src", "matched": "10.244.9.0/24"}])
    );
}

#[test]
fn explain_pod_cidr_and_node_ip() {
    let run = masq(&[
        "explain",
        "--config=/nonexistent/masq-test",
        "--pod-cidr=10.244.0.0/16",
        "--node-ip=203.0.113.5",
        "--src=172.17.0.2",
        "-o",
        "json",
        "8.8.8.8",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let value: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(value[0]["reason"], "not-a-pod");
    let run = masq(&[
        "explain",
        "--config=/nonexistent/masq-test",
        "--node-ip=203.0.113.5",
        "--rfc1918-defaults",
        "-o=json",
        "203.0.113.5",
    ]);
    let value: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(value[0]["reason"], "local", "{}", run.stdout);
    assert_eq!(value[0]["matched"], "203.0.113.5/32");
}

#[test]
fn explain_names_a_bad_destination() {
    let run = masq(&[
        "explain",
        "--config=/nonexistent/masq-test",
        "8.8.8.8",
        "abcdefg",
    ]);
    assert_eq!(run.code, 1);
    no_panic(&run);
    assert_eq!(
        run.stderr.trim(),
        "masq: destination \"abcdefg\" is not an IP address"
    );
    assert!(run.stdout.is_empty());
}

#[test]
fn explain_with_an_invalid_config_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config", "nonMasqueradeCIDRs: [10.0.0.1/8]\n");
    let run = masq(&["explain", "--config", config.to_str().unwrap(), "8.8.8.8"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("did you mean 10.0.0.0/8?"),
        "{}",
        run.stderr
    );
}

// === flags ===

#[test]
fn bad_flag_values_exit_1_naming_flag_and_value() {
    let run = masq(&["explain", "--pod-cidr", "10.244.1.1/16", "8.8.8.8"]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr.trim(),
        "masq: --pod-cidr: \"10.244.1.1/16\" has host bits set; did you mean 10.244.0.0/16?"
    );
    let run = masq(&["agent", "--port-range", "9-1", "--snat-ip", "x"]);
    assert_eq!(run.code, 1);
    assert_eq!(run.stderr.lines().count(), 2, "{}", run.stderr);
    // clap's own errors exit 1 as well.
    let run = masq(&["agent", "--datapath", "pcap"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("pcap"), "{}", run.stderr);
    let run = masq(&["frobnicate"]);
    assert_eq!(run.code, 1);
}

#[test]
fn help_and_version_exit_0() {
    let run = masq(&["--help"]);
    assert_eq!(run.code, 0);
    for command in [
        "agent", "explain", "validate", "render", "status", "nat", "cleanup", "demo",
    ] {
        assert!(run.stdout.contains(command), "{command} missing from help");
    }
    assert_eq!(masq(&["--version"]).code, 0);
    assert_eq!(masq(&["agent", "--help"]).code, 0);
}

/// `--egress-interface` wins over `--interfaces` (issue 13, item 7): a listed interface other
/// than the egress interface is steered where it is a secondary uplink, never given both.
#[test]
fn render_ebpf_shows_the_hooks_of_each_interface() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config", "nonMasqueradeCIDRs: [10.0.0.0/8]\n");
    let run = masq(&[
        "render",
        "--datapath",
        "ebpf",
        "--config",
        config.to_str().unwrap(),
        "--egress-interface",
        "eth0",
        "--interfaces",
        "eth0,eth1",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let hooks: Vec<&str> = run
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("# attachments"))
        .skip(1)
        .take(5)
        .collect();
    assert_eq!(
        hooks,
        [
            "eth0 egress masq_egress",
            "eth0 ingress masq_ingress",
            "eth1 egress masq_steer if it is a secondary uplink (a default route in some table), else masq_egress",
            "eth1 ingress masq_ingress",
            "# every other secondary uplink: egress masq_steer, ingress masq_ingress",
        ],
        "{}",
        run.stdout
    );
}

#[test]
fn render_iptables_splits_to_ports_per_protocol_like_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config", "nonMasqueradeCIDRs: [10.0.0.0/8]\n");
    let config = config.to_str().unwrap();
    let run = masq(&[
        "render",
        "--datapath",
        "iptables",
        "--config",
        config,
        "--to-ports",
        "1024-29999,32768-65535",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for proto in ["tcp", "udp", "sctp"] {
        let rules: Vec<&str> = run
            .stdout
            .lines()
            .filter(|l| l.contains(&format!("-p {proto} ")))
            .collect();
        assert_eq!(rules.len(), 2, "{proto}: {rules:?}");
        assert!(rules[0].contains("--probability") && rules[0].contains("--to-ports 1024-29999"));
        assert!(rules[1].contains("--to-ports 32768-65535") && !rules[1].contains("--probability"));
    }
    let bad = masq(&[
        "render",
        "--datapath",
        "iptables",
        "--config",
        config,
        "--to-ports",
        "5-3",
    ]);
    assert_eq!(bad.code, 1);
    assert_eq!(bad.stderr.lines().count(), 1, "{}", bad.stderr);
    // `--to-ports` is upstream's name for `--port-range`; the message names the latter.
    assert!(
        bad.stderr.contains("--port-range") && bad.stderr.contains("5-3"),
        "{}",
        bad.stderr
    );
    no_panic(&bad);
}

#[test]
fn explain_names_the_pool_address_each_pod_takes() {
    let pool = ["192.0.2.10", "192.0.2.20", "192.0.2.30"];
    let mut args = vec!["explain", "--config", "/nonexistent", "-o", "json"];
    for ip in pool {
        args.extend(["--snat-ip", ip]);
    }
    let pool: Vec<std::net::IpAddr> = pool.iter().map(|a| a.parse().unwrap()).collect();
    let mut seen = std::collections::BTreeSet::new();
    for host in 2..40u8 {
        let src = format!("10.244.1.{host}");
        let mut args = args.clone();
        args.extend(["--src", &src, "8.8.8.8", "10.1.2.3"]);
        let run = masq(&args);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let answer: Value = serde_json::from_str(&run.stdout).unwrap();
        let want = masq_datapath::pool::address_for(&pool, src.parse().unwrap()).unwrap();
        assert_eq!(answer[0]["snat_ip"], json!(want.to_string()), "{src}");
        assert!(answer[1].get("snat_ip").is_none(), "kept: no SNAT address");
        seen.insert(want);
    }
    assert_eq!(seen.len(), 3, "every address serves some pod");
    let text = masq(&[
        "explain",
        "--config",
        "/nonexistent",
        "--snat-ip",
        "192.0.2.10",
        "--src",
        "10.244.1.2",
        "8.8.8.8",
    ]);
    assert!(
        text.stdout.lines().next().unwrap().ends_with("SNAT"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("192.0.2.10"), "{}", text.stdout);
}

#[test]
fn render_nftables_hashes_the_pod_address_over_the_pool() {
    let run = masq(&[
        "render",
        "--datapath",
        "nftables",
        "--config",
        "/nonexistent",
        "--snat-ip",
        "192.0.2.10",
        "--snat-ip",
        "192.0.2.20",
        "--port-range",
        "1024-65535",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(
            "snat ip to jhash ip saddr mod 2 seed 0x6d617371 map { 0 : 192.0.2.10, 1 : 192.0.2.20 }:1024-65535 fully-random"
        ),
        "{}",
        run.stdout
    );
    // The operator's range covers the NodePort range: allowed, with a warning.
    assert!(
        run.stderr.contains(
            "warning: --port-range: 1024-65535 includes ports of the NodePort range 30000-32767"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn pool_and_port_mistakes_are_one_line_each() {
    let run = masq(&[
        "agent",
        "--snat-ip",
        "192.0.2.10",
        "--snat-ip",
        "2001:db8::1",
        "--enable-ipv6",
        "--port-range",
        "1024-2000,1500-3000",
        "--nodeport-range",
        "30000",
    ]);
    assert_eq!(run.code, 1);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stderr);
    assert!(
        lines[0].starts_with(
            "masq: --snat-ip: \"2001:db8::1\" is not of the same family as 192.0.2.10"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(
        lines[1],
        "masq: --port-range: \"1024-2000,1500-3000\": \"1500-3000\" overlaps 1024-2000"
    );
    let both = masq(&[
        "agent",
        "--snat-ip",
        "192.0.2.10",
        "--snat-ips-from-interface",
    ]);
    assert_eq!(both.code, 1, "{}", both.stderr);
}
