//! Running the iptables programs, waiting out the xtables lock.
//!
//! iptables-legacy serialises every writer (kube-proxy, kubelet, CNI plugins, …) with one file
//! lock. A busy node can hold it for seconds, so a run that finds it taken (exit status 4, "xtables
//! lock") is retried with a growing pause, a bounded number of times, and the final failure is
//! returned to the caller: the agent reports it and tries again at the next resync; it never exits.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::Error;

/// How hard to try when another writer holds the xtables lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockRetry {
    /// Runs in all, the first included (at least 1).
    pub attempts: u32,
    /// `--wait` seconds each run blocks on the lock itself (at least 1).
    pub wait_secs: u32,
    /// Pause after the first failed run; doubled after each further one.
    pub first_pause: Duration,
}

impl Default for LockRetry {
    fn default() -> Self {
        LockRetry {
            attempts: 4,
            wait_secs: 2,
            first_pause: Duration::from_millis(250),
        }
    }
}

/// A finished run.
#[derive(Debug)]
pub struct Finished {
    /// Exit code (`-1` when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error, trimmed.
    pub stderr: String,
}

/// Spawns the programs with the lock settings.
#[derive(Clone, Debug, Default)]
pub struct Runner {
    /// Retry policy for a taken lock.
    pub retry: LockRetry,
    /// `XTABLES_LOCKFILE` for the children (tests use a private one); `None` keeps the default.
    pub lock_file: Option<PathBuf>,
}

/// iptables' exit status for "resource problem", which includes a lock held too long.
const RESOURCE_PROBLEM: i32 = 4;

impl Runner {
    /// Runs `program args…` with `stdin`, retrying while the xtables lock is taken.
    pub fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<Finished, Error> {
        let attempts = self.retry.attempts.max(1);
        let mut pause = self.retry.first_pause;
        let mut attempt = 1;
        loop {
            let finished = self.run_once(program, args, stdin)?;
            if !lock_busy(&finished) {
                return Ok(finished);
            }
            if attempt == attempts {
                return Err(Error::Command {
                    program: program.to_string(),
                    message: format!(
                        "{LOCK_HELD}; gave up after {attempts} attempts: {}",
                        first_line(&finished.stderr)
                    ),
                });
            }
            tracing::debug!(program, attempt, ?pause, "xtables lock busy, retrying");
            std::thread::sleep(pause);
            pause = pause.saturating_mul(2);
            attempt += 1;
        }
    }

    /// Like [`Runner::run`], but a non-zero exit is an error carrying stderr.
    pub fn run_ok(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, Error> {
        let finished = self.run(program, args, stdin)?;
        if finished.code != 0 {
            return Err(Error::Command {
                program: program.to_string(),
                message: format!(
                    "exit status {}: {}",
                    finished.code,
                    first_line(&finished.stderr)
                ),
            });
        }
        Ok(finished.stdout)
    }

    /// The `--wait` argument for programs that take the lock.
    pub fn wait_arg(&self) -> String {
        format!("--wait={}", self.retry.wait_secs.max(1))
    }

    fn run_once(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<Finished, Error> {
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(lock_file) = &self.lock_file {
            command.env("XTABLES_LOCKFILE", lock_file);
        }
        let spawn_error = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Unsupported(format!("{program} not found: install iptables"))
            } else {
                Error::Kernel {
                    what: format!("running {program}"),
                    source: e,
                }
            }
        };
        let mut child = command.spawn().map_err(spawn_error)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A program that exits early closes the pipe; its exit status tells why.
            let _ = pipe.write_all(text.as_bytes());
        }
        let output = child.wait_with_output().map_err(|e| Error::Kernel {
            what: format!("waiting for {program}"),
            source: e,
        })?;
        Ok(Finished {
            code: output.status.code().unwrap_or(-1),
            // Without a copy when valid: `iptables-save` prints ~13 MB with 61,278 CIDRs.
            stdout: String::from_utf8(output.stdout)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// Whether `error` is a sync that gave up on the xtables lock (a metric label, a status line).
pub fn is_lock_contention(error: &Error) -> bool {
    matches!(error, Error::Command { message, .. } if message.starts_with(LOCK_HELD))
}

/// How a lock failure's message starts, so [`is_lock_contention`] can tell it apart.
const LOCK_HELD: &str = "the xtables lock is held by another writer";

fn lock_busy(finished: &Finished) -> bool {
    finished.code == RESOURCE_PROBLEM && finished.stderr.contains("xtables lock")
}

/// The first non-empty line of a program's error output (the rest is usage noise).
fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no error output")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_taken_lock_is_retried() {
        let busy = Finished {
            code: 4,
            stdout: String::new(),
            stderr: "Another app is currently holding the xtables lock. Stopped waiting after 1s."
                .into(),
        };
        let bad_rule = Finished {
            code: 4,
            stdout: String::new(),
            stderr: "iptables-restore: line 3 failed".into(),
        };
        assert!(lock_busy(&busy));
        assert!(!lock_busy(&bad_rule));
    }

    #[test]
    fn a_missing_program_is_unsupported() {
        let err = Runner::default()
            .run("masq-no-such-iptables", &[], None)
            .unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("masq-no-such-iptables"));
    }

    #[test]
    fn retries_are_bounded_and_reported() {
        // `sh` plays an iptables that always finds the lock taken.
        let runner = Runner {
            retry: LockRetry {
                attempts: 3,
                wait_secs: 1,
                first_pause: Duration::from_millis(1),
            },
            lock_file: None,
        };
        let script = "echo 'Another app is currently holding the xtables lock.' >&2; exit 4";
        let err = runner.run("sh", &["-c", script], None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("after 3 attempts"), "{text}");
        assert!(text.contains("xtables lock"), "{text}");
        assert!(is_lock_contention(&err));
        let other = runner.run_ok("sh", &["-c", "exit 2"], None).unwrap_err();
        assert!(!is_lock_contention(&other), "{other}");
    }
}
