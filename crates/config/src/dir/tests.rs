//! The merge rules one by one, errors naming file, key, value and why, reading a kubelet-style
//! directory, and a property test of the merge against the rules applied to each file alone.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::RESERVED_CIDRS;

fn file(name: &str, text: &str) -> ConfigFile {
    ConfigFile {
        path: PathBuf::from("/cfg").join(name),
        bytes: text.as_bytes().to_vec(),
    }
}

fn merged(files: &[ConfigFile]) -> Merged {
    merge(files, &ParseOptions::default()).unwrap_or_else(|e| panic!("should merge:\n{e}"))
}

fn merge_error(files: &[ConfigFile]) -> String {
    match merge(files, &ParseOptions::default()) {
        Ok(m) => panic!("should not merge, got {:?}", m.config),
        Err(e) => e.to_string(),
    }
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn lists_are_unioned_in_file_order_each_prefix_once() {
    let m = merged(&[
        file("ip-masq-a", "nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12]\nmasqueradeCIDRs: [10.5.0.0/16]"),
        file("ip-masq-b", "nonMasqueradeCIDRs: [172.16.0.0/12, 100.64.0.0/10]\nnonMasqueradeSrcCIDRs: [10.244.9.0/24]"),
    ]);
    let c = &m.config;
    assert_eq!(
        c.non_masquerade_cidrs,
        nets(&["10.0.0.0/8", "172.16.0.0/12", "100.64.0.0/10"])
    );
    assert_eq!(c.masquerade_cidrs, nets(&["10.5.0.0/16"]));
    assert_eq!(c.non_masquerade_src_cidrs, nets(&["10.244.9.0/24"]));
    assert_eq!(
        m.files,
        [
            PathBuf::from("/cfg/ip-masq-a"),
            PathBuf::from("/cfg/ip-masq-b")
        ]
    );
}

#[test]
fn no_file_setting_non_masquerade_cidrs_means_the_default_set() {
    let m = merged(&[
        file("ip-masq-a", "masqueradeCIDRs: [10.5.0.0/16]"),
        file("ip-masq-b", "masqLinkLocal: false"),
    ]);
    assert_eq!(m.config.non_masquerade_cidrs, RESERVED_CIDRS);
    // One file setting the key replaces the default set for the union.
    let m = merged(&[
        file("ip-masq-a", "nonMasqueradeCIDRs: [10.0.0.0/8]"),
        file("ip-masq-b", "masqLinkLocal: false"),
    ]);
    assert_eq!(m.config.non_masquerade_cidrs, nets(&["10.0.0.0/8"]));
    // An empty list is a setting: no CIDRs at all.
    let m = merged(&[file("ip-masq-a", "nonMasqueradeCIDRs: []")]);
    assert!(m.config.non_masquerade_cidrs.is_empty());
}

#[test]
fn flags_are_true_if_any_file_sets_them_true() {
    let m = merged(&[
        file(
            "ip-masq-a",
            "masqLinkLocal: false\nmasqLinkLocalIPv6: false",
        ),
        file("ip-masq-b", "masqLinkLocal: true"),
    ]);
    assert!(m.config.masq_link_local);
    assert!(!m.config.masq_link_local_ipv6);
}

#[test]
fn the_smallest_resync_interval_and_cidr_limit_win() {
    let m = merged(&[
        file("ip-masq-a", "resyncInterval: 5m\ncidrLimit: 100"),
        file("ip-masq-b", "resyncInterval: 30s\ncidrLimit: 5000"),
        file("ip-masq-c", "masqLinkLocal: true"),
    ]);
    assert_eq!(m.config.resync_interval, Duration::from_secs(30));
    assert_eq!(m.config.cidr_limit, 100);
    let m = merged(&[file("ip-masq-c", "masqLinkLocal: true")]);
    assert_eq!(m.config.resync_interval, crate::DEFAULT_RESYNC_INTERVAL);
    assert_eq!(m.config.cidr_limit, crate::DEFAULT_CIDR_LIMIT);
}

#[test]
fn the_limit_applies_to_the_union_and_names_the_file_that_set_it() {
    let error = merge_error(&[
        file(
            "ip-masq-a",
            "cidrLimit: 2\nnonMasqueradeCIDRs: [10.0.0.0/8]",
        ),
        file(
            "ip-masq-b",
            "nonMasqueradeCIDRs: [172.16.0.0/12]\nmasqueradeCIDRs: [10.5.0.0/16]",
        ),
    ]);
    assert_eq!(
        error,
        "/cfg/ip-masq-a: nonMasqueradeCIDRs and masqueradeCIDRs: 3 entries in the 2 files \
         together, over the smallest cidrLimit, 2"
    );
}

#[test]
fn one_invalid_file_rejects_the_merge_naming_file_key_value_and_why() {
    let error = merge_error(&[
        file("ip-masq-a", "nonMasqueradeCIDRs: [10.0.0.0/8]"),
        file(
            "ip-masq-b",
            "masqueradeCIDRs: [10.5.0.1/16]\nresyncInterval: 10",
        ),
    ]);
    assert_eq!(
        error.lines().collect::<Vec<_>>(),
        [
            "/cfg/ip-masq-b: masqueradeCIDRs[0]: \"10.5.0.1/16\" has host bits set; did you mean 10.5.0.0/16?",
            "/cfg/ip-masq-b: resyncInterval: expected a duration string like \"60s\", \"5m\" or \"1h30m\", found a number (10)",
        ]
    );
}

#[test]
fn a_prefix_kept_in_one_file_and_masqueraded_in_another_is_an_error() {
    let error = merge_error(&[
        file(
            "ip-masq-platform",
            "nonMasqueradeCIDRs: [10.0.0.0/8, 10.5.0.0/16]",
        ),
        file("ip-masq-tenant", "masqueradeCIDRs: [10.5.0.0/16]"),
    ]);
    assert_eq!(
        error,
        "/cfg/ip-masq-tenant: masqueradeCIDRs: 10.5.0.0/16 is also in nonMasqueradeCIDRs of \
         /cfg/ip-masq-platform; a destination cannot both keep the pod address and be \
         masqueraded, remove it from one of the lists"
    );
}

#[test]
fn origins_name_the_first_file_listing_each_prefix() {
    let m = merged(&[
        file(
            "ip-masq-a",
            "nonMasqueradeCIDRs: [10.0.0.0/8]\nnonMasqueradeSrcCIDRs: [10.244.9.0/24]",
        ),
        file(
            "ip-masq-b",
            "nonMasqueradeCIDRs: [10.0.0.0/8, 100.64.0.0/10]\nmasqueradeCIDRs: [10.5.0.0/16]",
        ),
    ]);
    let o = &m.origins;
    let at = |list, cidr: &str| {
        o.file_of(list, &cidr.parse().unwrap())
            .map(Path::to_path_buf)
    };
    assert_eq!(
        at(CidrList::NonMasquerade, "10.0.0.0/8"),
        Some("/cfg/ip-masq-a".into())
    );
    assert_eq!(
        at(CidrList::NonMasquerade, "100.64.0.0/10"),
        Some("/cfg/ip-masq-b".into())
    );
    assert_eq!(
        at(CidrList::Masquerade, "10.5.0.0/16"),
        Some("/cfg/ip-masq-b".into())
    );
    assert_eq!(
        at(CidrList::NonMasqueradeSrc, "10.244.9.0/24"),
        Some("/cfg/ip-masq-a".into())
    );
    assert_eq!(at(CidrList::Masquerade, "10.0.0.0/8"), None);
    // The default set comes from no file.
    let m = merged(&[file("ip-masq-a", "masqLinkLocal: true")]);
    assert_eq!(
        m.origins
            .file_of(CidrList::NonMasquerade, &RESERVED_CIDRS[0]),
        None
    );
}

#[test]
fn warnings_name_their_file() {
    let m = merged(&[file("ip-masq-a", "masqLinkLocaL: true")]);
    assert_eq!(m.warnings.len(), 1);
    assert!(
        m.warnings[0].starts_with("/cfg/ip-masq-a: unknown key \"masqLinkLocaL\""),
        "{:?}",
        m.warnings
    );
}

/// kubelet's layout: each key a symlink through `..data` into a timestamped directory.
fn kubelet_volume(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("..2026_01_01_00_00_00.1");
    std::fs::create_dir(&data).unwrap();
    for (name, text) in files {
        std::fs::write(data.join(name), text).unwrap();
        std::os::unix::fs::symlink(Path::new("..data").join(name), dir.path().join(name)).unwrap();
    }
    std::os::unix::fs::symlink(data.file_name().unwrap(), dir.path().join("..data")).unwrap();
    dir
}

#[test]
fn a_directory_is_read_through_kubelets_links_and_other_names_are_ignored() {
    let dir = kubelet_volume(&[
        ("ip-masq-b", "masqueradeCIDRs: [10.5.0.0/16]"),
        ("ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8]"),
        ("config", "nonMasqueradeCIDRs: [not a cidr]"),
    ]);
    // A dangling key (removed from the ConfigMap, its link not yet gone) is not a file.
    std::os::unix::fs::symlink("..data/ip-masq-gone", dir.path().join("ip-masq-gone")).unwrap();
    let m = load_dir(dir.path(), &ParseOptions::default()).unwrap();
    let names: Vec<String> = m
        .files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["ip-masq-agent", "ip-masq-b"]);
    assert_eq!(m.config.non_masquerade_cidrs, nets(&["10.0.0.0/8"]));
    assert_eq!(m.config.masquerade_cidrs, nets(&["10.5.0.0/16"]));
}

