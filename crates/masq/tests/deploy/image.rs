//! The image the DaemonSets run: masq as its entrypoint, the tools its datapaths call, and the
//! workspace's Rust to build it.

use crate::manifests::repo_root;

#[test]
fn image_runs_masq_with_the_tools_its_datapaths_call() {
    // The DaemonSets pass only `args`, so the image's entrypoint must be masq itself.
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let runtime_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(runtime_stage.contains(r#"ENTRYPOINT ["/usr/local/bin/masq"]"#));
    for package in ["nftables", "iptables"] {
        assert!(
            runtime_stage.contains(&format!(" {package}")),
            "the runtime image lacks {package}"
        );
    }
    // The builder's toolchain is the workspace's.
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let rust_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("workspace rust-version")
        .trim_matches('"');
    assert!(
        dockerfile.contains(&format!("ARG RUST_VERSION={rust_version}\n")),
        "Dockerfile builds with another Rust than {rust_version}"
    );
}
