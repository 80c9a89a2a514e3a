//! A `masq agent` process running inside a namespace, as the end-to-end tests, the demo and the
//! benchmarks run it: the real binary, killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::Netns;

/// Where the agent serves `/readyz` inside its namespace (the default `--metrics-addr`).
pub const METRICS_ADDR: &str = "127.0.0.1:9710";

/// A running agent. Dropping it sends SIGKILL: the datapath stays, as after a crash.
pub struct AgentProcess {
    child: Child,
    log: PathBuf,
    ns_name: String,
}

impl AgentProcess {
    /// Starts `binary agent <args>` inside `ns`, logging to `log`.
    pub fn start(ns: &Netns, binary: &Path, args: &[String], log: &Path) -> Result<AgentProcess> {
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = ns
            .command(&binary.to_string_lossy())
            .arg("agent")
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {} agent", binary.display()))?;
        Ok(AgentProcess {
            child,
            log: log.to_path_buf(),
            ns_name: ns.name().to_string(),
        })
    }

    /// Waits until `/readyz` answers 200 (inside `ns`), or fails with the agent's log.
    pub fn wait_ready(&mut self, ns: &Netns, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the agent in {} exited with {status}:\n{}",
                    self.ns_name,
                    self.log_text()
                );
            }
            if readyz(ns, METRICS_ADDR.parse().expect("a valid address"))? {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "the agent in {} was not ready after {timeout:?}:\n{}",
            self.ns_name,
            self.log_text()
        )
    }

    /// The agent's process id (`ip netns exec` execs the agent, so the child is the agent), for
    /// reading its memory and CPU time from /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits (at most 10 s) for the exit status.
    pub fn terminate(mut self) -> Result<std::process::ExitStatus> {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "the agent did not stop within 10 s of SIGTERM:\n{}",
            self.log_text()
        )
    }

    /// SIGKILL, like a crash or an OOM kill.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything the agent logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        // `ip netns exec` execs the agent, so the child's pid is the agent's.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal);
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `/readyz` on `addr` from inside `ns`: true on 200, false on 503 or no answer yet.
pub fn readyz(ns: &Netns, addr: SocketAddr) -> Result<bool> {
    get(ns, addr, "/readyz").map(|r| r.is_some_and(|(code, _)| code == 200))
}

/// GET `path` on `addr` from inside `ns`; None when nothing listens yet.
pub fn get(ns: &Netns, addr: SocketAddr, path: &str) -> Result<Option<(u16, String)>> {
    let url = format!("http://{addr}{path}");
    ns.enter(move || {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        match agent.get(&url).call() {
            Ok(mut response) => {
                let code = response.status().as_u16();
                let body = response.body_mut().read_to_string().unwrap_or_default();
                Some((code, body))
            }
            Err(_) => None,
        }
    })
}