#[test]
fn a_missing_or_empty_directory_means_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let defaults = |path: &Path| load_dir(path, &ParseOptions::default()).unwrap().config;
    assert_eq!(defaults(dir.path()), Config::default());
    assert_eq!(defaults(&dir.path().join("absent")), Config::default());
}

#[test]
fn an_oversized_file_is_named_with_its_size_on_disk() {
    let big = "#".repeat(MAX_FILE_BYTES as usize + 10);
    let dir = kubelet_volume(&[("ip-masq-big", &big)]);
    let error = load_dir(dir.path(), &ParseOptions::default()).unwrap_err();
    assert_eq!(
        error.problems()[0].1,
        Problem::TooLarge {
            size: MAX_FILE_BYTES + 10
        }
    );
}

// === the merge against each file read alone ===

/// What one generated file sets; `None` leaves the key out.
#[derive(Clone, Debug)]
struct FileKeys {
    keep: Option<Vec<IpNet>>,
    forced: Option<Vec<IpNet>>,
    link_local: Option<bool>,
    resync_seconds: Option<u64>,
}

impl FileKeys {
    fn yaml(&self) -> String {
        let list = |v: &[IpNet]| {
            let items: Vec<String> = v.iter().map(|n| n.to_string()).collect();
            format!("[{}]", items.join(", "))
        };
        let mut text = String::new();
        if let Some(keep) = &self.keep {
            text += &format!("nonMasqueradeCIDRs: {}\n", list(keep));
        }
        if let Some(forced) = &self.forced {
            text += &format!("masqueradeCIDRs: {}\n", list(forced));
        }
        if let Some(flag) = self.link_local {
            text += &format!("masqLinkLocal: {flag}\n");
        }
        if let Some(s) = self.resync_seconds {
            text += &format!("resyncInterval: {s}s\n");
        }
        text
    }
}

