//! The ABI between the programs in `bpf/` and their Rust side (`crates/datapath/src/ebpf/`),
//! checked against the compiled object so that any drift fails here rather than in a kernel:
//! - every struct shared through a map has, in the object's BTF, the size and the member
//!   offsets of its `#[repr(C)]` copy, and no member the copy lacks;
//! - every map the agent reads or writes has the key and value sizes of the Rust types, and the
//!   capacities the Rust side assumes;
//! - every constant both sides spell (flags, defaults, the kfunc placeholder) is the same
//!   number. The object's BTF does not carry `#define`s, so those are read from the headers the
//!   object is built from.
//!
//! The reasons' numbers are checked against `reasons.h` by `ebpf::types`'s unit test.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};

use masq_datapath::ebpf::contents::PORTS_MAX;
use masq_datapath::ebpf::kfunc::CAST_TO_KERN_CTX_PLACEHOLDER;
use masq_datapath::ebpf::maps::name;
use masq_datapath::ebpf::snat_pools::{SnatPool, SnatPool6, SNAT_POOL_MAX};
use masq_datapath::ebpf::types::*;
use masq_datapath::ebpf::{BOUNDED_OBJECT, DEFAULT_NAT_CAPACITY, OBJECT};
use masq_datapath::pool;

/// The object's BTF, parsed independently of aya.
fn btf(object: &[u8]) -> btf_rs::Btf {
    let parsed = aya_obj::Object::parse(object).expect("the object parses");
    let raw = parsed.btf.expect("the object carries BTF").to_bytes();
    btf_rs::Btf::from_bytes(&raw).expect("its BTF parses")
}

/// Size and (member → byte offset) of struct `name` in `btf`.
fn layout(btf: &btf_rs::Btf, name: &str) -> (usize, BTreeMap<String, usize>) {
    let types = btf
        .resolve_types_by_name(name)
        .expect("a type by that name");
    let st = types
        .iter()
        .find_map(|t| match t {
            btf_rs::Type::Struct(s) => Some(s),
            _ => None,
        })
        .unwrap_or_else(|| panic!("struct {name} is not in the object's BTF"));
    let members = st
        .members
        .iter()
        .map(|m| {
            let offset = usize::try_from(m.bit_offset() / 8).unwrap();
            (btf.resolve_name(m).unwrap(), offset)
        })
        .collect();
    (st.size(), members)
}

/// Checks a Rust struct against the C struct of the same layout, member by member.
macro_rules! same_layout {
    ($btf:expr, $rust:ty, $c:literal, [$($field:ident),+ $(,)?]) => {{
        let (size, members) = layout($btf, $c);
        assert_eq!(size, size_of::<$rust>(), "size of struct {}", $c);
        let rust: BTreeMap<String, usize> =
            [$((stringify!($field).to_string(), offset_of!($rust, $field))),+].into();
        assert_eq!(members, rust, "members of struct {}", $c);
    }};
}

#[test]
fn shared_structs_have_the_rust_layout() {
    for object in [OBJECT, BOUNDED_OBJECT] {
        let btf = btf(object);
        same_layout!(
            &btf,
            NatTuple,
            "nat_tuple",
            [saddr, daddr, sport, dport, proto, pad]
        );
        same_layout!(
            &btf,
            NatEntry,
            "nat_entry",
            [to_addr, to_port, flags, pad, created, last_seen]
        );
        same_layout!(&btf, MasqConfig, "masq_config", [port_count, flags]);
        same_layout!(&btf, MasqSteer, "masq_steer", [mark, table]);
        same_layout!(
            &btf,
            AllocFailure,
            "alloc_failure",
            [snat_addr, daddr, dport, proto, pad, span, when]
        );
        same_layout!(
            &btf,
            NatTuple6,
            "nat_tuple6",
            [saddr, daddr, sport, dport, proto, pad]
        );
        same_layout!(
            &btf,
            NatEntry6,
            "nat_entry6",
            [to_addr, to_port, flags, pad, created, last_seen]
        );
        same_layout!(
            &btf,
            AllocFailure6,
            "alloc_failure6",
            [snat_addr, daddr, dport, proto, pad, span, when]
        );
        same_layout!(&btf, SnatPool, "snat_pool", [count, addrs]);
        same_layout!(&btf, SnatPool6, "snat_pool6", [count, addrs]);
    }
}

