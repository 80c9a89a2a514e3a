//! Kernel tests of the iptables datapath, each inside its own network namespace, on both backends
//! (iptables-nft, iptables-legacy). What the kernel holds is read
//! back with `iptables-save` and compared with `render`'s rules line by line.
//!
//! Reading and writing the nat table (`nat_table`), masq's own rules (`rules`), taking over
//! from kubernetes-sigs/ip-masq-agent (`upstream`), other iptables users (`other_users`), and
//! real traffic (`traffic`).

#[path = "../ipt_support/mod.rs"]
mod ipt_support;
mod nat_table;
mod other_users;
mod rules;
mod traffic;
mod upstream;
