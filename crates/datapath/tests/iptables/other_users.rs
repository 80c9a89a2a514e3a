//! Beside other iptables users: the backend holding their rules is detected, and their
//! xtables lock is waited out, then reported.

use std::time::{Duration, Instant};

use masq_datapath::ipt::{Backend, Family, Iptables, LockRetry};
use masq_datapath::Datapath;
use masq_testbed::Netns;

use crate::ipt_support::{config, desired, RFC1918};
use crate::nat_table::*;

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn detects_the_backend_that_holds_the_rules() {
    each_backend("detect", |ns, backend| {
        let iptables = program(backend, Family::V4, "");
        ns.exec(&iptables, &["-t", "nat", "-N", "SOMEONE-ELSE"])
            .unwrap();
        ns.exec(
            &iptables,
            &["-t", "nat", "-A", "SOMEONE-ELSE", "-j", "RETURN"],
        )
        .unwrap();
        let detected = ns.enter(Iptables::detect).unwrap().unwrap();
        assert_eq!(detected.backend(), backend);
    });
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn waits_out_the_xtables_lock_then_reports_it() {
    // iptables-legacy holds the xtables lock.
    backends();
    let ns = Netns::new("lock").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lock_path = dir.path().join("xtables.lock");
    let d = desired(config(&RFC1918));
    let hold = |duration: Duration| {
        let file = std::fs::File::create(&lock_path).unwrap();
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).unwrap();
        std::thread::spawn(move || {
            std::thread::sleep(duration);
            drop(lock);
        })
    };

    // Held for about two seconds: a run blocks one second, then pauses, and gets through.
    let holder = hold(Duration::from_millis(2200));
    let patient = LockRetry {
        attempts: 6,
        wait_secs: 1,
        first_pause: Duration::from_millis(200),
    };
    let mut datapath = Iptables::new(Backend::Legacy)
        .with_lock_file(lock_path.clone())
        .with_lock_retry(patient);
    let started = Instant::now();
    let report = sync(&ns, &mut datapath, &d);
    assert!(report.changed);
    assert!(started.elapsed() >= Duration::from_secs(2), "lock ignored");
    holder.join().unwrap();

    // Held longer than the retries last: an error naming the lock, and no exit.
    let holder = hold(Duration::from_secs(4));
    let impatient = LockRetry {
        attempts: 2,
        wait_secs: 1,
        first_pause: Duration::from_millis(100),
    };
    let mut datapath = Iptables::new(Backend::Legacy)
        .with_lock_file(lock_path.clone())
        .with_lock_retry(impatient);
    let mut other = d.clone();
    other.config.masq_link_local = true;
    let err = ns.enter(|| datapath.sync(&other)).unwrap().unwrap_err();
    assert!(err.to_string().contains("xtables lock"), "{err}");
    assert!(err.to_string().contains("2 attempts"), "{err}");
    holder.join().unwrap();
}
