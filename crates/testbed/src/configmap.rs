//! A config directory laid out the way kubelet mounts a ConfigMap, updated the way kubelet
//! updates it: a new timestamped directory, a `..data_tmp` symlink renamed over `..data`, and
//! the key (`ip-masq-agent`) a symlink through `..data`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The ConfigMap key masq reads (`--config /etc/config/ip-masq-agent`).
pub const KEY: &str = "ip-masq-agent";

/// A kubelet-style ConfigMap volume in a temporary directory, removed on drop.
pub struct ConfigMapDir {
    dir: tempfile::TempDir,
    generation: u32,
}

impl ConfigMapDir {
    /// An empty volume: the key does not exist (the ConfigMap is `optional: true` and absent).
    pub fn new() -> Result<ConfigMapDir> {
        let dir = tempfile::Builder::new()
            .prefix("masq-configmap-")
            .tempdir()
            .context("creating a config directory")?;
        Ok(ConfigMapDir { dir, generation: 0 })
    }

    /// A volume holding `content` under the key.
    pub fn with(content: &str) -> Result<ConfigMapDir> {
        let mut dir = ConfigMapDir::new()?;
        dir.update(content)?;
        Ok(dir)
    }

    /// The path to give `masq agent --config`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join(KEY)
    }

    /// Replaces the content atomically, as kubelet does.
    pub fn update(&mut self, content: &str) -> Result<()> {
        self.update_keys(&[(KEY, content)])
    }

    /// The volume's directory (`masq agent --config-dir`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces every key of the volume at once, as kubelet updates a projected volume of
    /// several ConfigMaps: the keys in a new `..data`, a link per key, and the links of keys
    /// no longer there removed after the swap.
    pub fn update_keys(&mut self, keys: &[(&str, &str)]) -> Result<()> {
        self.generation += 1;
        let root = self.dir.path();
        let data = format!(
            "..2026_11_25_00_00_{:02}.{}",
            self.generation % 60,
            self.generation
        );
        std::fs::create_dir(root.join(&data))?;
        for (key, content) in keys {
            std::fs::write(root.join(&data).join(key), content)?;
        }
        let tmp = root.join("..data_tmp");
        std::os::unix::fs::symlink(&data, &tmp)?;
        let previous = std::fs::read_link(root.join("..data")).ok();
        std::fs::rename(&tmp, root.join("..data")).context("swapping ..data")?;
        for (key, _) in keys {
            let link = root.join(key);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(key), &link)?;
            }
        }
        if let Some(previous) = previous {
            for entry in std::fs::read_dir(root.join(&previous))? {
                let name = entry?.file_name();
                if !keys.iter().any(|(key, _)| name.to_str() == Some(key)) {
                    let _ = std::fs::remove_file(root.join(&name));
                }
            }
            let _ = std::fs::remove_dir_all(root.join(previous));
        }
        Ok(())
    }

    /// Removes the key, as when the ConfigMap is deleted.
    pub fn remove(&mut self) -> Result<()> {
        let root = self.dir.path();
        let _ = std::fs::remove_file(root.join(KEY));
        if let Ok(data) = std::fs::read_link(root.join("..data")) {
            std::fs::remove_file(root.join("..data"))?;
            let _ = std::fs::remove_dir_all(root.join(data));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_swap_the_data_symlink() {
        let mut dir = ConfigMapDir::with("a: 1\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.config_path()).unwrap(),
            "a: 1\n"
        );
        dir.update("a: 2\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.config_path()).unwrap(),
            "a: 2\n"
        );
        assert!(std::fs::symlink_metadata(dir.config_path())
            .unwrap()
            .file_type()
            .is_symlink());
        dir.remove().unwrap();
        assert!(!dir.config_path().exists());
        dir.update("a: 3\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.config_path()).unwrap(),
            "a: 3\n"
        );
    }

    #[test]
    fn several_keys_come_and_go_together() {
        let mut dir = ConfigMapDir::new().unwrap();
        dir.update_keys(&[("ip-masq-a", "a"), ("ip-masq-b", "b")])
            .unwrap();
        let root = dir.dir().to_path_buf();
        let read = |key: &str| std::fs::read_to_string(root.join(key)).ok();
        assert_eq!(read("ip-masq-a").as_deref(), Some("a"));
        assert_eq!(read("ip-masq-b").as_deref(), Some("b"));
        dir.update_keys(&[("ip-masq-a", "a2")]).unwrap();
        assert_eq!(read("ip-masq-a").as_deref(), Some("a2"));
        assert!(std::fs::symlink_metadata(root.join("ip-masq-b")).is_err());
    }
}
