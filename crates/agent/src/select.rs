//! `--datapath auto|ebpf|nftables|iptables`: which backend runs, and why (README: Datapaths).
//! `auto` tries eBPF, then nftables, then iptables, and keeps the first that can run here; the
//! reason for skipping each one is kept for the log and `masq status`. The chosen one comes
//! wrapped in [`Routed`]: masq's `ip rule`s are kept around it, whichever it is.

use masq_datapath::{Datapath, Error, Kind, Routed};

/// A backend that may be able to run: its kind and how to open it (probing the kernel).
pub struct Candidate {
    /// Which backend.
    pub kind: Kind,
    /// Opens it, or says why it cannot run here.
    pub open: Box<dyn FnOnce() -> Result<Box<dyn Datapath>, Error>>,
}

/// The chosen backend and the sentence explaining the choice.
pub struct Chosen {
    /// The backend with masq's policy-routing rules around it, ready to sync.
    pub datapath: Box<dyn Datapath>,
    /// Why this one, e.g. `auto: ebpf unavailable (…); nftables works`.
    pub reason: String,
}

/// Opens `requested`, or with `None` (auto) the first candidate that opens, in the order given.
pub fn select(requested: Option<Kind>, candidates: Vec<Candidate>) -> Result<Chosen, Error> {
    if let Some(kind) = requested {
        let candidate = candidates
            .into_iter()
            .find(|c| c.kind == kind)
            .ok_or_else(|| {
                Error::Unsupported(format!("datapath {} is not built in", kind.as_str()))
            })?;
        let datapath = (candidate.open)()?;
        return Ok(Chosen {
            datapath: Box::new(Routed::new(datapath)),
            reason: "requested with --datapath".into(),
        });
    }
    let mut skipped = Vec::new();
    for candidate in candidates {
        let name = candidate.kind.as_str();
        match (candidate.open)() {
            Ok(datapath) => {
                let reason = if skipped.is_empty() {
                    format!("auto: {name} works")
                } else {
                    format!("auto: {}; {name} works", skipped.join("; "))
                };
                return Ok(Chosen {
                    datapath: Box::new(Routed::new(datapath)),
                    reason,
                });
            }
            Err(e) => skipped.push(format!("{name} unavailable ({e})")),
        }
    }
    Err(Error::Unsupported(format!(
        "no datapath can run here: {}",
        skipped.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use masq_datapath::{Desired, SyncReport};

    struct Named(Kind);
    impl Datapath for Named {
        fn kind(&self) -> Kind {
            self.0
        }
        fn render(&self, _: &Desired) -> String {
            String::new()
        }
        fn sync(&mut self, _: &Desired) -> Result<SyncReport, Error> {
            Ok(SyncReport::default())
        }
        fn matches(&self, _: &Desired) -> Result<bool, Error> {
            Ok(true)
        }
        fn cleanup(&mut self) -> Result<(), Error> {
            Ok(())
        }
    }

    fn works(kind: Kind) -> Candidate {
        Candidate {
            kind,
            open: Box::new(move || Ok(Box::new(Named(kind)) as Box<dyn Datapath>)),
        }
    }
    fn broken(kind: Kind, why: &'static str) -> Candidate {
        Candidate {
            kind,
            open: Box::new(move || Err(Error::Unsupported(why.into()))),
        }
    }

    #[test]
    fn auto_takes_the_first_that_opens_and_says_why() {
        let chosen = select(
            None,
            vec![
                broken(Kind::Ebpf, "no BTF"),
                works(Kind::Nftables),
                works(Kind::Iptables),
            ],
        )
        .unwrap();
        assert_eq!(chosen.datapath.kind(), Kind::Nftables);
        assert_eq!(
            chosen.reason,
            "auto: ebpf unavailable (no BTF); nftables works"
        );
    }

    #[test]
    fn a_requested_datapath_that_fails_is_an_error_not_a_fallback() {
        let err = select(
            Some(Kind::Ebpf),
            vec![broken(Kind::Ebpf, "no BTF"), works(Kind::Nftables)],
        );
        assert_eq!(err.err().unwrap().to_string(), "no BTF");
    }

    #[test]
    fn nothing_works() {
        let err = select(
            None,
            vec![
                broken(Kind::Nftables, "no nft"),
                broken(Kind::Iptables, "no iptables"),
            ],
        );
        assert_eq!(
            err.err().unwrap().to_string(),
            "no datapath can run here: nftables unavailable (no nft); iptables unavailable (no iptables)"
        );
    }
}
