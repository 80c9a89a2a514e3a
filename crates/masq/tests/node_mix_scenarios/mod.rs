//! The scenarios of `node_mix.rs`, by the part of issue 13 they cover: flows that begin
//! outside and reach a pod ([`inbound`]), the node's own flows beside pod flows
//! ([`host_flows`]), kube-proxy's Services and portmap's hostPorts ([`services`]). Each one
//! checks its property and then shows, with [`sabotage`], that the check fails when the
//! property is broken.

pub mod host_flows;
pub mod inbound;
pub mod sabotage;
pub mod services;

/// The issue's config: the VPC and a peered network are kept, everything else (TEST-NET
/// included, where the external client and the internet host live) is masqueraded.
pub const ISSUE_CONFIG: &str = "nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12]\n";
