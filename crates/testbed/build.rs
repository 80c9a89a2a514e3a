//! Marks the root-only tests ignored in builds without root (see crates/needs).

fn main() {
    masq_needs::emit_build_cfg();
}
