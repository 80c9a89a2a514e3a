//! The ConfigMap: mounted where `--config` (or `--config-dir`) reads it, and what ships passes
//! `masq validate`, alone or as the config-dir overlay's projected volume.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::manifests::{config_sources, flag_value, flags, key_file, renders};
use crate::{CONFIG_KEY, CONFIG_MAP, DEFAULT_CONFIG, MASQ};

#[test]
fn config_map_is_mounted_where_the_config_flag_reads() {
    let (agents, _) = renders();
    for r in agents {
        let flags = flags(r.agent(), "agent");
        // `--config-dir` reads every file named ip-masq* of the directory; `--config` one file.
        let (dir, file) = match flag_value(&flags, "--config-dir") {
            Some(dir) => (PathBuf::from(dir), None),
            None => {
                let config = Path::new(flag_value(&flags, "--config").unwrap_or(DEFAULT_CONFIG));
                let file = config.file_name().unwrap().to_str().unwrap().to_string();
                (config.parent().unwrap().to_path_buf(), Some(file))
            }
        };
        let sources = config_sources(r, &dir);
        for source in &sources {
            assert_eq!(
                source["optional"], true,
                "deploy/{}: a missing ConfigMap means defaults",
                r.dir
            );
            if file.is_none() {
                assert!(
                    key_file(source).starts_with("ip-masq"),
                    "deploy/{}: {} is not a file --config-dir reads",
                    r.dir,
                    key_file(source)
                );
            }
        }
        let main = sources
            .iter()
            .find(|s| s["name"] == CONFIG_MAP)
            .unwrap_or_else(|| panic!("deploy/{}: {CONFIG_MAP} is not mounted", r.dir));
        if let Some(file) = &file {
            assert_eq!(
                key_file(main),
                file,
                "deploy/{}: key {CONFIG_KEY} is not the file --config reads",
                r.dir
            );
        }
        for source in sources {
            let name = source["name"].as_str().unwrap();
            assert!(r.find("ConfigMap", name)["data"][CONFIG_KEY].is_string());
        }
    }
}

/// The ConfigMaps of the config-dir overlay, laid out as the projected volume holds them,
/// pass `masq validate --config-dir`; one bad entry in the second makes the merge fail.
#[test]
fn projected_config_maps_pass_masq_validate() {
    let (agents, _) = renders();
    let r = agents
        .iter()
        .find(|r| r.dir == "overlays/config-dir")
        .unwrap();
    let sources = config_sources(r, Path::new("/etc/config"));
    assert!(sources.len() >= 2, "deploy/{}: one ConfigMap only", r.dir);
    for (name, valid) in [("shipped", true), ("broken", false)] {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("deploy-config-dir-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, source) in sources.iter().enumerate() {
            let map = r.find("ConfigMap", source["name"].as_str().unwrap());
            let mut text = map["data"][CONFIG_KEY].as_str().unwrap().to_string();
            if !valid && i == 1 {
                text.push_str("masqueradeCIDRs: [10.5.0.1/16]\n");
            }
            std::fs::write(dir.join(key_file(source)), text).unwrap();
        }
        let out = Command::new(MASQ)
            .arg("validate")
            .arg("--config-dir")
            .arg(&dir)
            .output()
            .unwrap();
        assert_eq!(
            out.status.success(),
            valid,
            "masq validate --config-dir on the {name} ConfigMaps ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn shipped_config_map_passes_masq_validate() {
    let (agents, _) = renders();
    let config = agents[0].find("ConfigMap", CONFIG_MAP)["data"][CONFIG_KEY]
        .as_str()
        .unwrap();
    // The same file with one bad entry must fail, or a validator that accepts anything passes.
    let broken = format!("{config}\nnonMasqueradeCIDRs: [10.0.0.1/8]\n");
    for (name, text, valid) in [("shipped", config, true), ("broken", &broken, false)] {
        let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("deploy-config-{name}"));
        std::fs::write(&file, text).unwrap();
        let out = Command::new(MASQ)
            .arg("validate")
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(
            out.status.success(),
            valid,
            "masq validate on the {name} ConfigMap ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
