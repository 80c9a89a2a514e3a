//! One named network namespace, removed on drop.

use std::fs::File;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};

/// Every namespace this crate makes starts with this, followed by the creating process id, so a
/// later run can tell its own leftovers (from a `kill -9`) from those of a live process.
pub const NAME_PREFIX: &str = "masqt";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace made by this process. Dropping it kills what runs inside and deletes it.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `masqt-<pid>-<n>-<role>` with its loopback up.
    pub fn new(role: &str) -> Result<Netns> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NAME_PREFIX}-{}-{n}-{role}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]))
            .with_context(|| format!("creating network namespace {name}"))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `program args…` inside the namespace; an error carries its stderr. Returns stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        run_ok(self.command(program).args(args))
            .with_context(|| format!("in {}: {program} {}", self.name, args.join(" ")))
    }

    /// Runs `program args…` inside the namespace with `payload` on its stdin (`nft -f -`,
    /// `iptables-restore`); an error carries its stderr and the payload.
    pub fn pipe(&self, program: &str, args: &[&str], payload: &str) -> Result<()> {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = self
            .command(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        child
            .stdin
            .take()
            .context("no stdin")?
            .write_all(payload.as_bytes())?;
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "in {}: {program} {args:?} failed: {}\n--- payload ---\n{payload}",
            self.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    /// `ip <args>` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run_ok(Command::new("ip").args(&full)).with_context(|| format!("ip {}", full.join(" ")))
    }

    /// Runs `f` on a fresh thread that has entered this namespace. Sockets it opens, netlink
    /// requests and programs it spawns all live in the namespace; the caller's thread is untouched.
    pub fn enter<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let file = File::open(format!("/run/netns/{}", self.name))
            .with_context(|| format!("opening namespace {}", self.name))?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    setns(&file, CloneFlags::CLONE_NEWNET)
                        .with_context(|| format!("entering namespace {}", self.name))?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn kill_all(&self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Connects `a` and `b` with a veth pair, `a_if` in `a` and `b_if` in `b`, both up. The pair is
/// created inside `a`, so no link ever appears in the root namespace.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// Deletes namespaces left by processes of this crate that no longer run (after a `kill -9`).
pub fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name
            .strip_prefix(NAME_PREFIX)
            .and_then(|r| r.strip_prefix('-'))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// Runs a command and fails with its stderr when it exits non-zero.
pub fn run_ok(cmd: &mut Command) -> Result<String> {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().context("spawning command")?;
    if !status.success() {
        bail!("{status}: {}", String::from_utf8_lossy(&stderr).trim());
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn namespaces_are_connected_and_removed() {
        crate::require(&[]);
        let a = Netns::new("a").unwrap();
        let b = Netns::new("b").unwrap();
        veth(&a, "va", &b, "vb").unwrap();
        a.ip(&["addr", "add", "192.0.2.1/24", "dev", "va"]).unwrap();
        b.ip(&["addr", "add", "192.0.2.2/24", "dev", "vb"]).unwrap();
        a.exec("ping", &["-c1", "-W2", "192.0.2.2"]).unwrap();
        let seen = a
            .enter(|| std::fs::read_to_string("/proc/thread-self/net/dev").unwrap())
            .unwrap();
        assert!(seen.contains("va:"), "thread did not enter the namespace");
        let name = a.name().to_string();
        drop(a);
        let list = run_ok(Command::new("ip").args(["netns", "list"])).unwrap();
        assert!(!list.contains(&name), "{name} still exists");
    }
}
