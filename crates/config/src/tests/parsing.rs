//! docs/config.md's parsing rules: YAML or JSON, empty and absent files, defaults key by key,
//! bad values named one per line, size and encoding limits, and never a panic on bad input.

use super::*;

#[test]
fn json_when_first_non_blank_byte_is_a_brace() {
    let config = ok("  \n\t{\"masqLinkLocal\": true, \"nonMasqueradeCIDRs\": [\"10.0.0.0/8\"]}");
    assert!(config.masq_link_local);
    assert_eq!(config.non_masquerade_cidrs, nets(&["10.0.0.0/8"]));
    // A YAML flow mapping starting with `{` is read as JSON, as the upstream agents do.
    let e = err("{masqLinkLocal: true}");
    assert!(
        e.to_string().starts_with("invalid JSON at line 1 column 2"),
        "{e}"
    );
}

#[test]
fn a_leading_byte_order_mark_is_allowed() {
    assert!(ok("\u{feff}masqLinkLocal: true").masq_link_local);
    assert!(ok("\u{feff}{\"masqLinkLocal\": true}").masq_link_local);
}

#[test]
fn json_with_unicode_escaped_strings() {
    let config = ok(
        r#"{"nonMasqueradeCIDRs": ["\u0031\u0030.0.0.0/8"], "\u006dasqLinkLocal": true, "resyncInterval": "5\u006d"}"#,
    );
    assert_eq!(config.non_masquerade_cidrs, nets(&["10.0.0.0/8"]));
    assert!(config.masq_link_local);
    assert_eq!(config.resync_interval, Duration::from_secs(300));
}

#[test]
fn star_as_yaml_is_a_syntax_error_with_position() {
    let e = err("*");
    match e.problems() {
        [Problem::Syntax {
            format: "YAML",
            line: 1,
            column: 1,
            message,
        }] => assert!(!message.contains('\n'), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string()
            .starts_with("invalid YAML at line 1 column 1: "),
        "{e}"
    );
}

#[test]
fn brace_star_as_json_is_a_syntax_error_with_position() {
    let e = err("{*");
    assert_eq!(
        e.problems(),
        [Problem::Syntax {
            format: "JSON",
            line: 1,
            column: 2,
            message: "key must be a string".into()
        }]
    );
}

#[test]
fn yaml_syntax_error_reports_line_and_column_on_one_line() {
    let e = err("masqLinkLocal: true\n  resyncInterval: 5m\n");
    let text = e.to_string();
    assert!(text.starts_with("invalid YAML at line 2 column"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    // The position is said once, not repeated at the end of the parser's message.
    let text = err("a: b: c").to_string();
    assert_eq!(text.matches("line").count(), 1, "{text}");
    let text = err("? [a]\n: b").to_string();
    assert_eq!(text.matches("line").count(), 1, "{text}");
}

#[test]
fn unknown_keys_are_warnings_not_errors() {
    let loaded = parse(
        b"nonMasqueradeCIDRs: [10.0.0.0/8]\nenableIPv6: true\nmasqlinklocal: true\n",
        &opts(),
    )
    .unwrap();
    assert_eq!(loaded.config.non_masquerade_cidrs, nets(&["10.0.0.0/8"]));
    // Keys are matched as written: the misspelt key does not set the flag.
    assert!(!loaded.config.masq_link_local);
    assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.contains("\"masqlinklocal\"") && w.contains("did you mean masqLinkLocal?")));
    assert!(loaded.warnings.iter().any(|w| w.contains("\"enableIPv6\"")));
}

#[test]
fn empty_comment_only_and_null_files_mean_defaults() {
    for text in [
        "",
        "  \n\n",
        "# just a comment\n# and another\n",
        "null",
        "~\n",
        "---\n",
    ] {
        assert_eq!(ok(text), Config::default(), "{text:?}");
    }
}

#[test]
fn absent_file_means_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(&dir.path().join("ip-masq-agent"), &opts()).unwrap();
    assert_eq!(loaded.config, Config::default());
    let rfc1918 = ParseOptions {
        default_cidrs: DefaultCidrs::Rfc1918,
        ..opts()
    };
    let loaded = load(&dir.path().join("absent"), &rfc1918).unwrap();
    assert_eq!(loaded.config.non_masquerade_cidrs, RFC1918_CIDRS.to_vec());
}

#[test]
fn load_reads_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(&path, "resyncInterval: 5m\n").unwrap();
    assert_eq!(
        load(&path, &opts()).unwrap().config.resync_interval,
        Duration::from_secs(300)
    );
    // A directory is not a file: the error names the path.
    let e = load(dir.path(), &opts()).unwrap_err();
    assert!(matches!(e.problems(), [Problem::Read { .. }]), "{e:?}");
    assert!(e.to_string().contains(&dir.path().display().to_string()));
}

#[test]
fn only_masq_link_local_keeps_the_default_cidrs() {
    let config = ok("masqLinkLocal: true\n");
    assert!(config.masq_link_local);
    assert_eq!(config.non_masquerade_cidrs, RESERVED_CIDRS.to_vec());
    assert_eq!(config.resync_interval, DEFAULT_RESYNC_INTERVAL);
}