/// Keep and forced prefixes from disjoint halves of 10/8, so no file and no merge is invalid.
fn file_keys() -> impl Strategy<Value = FileKeys> {
    let prefix = |second: std::ops::Range<u8>| {
        (second, 8u8..=24).prop_map(|(b, len)| {
            IpNet::new(IpAddr::V4(Ipv4Addr::new(10, b, 0, 0)), len.max(9))
                .unwrap()
                .trunc()
        })
    };
    (
        prop::option::of(prop::collection::vec(prefix(0..128), 0..4)),
        prop::option::of(prop::collection::vec(prefix(128..255), 0..3)),
        prop::option::of(any::<bool>()),
        prop::option::of(1u64..600),
    )
        .prop_map(|(keep, forced, link_local, resync_seconds)| FileKeys {
            keep,
            forced,
            link_local,
            resync_seconds,
        })
}

proptest! {
    #[test]
    fn the_merge_follows_the_rules_over_the_files_alone(
        keys in prop::collection::vec(file_keys(), 1..5),
        probes in prop::collection::vec(any::<u32>(), 16),
    ) {
        let files: Vec<ConfigFile> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| file(&format!("ip-masq-{i}"), &k.yaml()))
            .collect();
        let alone: Vec<Config> = files
            .iter()
            .map(|f| crate::parse(&f.bytes, &ParseOptions::default()).unwrap().config)
            .collect();
        let m = merged(&files);
        let covered = |nets: &[IpNet], addr: IpAddr| nets.iter().any(|n| n.contains(&addr));
        for probe in probes {
            // Probes in 10/8 mostly, so they hit the generated prefixes.
            let addr = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (probe & 0x00ff_ffff)));
            let setters: Vec<&Config> = alone
                .iter()
                .zip(&keys)
                .filter(|(_, k)| k.keep.is_some())
                .map(|(c, _)| c)
                .collect();
            let keep = if setters.is_empty() {
                covered(&RESERVED_CIDRS, addr)
            } else {
                setters.iter().any(|c| covered(&c.non_masquerade_cidrs, addr))
            };
            prop_assert_eq!(covered(&m.config.non_masquerade_cidrs, addr), keep, "{}", addr);
            let forced = alone.iter().any(|c| covered(&c.masquerade_cidrs, addr));
            prop_assert_eq!(covered(&m.config.masquerade_cidrs, addr), forced, "{}", addr);
        }
        prop_assert_eq!(
            m.config.masq_link_local,
            alone.iter().any(|c| c.masq_link_local)
        );
        let resync = keys
            .iter()
            .zip(&alone)
            .filter(|(k, _)| k.resync_seconds.is_some())
            .map(|(_, c)| c.resync_interval)
            .min()
            .unwrap_or(crate::DEFAULT_RESYNC_INTERVAL);
        prop_assert_eq!(m.config.resync_interval, resync);
        // Each prefix once, every one traced to a file that lists it.
        for cidr in &m.config.masquerade_cidrs {
            let from = m.origins.file_of(CidrList::Masquerade, cidr).unwrap();
            let index = m.files.iter().position(|f| f == from).unwrap();
            prop_assert!(alone[index].masquerade_cidrs.contains(cidr));
        }
        let mut unique = m.config.non_masquerade_cidrs.clone();
        unique.dedup();
        unique.sort();
        unique.dedup();
        prop_assert_eq!(unique.len(), m.config.non_masquerade_cidrs.len());
    }
}
