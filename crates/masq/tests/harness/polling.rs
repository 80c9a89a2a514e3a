//! Waiting on the wire and on the agent: until a destination sees a source, until a check
//! holds, and probing fresh connections while something else happens.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use masq_testbed::probe::tcp_source;
use masq_testbed::Netns;

/// Polls fresh TCP connections from `pod` to `server` every 20 ms until the server sees
/// `expected`; returns how long that took, or fails after `bound`.
pub fn wait_for_source(
    pod: &Netns,
    server: SocketAddr,
    expected: IpAddr,
    bound: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < bound {
        // A probe can fail while rules change (a lost SYN); the next one tells.
        if let Ok(seen) = tcp_source(pod, server) {
            if seen == expected {
                return Ok(started.elapsed());
            }
            last = Some(seen);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{server} still saw {last:?}, not {expected}, after {bound:?}")
}

/// Runs `during` while another thread opens a fresh TCP connection from `pod` to `server`
/// every 20 ms; returns what `during` returned and the source seen by each probe (an error
/// when a probe got no answer).
pub fn probing_while<T>(
    pod: &Netns,
    server: SocketAddr,
    during: impl FnOnce() -> T,
) -> (T, Vec<Result<IpAddr, String>>) {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let prober = scope.spawn(|| {
            let mut seen = Vec::new();
            while !done.load(Ordering::Relaxed) {
                seen.push(tcp_source(pod, server).map_err(|e| format!("{e:#}")));
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        });
        let result = during();
        done.store(true, Ordering::Relaxed);
        (result, prober.join().expect("the prober does not panic"))
    })
}

/// Polls `check` every 20 ms until it holds or `bound` passes.
pub fn eventually(bound: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<bool> {
    let started = Instant::now();
    while started.elapsed() < bound {
        if check()? {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(false)
}
