//! The NAT table's clock. The programs stamp entries with jiffies: `bpf_jiffies64` is inlined
//! by the verifier, where the nanosecond clocks are helper calls costing ~16 ns a packet.
//! Userspace learns the kernel's HZ, and the jiffies at a known `CLOCK_MONOTONIC_COARSE`
//! instant, from `bpf/clock.bpf.c` run through `BPF_PROG_TEST_RUN`, once per process. After
//! that the jiffies of any moment follow from `CLOCK_MONOTONIC_COARSE`, which the kernel
//! advances on the same ticks.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aya::programs::SchedClassifier;
use aya::{EbpfLoader, TestRun, TestRunOptions};

use super::kernel_err;
use crate::Error;

/// The clock reader, built from `bpf/clock.bpf.c` by `build.rs`; it has no maps.
static CLOCK_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/clock.bpf.o"));

/// HZ values kernels are built with; a measurement within 5% of one is taken as it.
const COMMON_HZ: [u64; 4] = [100, 250, 300, 1000];
/// Ticks the calibration spans: a sample a tick off stays within 5%. 200 ms at HZ=100.
const CALIBRATION_TICKS: u64 = 20;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Converts between the jiffies in NAT entries and durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelClock {
    hz: u64,
    /// A jiffies reading and the `CLOCK_MONOTONIC_COARSE` nanoseconds of the same instant.
    jiffies: u64,
    coarse_ns: u64,
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    jiffies: u64,
    coarse_ns: u64,
}

impl KernelClock {
    /// The clock of this kernel, calibrated on first use (up to 200 ms) and kept.
    pub fn get() -> Result<KernelClock, Error> {
        static CLOCK: OnceLock<KernelClock> = OnceLock::new();
        if let Some(clock) = CLOCK.get() {
            return Ok(*clock);
        }
        let clock = KernelClock::calibrate()?;
        Ok(*CLOCK.get_or_init(|| clock))
    }

    fn calibrate() -> Result<KernelClock, Error> {
        let mut bpf = EbpfLoader::new()
            .load(CLOCK_OBJECT)
            .map_err(kernel_err("loading masq's clock reader"))?;
        let prog: &mut SchedClassifier = bpf
            .program_mut("masq_clock")
            .ok_or_else(|| Error::Unsupported("masq_clock missing from its object".into()))?
            .try_into()
            .map_err(kernel_err("masq_clock is not a classifier"))?;
        prog.load()
            .map_err(kernel_err("loading masq_clock (verifier)"))?;
        let first = sample(prog)?;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            std::thread::sleep(Duration::from_millis(5));
            let last = sample(prog)?;
            let ticks = last.jiffies.saturating_sub(first.jiffies);
            let nanos = last.coarse_ns.saturating_sub(first.coarse_ns);
            if ticks < CALIBRATION_TICKS && Instant::now() < deadline {
                continue;
            }
            if ticks == 0 || nanos == 0 {
                return Err(Error::Unsupported(
                    "the kernel's jiffies did not advance in 2 s; cannot time NAT entries".into(),
                ));
            }
            let measured = ticks as f64 * 1e9 / nanos as f64;
            let hz = COMMON_HZ
                .into_iter()
                .find(|hz| (measured - *hz as f64).abs() <= *hz as f64 * 0.05)
                .unwrap_or(measured.round() as u64);
            return Ok(KernelClock {
                hz,
                jiffies: last.jiffies,
                coarse_ns: last.coarse_ns,
            });
        }
    }

    /// The kernel's tick rate.
    pub fn hz(&self) -> u64 {
        self.hz
    }

    /// The jiffies now.
    pub fn now(&self) -> u64 {
        let since = coarse_now_ns().saturating_sub(self.coarse_ns);
        self.jiffies + self.ticks(Duration::from_nanos(since))
    }

    /// The jiffies `by` from now: time passing, for tests of the garbage collector.
    pub fn later(&self, by: Duration) -> u64 {
        self.now() + self.ticks(by)
    }

    /// Whole jiffies in `duration`.
    pub fn ticks(&self, duration: Duration) -> u64 {
        (duration.as_nanos() * u128::from(self.hz) / NANOS_PER_SEC) as u64
    }

    /// The time from `then` to `now` (jiffies both); zero when `then` is later.
    pub fn between(&self, then: u64, now: u64) -> Duration {
        let ticks = u128::from(now.saturating_sub(then));
        Duration::from_nanos((ticks * NANOS_PER_SEC / u128::from(self.hz)) as u64)
    }
}

fn sample(prog: &SchedClassifier) -> Result<Sample, Error> {
    // The program writes its sample over the first 16 bytes; 14 is the least test_run takes.
    let frame = [0u8; 64];
    let mut out = [0u8; 64];
    let result = prog
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })
        .map_err(kernel_err("running masq_clock"))?;
    if result.return_value != 0 {
        return Err(Error::Unsupported(
            "masq_clock could not write its sample".into(),
        ));
    }
    let word = |at: usize| u64::from_ne_bytes(out[at..at + 8].try_into().expect("8 bytes"));
    Ok(Sample {
        jiffies: word(0),
        coarse_ns: word(8),
    })
}

/// `CLOCK_MONOTONIC_COARSE`, the clock of `bpf_ktime_get_coarse_ns`.
fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(hz: u64) -> KernelClock {
        KernelClock {
            hz,
            jiffies: 1000,
            coarse_ns: 0,
        }
    }

    #[test]
    fn conversions_between_jiffies_and_durations() {
        let c = clock(250);
        assert_eq!(c.ticks(Duration::from_secs(2)), 500);
        assert_eq!(c.between(1000, 1500), Duration::from_secs(2));
        assert_eq!(c.between(1500, 1000), Duration::ZERO);
        assert_eq!(clock(300).between(0, 1), Duration::from_nanos(3_333_333));
    }

    /// Against the kernel: the calibrated HZ is a usual one and `now` agrees with a fresh
    /// reading of jiffies to a tick or two.
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn calibration_matches_the_running_kernel() {
        masq_testbed::require(&[]);
        let clock = KernelClock::get().unwrap();
        assert!(COMMON_HZ.contains(&clock.hz()), "HZ {}", clock.hz());
        let mut bpf = EbpfLoader::new().load(CLOCK_OBJECT).unwrap();
        let prog: &mut SchedClassifier = bpf.program_mut("masq_clock").unwrap().try_into().unwrap();
        prog.load().unwrap();
        // Bracketed, so a busy machine pausing this thread cannot fail the test.
        let before = clock.now();
        let kernel = sample(prog).unwrap().jiffies;
        let after = clock.now();
        assert!(
            before.saturating_sub(2) <= kernel && kernel <= after + 2,
            "kernel jiffies {kernel}, the clock said {before} before and {after} after"
        );
    }
}