#[test]
fn maps_have_the_sizes_the_rust_side_uses() {
    let object = aya_obj::Object::parse(OBJECT).unwrap();
    let map = |n: &str| {
        object
            .maps
            .get(n)
            .unwrap_or_else(|| panic!("map {n} is not in the object"))
    };
    // (map, key size, value size): the Rust types `Maps` reads and writes them with.
    let checks: [(&str, usize, usize); 17] = [
        (name::CONFIG, 4, size_of::<MasqConfig>()),
        (name::STEER, 4, size_of::<MasqSteer>()),
        (name::SNAT_POOLS, 4, size_of::<SnatPool>()),
        (name::LOCAL_ADDRS, 4, 1),
        (
            name::NAT_EGRESS,
            size_of::<NatTuple>(),
            size_of::<NatEntry>(),
        ),
        (
            name::NAT_INGRESS,
            size_of::<NatTuple>(),
            size_of::<NatEntry>(),
        ),
        (name::COUNTERS, 4, 8),
        (name::ALLOC_FAILURE, 4, size_of::<AllocFailure>()),
        (name::PORTS, 4, 2),
        (name::SNAT_POOLS6, 4, size_of::<SnatPool6>()),
        (name::LOCAL_ADDRS6, 16, 1),
        // LPM keys: the prefix length, then the address (aya's `Key<[u8; 16]>`).
        (name::DST_POLICY6, 20, 1),
        (name::NONMASQ_SRC6, 20, 1),
        (name::POD_CIDRS6, 20, 1),
        (
            name::NAT6_EGRESS,
            size_of::<NatTuple6>(),
            size_of::<NatEntry6>(),
        ),
        (
            name::NAT6_INGRESS,
            size_of::<NatTuple6>(),
            size_of::<NatEntry6>(),
        ),
        (name::ALLOC_FAILURE6, 4, size_of::<AllocFailure6>()),
    ];
    for (n, key, value) in checks {
        let m = map(n);
        assert_eq!(m.key_size() as usize, key, "key size of {n}");
        assert_eq!(m.value_size() as usize, value, "value size of {n}");
    }
    for n in name::NAT_HALVES {
        assert_eq!(
            map(n).max_entries(),
            DEFAULT_NAT_CAPACITY,
            "capacity of {n}"
        );
    }
    assert_eq!(map(name::COUNTERS).max_entries(), REASON_SLOTS);
    assert_eq!(map(name::PORTS).max_entries(), PORTS_MAX);
    for n in name::ALL {
        map(n);
    }
    assert_eq!(
        object.maps.len(),
        name::ALL.len(),
        "a map the Rust side does not know"
    );
}

/// `#define NAME VALUE` lines of the headers, values as numbers (`(1U << 3)` included).
fn defines() -> BTreeMap<String, u64> {
    let headers = [
        include_str!("../../../bpf/lib/nat_types.h"),
        include_str!("../../../bpf/lib/nat.h"),
        include_str!("../../../bpf/lib/maps.h"),
        include_str!("../../../bpf/lib/pool.h"),
        include_str!("../../../bpf/lib/jhash.h"),
        include_str!("../../../bpf/lib/kern_ctx.h"),
    ];
    let mut out = BTreeMap::new();
    for line in headers.iter().flat_map(|h| h.lines()) {
        let Some(rest) = line.strip_prefix("#define ") else {
            continue;
        };
        let mut words = rest.splitn(2, char::is_whitespace);
        let (Some(name), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        let value = value.split("/*").next().unwrap().trim();
        let value = value.trim_start_matches('(').trim_end_matches(')');
        let number = |text: &str| {
            let text = text.trim().trim_end_matches('U');
            match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => text.parse().ok(),
            }
        };
        let parsed = match value.split_once("<<") {
            Some((base, shift)) => number(base).zip(number(shift)).map(|(b, s)| b << s),
            None => number(value),
        };
        if let Some(v) = parsed {
            out.insert(name.to_string(), v);
        }
    }
    out
}

#[test]
fn constants_are_the_same_numbers_on_both_sides() {
    let c = defines();
    let expect = |name: &str, rust: u64| {
        assert_eq!(c.get(name), Some(&rust), "#define {name}");
    };
    expect("MASQ_CFG_POD_CIDRS", CFG_POD_CIDRS.into());
    expect("MASQ_CFG_SRC_CIDRS", CFG_SRC_CIDRS.into());
    expect("NAT_F_CLOSING", NAT_F_CLOSING.into());
    expect("NAT_F_HOST", NAT_F_HOST.into());
    expect("NAT_F_STEERED", NAT_F_STEERED.into());
    expect("NAT_F_REPLIED", NAT_F_REPLIED.into());
    expect("NAT_F_PASS", NAT_F_PASS.into());
    expect("NAT_F_INBOUND", NAT_F_INBOUND.into());
    expect("MASQ_CFG_IPV6", CFG_IPV6.into());
    expect("MASQ_CFG_SRC_CIDRS6", CFG_SRC_CIDRS6.into());
    expect("MASQ_NAT_MAX", DEFAULT_NAT_CAPACITY.into());
    expect("MASQ_PORTS_MAX", PORTS_MAX.into());
    expect("MASQ_SNAT_POOL_MAX", SNAT_POOL_MAX as u64);
    expect("MASQ_POOL_HASH_SEED", pool::HASH_SEED.into());
    expect("MASQ_JHASH_INITVAL", 0xdead_beef);
    expect(
        "MASQ_KFUNC_CAST_TO_KERN_CTX",
        CAST_TO_KERN_CTX_PLACEHOLDER.into(),
    );
    // Every NAT_F_ flag of the C side has its Rust constant above.
    let flags = c.keys().filter(|k| k.starts_with("NAT_F_")).count();
    assert_eq!(flags, 6, "a NAT_F_ flag the Rust side does not know");
    let cfg = c.keys().filter(|k| k.starts_with("MASQ_CFG_")).count();
    assert_eq!(cfg, 4, "a MASQ_CFG_ flag the Rust side does not know");
}