#[test]
fn only_resync_interval_leaves_every_other_key_at_its_default() {
    let config = ok("resyncInterval: 5m\n");
    assert_eq!(
        config,
        Config {
            resync_interval: Duration::from_secs(300),
            ..Config::default()
        }
    );
}

#[test]
fn empty_list_or_null_means_no_cidrs() {
    assert!(ok("nonMasqueradeCIDRs: []").non_masquerade_cidrs.is_empty());
    assert!(ok("nonMasqueradeCIDRs:\n").non_masquerade_cidrs.is_empty());
    assert!(ok("nonMasqueradeCIDRs: null")
        .non_masquerade_cidrs
        .is_empty());
    assert!(ok("{\"nonMasqueradeCIDRs\": null}")
        .non_masquerade_cidrs
        .is_empty());
    assert!(ok("{\"nonMasqueradeCIDRs\": []}")
        .non_masquerade_cidrs
        .is_empty());
}

#[test]
fn null_scalars_keep_their_defaults() {
    assert_eq!(
        ok("masqLinkLocal:\nresyncInterval:\ncidrLimit:\nnonMasqueradeSrcCIDRs:\n"),
        Config::default()
    );
}

#[test]
fn rfc1918_default_set_applies_only_when_the_key_is_absent() {
    let rfc1918 = ParseOptions {
        default_cidrs: DefaultCidrs::Rfc1918,
        ..opts()
    };
    let config = parse(b"masqLinkLocal: true", &rfc1918).unwrap().config;
    assert_eq!(
        config.non_masquerade_cidrs,
        nets(&["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"])
    );
    let config = parse(b"nonMasqueradeCIDRs: []", &rfc1918).unwrap().config;
    assert!(config.non_masquerade_cidrs.is_empty());
    assert_eq!(
        Config::with_default_cidrs(DefaultCidrs::Rfc1918).non_masquerade_cidrs,
        RFC1918_CIDRS.to_vec()
    );
}

#[test]
fn host_bits_error_names_the_aligned_form() {
    let e = err("nonMasqueradeCIDRs: [10.0.0.1/8]");
    let text = e.to_string();
    assert!(text.contains("nonMasqueradeCIDRs[0]"), "{text}");
    assert!(text.contains("\"10.0.0.1/8\""), "{text}");
    assert!(text.contains("did you mean 10.0.0.0/8?"), "{text}");
}

#[test]
fn bare_address_is_rejected() {
    let text = err("nonMasqueradeCIDRs: [10.1.2.3]").to_string();
    assert!(
        text.contains("\"10.1.2.3\" is an address, not a CIDR"),
        "{text}"
    );
    assert!(text.contains("10.1.2.3/32"), "{text}");
}

#[test]
fn bad_cidrs_name_the_value() {
    let text = err("nonMasqueradeCIDRs: [10.256.0.0/16]").to_string();
    assert!(
        text.contains("nonMasqueradeCIDRs[0]: \"10.256.0.0/16\" is not a CIDR"),
        "{text}"
    );
    let text = err("nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n  - abcdefg\n").to_string();
    assert!(
        text.contains("nonMasqueradeCIDRs[1]: \"abcdefg\" is not a CIDR"),
        "{text}"
    );
}

#[test]
fn duplicates_and_overlaps_are_accepted() {
    let config = ok("nonMasqueradeCIDRs: [10.0.0.0/8, 10.0.0.0/8, 10.1.0.0/16]");
    assert_eq!(config.non_masquerade_cidrs.len(), 3);
}

#[test]
fn ipv6_is_rejected_unless_enabled_with_a_hint() {
    let e =
        err("nonMasqueradeCIDRs: [10.0.0.0/8, fd00::/8]\nnonMasqueradeSrcCIDRs: [\"fd01::/64\"]");
    assert_eq!(e.problems().len(), 2, "{e}");
    for line in e.to_string().lines() {
        assert!(line.contains("--enable-ipv6"), "{line}");
    }
    assert!(e
        .to_string()
        .contains("nonMasqueradeCIDRs[1]: \"fd00::/8\" is an IPv6 CIDR"));
    let config = parse(b"nonMasqueradeCIDRs: [fd00::/8]", &ipv6_opts())
        .unwrap()
        .config;
    assert_eq!(config.non_masquerade_cidrs, nets(&["fd00::/8"]));
}

