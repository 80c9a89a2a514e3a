//! Watches the config directory (the file's, with `--config`), not the file: kubelet updates a
//! ConfigMap volume by swapping the `..data` symlink, which a watch on the file itself would
//! never see. Any event in the directory is a hint; the reconciler re-reads the files and
//! ignores unchanged content.

use std::path::Path;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Keeps the watch alive; dropping it stops the events.
pub enum ConfigWatch {
    /// inotify on the directory.
    Notify(RecommendedWatcher),
    /// The directory could not be watched (absent): polled once a second instead.
    Polling(tokio::task::JoinHandle<()>),
}

impl Drop for ConfigWatch {
    fn drop(&mut self) {
        if let ConfigWatch::Polling(task) = self {
            task.abort();
        }
    }
}

/// Sends `()` whenever something in `dir` changes (a file added, changed, removed, renamed).
pub fn watch_dir(dir: &Path, changes: mpsc::UnboundedSender<()>) -> ConfigWatch {
    let tx = changes.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.send(());
        }
    });
    match watcher {
        Ok(mut w) => match w.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => return ConfigWatch::Notify(w),
            Err(e) => tracing::warn!(
                dir = %dir.display(),
                error = %e,
                "cannot watch the config directory; polling it every second"
            ),
        },
        Err(e) => {
            tracing::warn!(error = %e, "inotify unavailable; polling the config every second")
        }
    }
    ConfigWatch::Polling(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if changes.send(()).is_err() {
                break;
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kubelet's update: write a new timestamped dir, point `..data_tmp` at it, rename over `..data`.
    fn kubelet_swap(dir: &Path, generation: u32, content: &str) {
        let data = dir.join(format!("..2026_{generation}"));
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("config"), content).unwrap();
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(data.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
    }

    #[tokio::test]
    async fn a_data_symlink_swap_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        kubelet_swap(dir.path(), 1, "masqLinkLocal: true\n");
        std::os::unix::fs::symlink("..data/config", dir.path().join("config")).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _watch = watch_dir(dir.path(), tx);
        assert!(matches!(_watch, ConfigWatch::Notify(_)));
        kubelet_swap(dir.path(), 2, "masqLinkLocal: false\n");
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("no event within 5 s after the ..data swap")
            .unwrap();
    }
}
