//! Throwaway network-namespace topologies (pod, node, external) for end-to-end tests, `masq demo`
//! and benchmarks. Every namespace has a unique name and is removed on drop, also on failure;
//! nothing here ever touches the root namespace.
#![deny(missing_docs)]

pub mod netns;

pub use netns::{veth, Netns};