#[test]
fn wrong_types_are_named() {
    let cases = [
        ("nonMasqueradeCIDRs: 10.0.0.0/8", "nonMasqueradeCIDRs: expected a list of CIDR strings, found a string (\"10.0.0.0/8\")"),
        ("nonMasqueradeCIDRs: [42]", "nonMasqueradeCIDRs[0]: expected a CIDR string, found a number (42)"),
        ("masqLinkLocal: \"true\"", "masqLinkLocal: expected true or false, found a string (\"true\")"),
        ("masqLinkLocalIPv6: 1", "masqLinkLocalIPv6: expected true or false, found a number (1)"),
        ("resyncInterval: 60", "resyncInterval: expected a duration string like \"60s\", \"5m\" or \"1h30m\", found a number (60)"),
        ("cidrLimit: lots", "cidrLimit: expected a non-negative integer, found a string (\"lots\")"),
        ("cidrLimit: -1", "cidrLimit: -1 is not a valid limit (negative)"),
        ("cidrLimit: 1.5", "cidrLimit: 1.5 is not a valid limit (not an integer)"),
        ("nonMasqueradeSrcCIDRs: {a: 1}", "nonMasqueradeSrcCIDRs: expected a list of CIDR strings, found a mapping"),
    ];
    for (text, expected) in cases {
        assert_eq!(err(text).to_string(), expected, "for {text:?}");
    }
}

#[test]
fn a_document_that_is_not_a_mapping_is_rejected() {
    assert_eq!(
        err("- 10.0.0.0/8").to_string(),
        "the config must be a mapping of keys to values, found a list of 1 element"
    );
    assert!(err("abcdefg")
        .to_string()
        .contains("found a string (\"abcdefg\")"));
}

#[test]
fn bad_durations_are_rejected() {
    let text = err("resyncInterval: 5x").to_string();
    assert!(
        text.starts_with("resyncInterval: \"5x\" is not a duration"),
        "{text}"
    );
    assert!(text.contains("unknown unit \"x\""), "{text}");
    for short in ["500ms", "0", "-5m", "0s"] {
        assert_eq!(
            err(&format!("resyncInterval: \"{short}\"")).problems(),
            [Problem::DurationTooShort {
                value: short.into()
            }]
        );
    }
}

#[test]
fn several_problems_are_reported_together() {
    let e = err(concat!(
        "nonMasqueradeCIDRs:\n",
        "  - 10.0.0.1/8\n",
        "  - 10.256.0.0/16\n",
        "  - 192.168.0.0/16\n",
        "  - abcdefg\n",
        "masqLinkLocal: maybe\n",
        "resyncInterval: 100ms\n",
        "cidrLimit: 2\n",
    ));
    let lines: Vec<String> = e.to_string().lines().map(str::to_string).collect();
    assert_eq!(e.problems().len(), 6, "{lines:#?}");
    assert_eq!(lines.len(), 6);
    assert!(lines[0].contains("10.0.0.0/8"));
    assert!(lines[1].contains("10.256.0.0/16"));
    assert!(lines[2].contains("abcdefg"));
    assert!(lines[3].starts_with("masqLinkLocal:"));
    assert!(lines[4].starts_with("resyncInterval:"));
    assert!(lines[5].contains("over the cidrLimit of 2"));
}

#[test]
fn files_over_one_mebibyte_are_rejected() {
    let mut big = b"# padding\n".repeat((MAX_FILE_BYTES as usize) / 10 + 1);
    big.extend_from_slice(b"masqLinkLocal: true\n");
    let e = parse(&big, &opts()).unwrap_err();
    assert!(matches!(e.problems(), [Problem::TooLarge { .. }]));
    assert!(e.to_string().contains("over the 1 MiB limit"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    std::fs::write(&path, &big).unwrap();
    let e = load(&path, &opts()).unwrap_err();
    assert_eq!(
        e.problems(),
        [Problem::TooLarge {
            size: big.len() as u64
        }]
    );
    // Exactly 1 MiB is still accepted.
    let exact = vec![b'\n'; MAX_FILE_BYTES as usize];
    assert_eq!(parse(&exact, &opts()).unwrap().config, Config::default());
}

#[test]
fn non_utf8_is_rejected() {
    let e = parse(b"masqLinkLocal: \xff\n", &opts()).unwrap_err();
    assert_eq!(e.problems(), [Problem::NotUtf8 { offset: 15 }]);
}

#[test]
fn duplicate_yaml_keys_are_rejected() {
    let text = err("masqLinkLocal: true\nmasqLinkLocal: false\n").to_string();
    assert!(
        text.starts_with("invalid YAML at line 2 column 1"),
        "{text}"
    );
}

// === never a panic on bad input ===

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
        let _ = parse(&bytes, &opts());
    }

    #[test]
    fn config_shaped_text_never_panics(
        key in "(nonMasqueradeCIDRs|masqueradeCIDRs|masqLinkLocal|resyncInterval|cidrLimit|nonMasqueradeSrcCIDRs|x)",
        value in "[-\\[\\]{}0-9a-f.:/, \"smh]{0,24}",
        json in proptest::bool::ANY,
    ) {
        let text = if json {
            format!("{{\"{key}\": {value}}}")
        } else {
            format!("{key}: {value}\n")
        };
        if let Err(e) = parse(text.as_bytes(), &ipv6_opts()) {
            // Every problem is one line.
            for problem in e.problems() {
                proptest::prop_assert!(!problem.to_string().contains('\n'), "{}", problem);
            }
        }
    }
}
