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
        self.generation += 1;
        let root = self.dir.path();
        let data = format!(
            "..2026_11_25_00_00_{:02}.{}",
            self.generation % 60,
            self.generation
        );
        std::fs::create_dir(root.join(&data))?;
        std::fs::write(root.join(&data).join(KEY), content)?;
        let tmp = root.join("..data_tmp");
        std::os::unix::fs::symlink(&data, &tmp)?;
        let previous = std::fs::read_link(root.join("..data")).ok();
        std::fs::rename(&tmp, root.join("..data")).context("swapping ..data")?;
        if let Some(previous) = previous {
            let _ = std::fs::remove_dir_all(root.join(previous));
        }
        let key = root.join(KEY);
        if std::fs::symlink_metadata(&key).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(KEY), &key)?;
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
}
