//! A process's memory and CPU time, from /proc.

use anyhow::{Context, Result};
use serde::Serialize;

/// Memory of a process, from /proc/PID/status.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Memory {
    /// Resident set size now, MiB (VmRSS).
    pub rss_mib: f64,
    /// Highest resident set size since the process started, MiB (VmHWM).
    pub peak_rss_mib: f64,
}

/// Reads VmRSS and VmHWM of `pid`.
pub fn memory(pid: u32) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib = |key: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    Ok(Memory {
        rss_mib: kib("VmRSS:") / 1024.0,
        peak_rss_mib: kib("VmHWM:") / 1024.0,
    })
}

/// CPU time of a process, seconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct CpuTime {
    /// The process itself (utime + stime, all threads).
    pub own: f64,
    /// Its children that it has waited for (cutime + cstime): the `nft`, `iptables-restore`
    /// and `iptables-save` runs of the netfilter datapaths.
    pub children: f64,
}

impl CpuTime {
    /// `self - earlier`.
    pub fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime {
            own: self.own - earlier.own,
            children: self.children - earlier.children,
        }
    }
}

/// Reads utime, stime, cutime and cstime of `pid`.
pub fn cpu_time(pid: u32) -> Result<CpuTime> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat(&text).with_context(|| format!("parsing {path}"))
}

fn parse_stat(text: &str) -> Option<CpuTime> {
    // The command name (field 2) may hold spaces and parentheses: fields restart after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14.
    let tick = |field: usize| -> Option<f64> { fields.get(field - 3)?.parse::<f64>().ok() };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(CpuTime {
        own: (tick(14)? + tick(15)?) / hz,
        children: (tick(16)? + tick(17)?) / hz,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_tricky_command_name() {
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let line = "42 (ma sq) (x)) S 1 42 42 0 -1 4194560 100 0 0 0 150 50 7 3 20 0 4 0";
        let cpu = parse_stat(line).unwrap();
        assert_eq!(cpu.own, 200.0 / hz);
        assert_eq!(cpu.children, 10.0 / hz);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(memory(me).unwrap().rss_mib > 0.0);
        assert!(cpu_time(me).unwrap().own >= 0.0);
    }
}
