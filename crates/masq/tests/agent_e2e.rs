//! The real `masq agent` binary, end to end, on every datapath (issue 3).
//!
//! Each test builds its own pod / pod2 / node / external topology (masq-testbed, unique network
//! namespaces removed on drop, also on failure), its own kubelet-style ConfigMap volume, runs
//! the agent inside the node namespace and checks the source address the external side sees
//! over TCP, UDP and ping. Every scenario runs once per datapath (see `tests_for!` at the
//! bottom), so a failure names both. Before and after each test the root namespace is read, only
//! read, to prove the agent never installed anything there.
//!
//! The eBPF datapath (issue 4) runs every scenario too, with its pins on a bpffs private to the
//! test's thread, plus its own scenarios in `ebpf_scenarios` (module `ebpf_only` below):
//! floods, shared source ports, `kill -9` under traffic, the NAT table, `auto`, port exhaustion,
//! a CNI's program on the same hooks and the bpffs the agent mounts itself.
//!
//! Dual stack (`--enable-ipv6`, issue 17): module `dual_stack`, every datapath again.
//!
//! The scenarios every datapath runs live in `agent_e2e_scenarios/`, one file per concern.

mod dual_stack;
mod ebpf_scenarios;
mod harness;
// Shared with node_mix.rs, which runs all of it: `dual_stack`'s IPv6 NodePort, hostPort and
// host-flow scenarios reuse its checks and sabotages; the IPv4 scenarios stay unused here.
#[allow(dead_code)]
mod node_mix_scenarios;
#[path = "agent_e2e_scenarios/mod.rs"]
mod scenarios;

use harness::*;

/// The pod's view with TEST-NET masqueraded and the private network kept.
const VPC_ONLY: &str = "nonMasqueradeCIDRs: [10.0.0.0/8]\n";

/// One `#[test]` per scenario × datapath, named `<datapath>::<scenario>`.
macro_rules! tests_for {
    ($module:ident, $datapath:expr) => {
        mod $module {
            use super::{run, scenarios, Datapath};

            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn decision_reasons() {
                run($datapath, scenarios::decision_reasons)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn link_local_masqueraded_when_asked() {
                run($datapath, scenarios::link_local_masqueraded_when_asked)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn not_a_pod() {
                run($datapath, scenarios::not_a_pod)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn live_reload() {
                run($datapath, scenarios::live_reload)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn masqueraded_connection_keeps_its_translation_across_a_reload() {
                run(
                    $datapath,
                    scenarios::masqueraded_connection_keeps_its_translation_across_a_reload,
                )
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn kept_connection_stays_kept_across_a_reload() {
                run(
                    $datapath,
                    scenarios::kept_connection_stays_kept_across_a_reload,
                )
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn config_file_created_and_deleted() {
                run($datapath, scenarios::config_file_created_and_deleted)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn invalid_config_keeps_the_last_good_one() {
                run($datapath, scenarios::invalid_config_keeps_the_last_good_one)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn invalid_first_config_installs_nothing() {
                run($datapath, scenarios::invalid_first_config_installs_nothing)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn restart_with_an_invalid_config_keeps_the_rules() {
                run(
                    $datapath,
                    scenarios::restart_with_an_invalid_config_keeps_the_rules,
                )
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn kill9_and_restart_keep_connections() {
                run($datapath, scenarios::kill9_and_restart_keep_connections)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn sigterm_leaves_the_datapath() {
                run($datapath, scenarios::sigterm_leaves_the_datapath)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn early_sigterm_is_graceful() {
                run($datapath, scenarios::early_sigterm_is_graceful)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn repaired_between_resyncs() {
                run($datapath, scenarios::repaired_between_resyncs)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn drift_repaired_within_resync() {
                run($datapath, scenarios::drift_repaired_within_resync)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn node_address_change_is_followed() {
                run($datapath, scenarios::node_address_change_is_followed)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn egress_interface_recreated() {
                run($datapath, scenarios::egress_interface_recreated)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn cleanup_leaves_nothing() {
                run($datapath, scenarios::cleanup_leaves_nothing)
            }
        }
    };
}

// The datapaths under test; adding one is one line.
tests_for!(nftables, Datapath::Nftables);
tests_for!(iptables_nft, Datapath::IptablesNft);
tests_for!(iptables_legacy, Datapath::IptablesLegacy);
tests_for!(ebpf, Datapath::Ebpf);

/// The scenarios only the eBPF datapath has (issue 4).
mod ebpf_only {
    use super::{ebpf_scenarios as scenarios, run, Datapath};

    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn floods_reach_the_right_pod() {
        run(
            Datapath::Ebpf,
            scenarios::floods::floods_reach_the_right_pod,
        )
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn same_source_port_from_two_pods() {
        run(
            Datapath::Ebpf,
            scenarios::floods::same_source_port_from_two_pods,
        )
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn kill9_under_traffic_breaks_nothing() {
        run(
            Datapath::Ebpf,
            scenarios::floods::kill9_under_traffic_breaks_nothing,
        )
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn nat_table_in_metrics_and_nat_list() {
        run(
            Datapath::Ebpf,
            scenarios::nat_table::nat_table_in_metrics_and_nat_list,
        )
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn auto_prefers_ebpf_and_says_why() {
        run(
            Datapath::Ebpf,
            scenarios::startup::auto_prefers_ebpf_and_says_why,
        )
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn loading_memory_is_given_back() {
        run(
            Datapath::Ebpf,
            scenarios::startup::loading_memory_is_given_back,
        )
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn status_shows_a_cni_program_behind_masq() {
        run(
            Datapath::Ebpf,
            scenarios::beside_cni::status_shows_a_cni_program_behind_masq,
        )
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn mounts_a_bpffs_where_there_is_none() {
        run(
            Datapath::Ebpf,
            scenarios::beside_cni::mounts_a_bpffs_where_there_is_none,
        )
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn port_exhaustion_is_counted_and_recovers() {
        run(
            Datapath::Ebpf,
            scenarios::nat_table::port_exhaustion_is_counted_and_recovers,
        )
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn reset_then_reuse_then_idle_stays_translated() {
        run(
            Datapath::Ebpf,
            scenarios::engine::reset_then_reuse_then_idle_stays_translated,
        )
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn unanswered_syns_leave_after_their_lifetime() {
        run(
            Datapath::Ebpf,
            scenarios::engine::unanswered_syns_leave_after_their_lifetime,
        )
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn a_port_pool_is_used_to_the_last_port() {
        run(
            Datapath::Ebpf,
            scenarios::engine::a_port_pool_is_used_to_the_last_port,
        )
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn a_flood_that_fills_the_table_spares_idle_connections() {
        run(
            Datapath::Ebpf,
            scenarios::engine::a_flood_that_fills_the_table_spares_idle_connections,
        )
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn big_tcp_is_translated() {
        run(Datapath::Ebpf, scenarios::engine::big_tcp_is_translated)
    }
}
