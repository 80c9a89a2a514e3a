/* Map keys and values shared with userspace (crates/datapath/src/ebpf/types.rs mirrors them). */
#ifndef MASQ_LIB_NAT_TYPES_H
#define MASQ_LIB_NAT_TYPES_H

#include "common.h"

/*
 * Every struct here is read and written by userspace through #[repr(C)] copies
 * (crates/datapath/src/ebpf/types.rs), checked member by member against this object's BTF by
 * crates/datapath/tests/ebpf_abi.rs. Padding is explicit so the layouts cannot drift. Addresses are stored in
 * network order, ports too (as on the wire), except the port range in masq_config.
 */

/* masq_config.flags */
/* (1U << 0) retired: masqLinkLocal is the link-local entry of masq_dst_policy, or its absence */
#define MASQ_CFG_POD_CIDRS (1U << 1)       /* --pod-cidr given: only sources in masq_pod_cidrs(6) are pods */
#define MASQ_CFG_SRC_CIDRS (1U << 2)       /* masq_nonmasq_src is not empty (spares an LPM lookup) */
/* (1U << 3) retired: the original port is no longer preferred */
#define MASQ_CFG_IPV6 (1U << 4)            /* --enable-ipv6: IPv6 is translated; without it, it passes untouched */
/* (1U << 5) retired: masqLinkLocalIPv6, as (1U << 0) for IPv6 */
#define MASQ_CFG_SRC_CIDRS6 (1U << 6)      /* masq_nonmasq_src6 is not empty (spares an LPM lookup) */

struct masq_config {
	__u32 port_count; /* valid entries of masq_ports */
	__u32 flags;
};
build_bug_on(sizeof(struct masq_config) != 8);

/*
 * Egress routing on a VPC-native node (docs/vpc-native.md): mark 0 turns steering off. Replies
 * of steered flows get `mark` so the node's reverse-path check takes masq's ip rule.
 */
struct masq_steer {
	__u32 mark;  /* egress mark bits */
	__u32 table; /* routing table a steered packet is looked up in (254: main) */
};
build_bug_on(sizeof(struct masq_steer) != 8);

/*
 * A SNAT address pool (masq_snat_pools, lib/pool.h): --snat-ip or --snat-ips-from-interface in
 * the operator's order, or one interface's primary address. At most MASQ_SNAT_POOL_MAX
 * addresses (crates/datapath/src/pool.rs MAX_ADDRESSES, the iptables cluster match's limit).
 */
#define MASQ_SNAT_POOL_MAX 32

struct snat_pool {
	__u32 count;                       /* addresses in use: 1 to MASQ_SNAT_POOL_MAX */
	__be32 addrs[MASQ_SNAT_POOL_MAX];  /* in pool order; past count: zero */
};
build_bug_on(sizeof(struct snat_pool) != 132);

/* LPM trie key: a struct, because aya rejects a scalar BTF key for LPM tries. */
struct lpm_v4_key {
	__u32 prefixlen;
	__be32 addr;
};
build_bug_on(sizeof(struct lpm_v4_key) != 8);

/*
 * A connection as seen in one direction. ICMP echo uses the identifier as a port: requests
 * leave as (sport = id, dport = 0), so their replies arrive as (sport = 0, dport = id).
 */
struct nat_tuple {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};
build_bug_on(sizeof(struct nat_tuple) != 16);

/* nat_entry.flags */
#define NAT_F_CLOSING (1U << 0) /* TCP FIN or RST seen: expires after the short grace period */
#define NAT_F_HOST (1U << 1)    /* reverse-only entry reserving a port the node itself uses */
#define NAT_F_STEERED (1U << 2) /* left a secondary interface, redirected to the egress interface */
#define NAT_F_REPLIED (1U << 3) /* a packet of the reply direction was seen (conntrack's SEEN_REPLY) */
#define NAT_F_PASS (1U << 4)    /* forward-only entry of a flow that leaves untranslated */
#define NAT_F_INBOUND (1U << 5) /* with NAT_F_PASS: the flow began outside, towards a pod */

/*
 * The forward half (masq_nat_egress, keyed by the pod's tuple) holds the translated source; the
 * reverse half (masq_nat_ingress, keyed by the reply tuple) holds the pod's address and port.
 * masq_nat_egress also holds NAT_F_PASS entries without a reverse half: flows masq decided to
 * leave alone (kept destinations), and flows that began outside (NAT_F_INBOUND, keyed by the
 * pod's reply tuple), so their packets are never translated whatever the config says later.
 * Such an entry's to_addr and to_port are the tuple's own source.
 */
struct nat_entry {
	__be32 to_addr;
	__be16 to_port;
	__u8 flags;
	__u8 pad;
	__u64 created;   /* jiffies (nat_now) */
	__u64 last_seen; /* jiffies, refreshed every NAT_TOUCH_JIFFIES at most to spare cache lines */
};
build_bug_on(sizeof(struct nat_entry) != 24);

/*
 * The pool of the last flow refused for want of a port (masq_alloc_failure[0]): userspace
 * reports its fill beside the failure count.
 */
struct alloc_failure {
	__be32 snat_addr;
	__be32 daddr;
	__be16 dport;
	__u8 proto;
	__u8 pad;
	__u32 span; /* ports in the range searched */
	__u64 when; /* jiffies; 0: never */
};
build_bug_on(sizeof(struct alloc_failure) != 24);

/* Fragments after the first carry no ports: they follow the first one's translation. */
struct frag_key {
	__be32 saddr;
	__be32 daddr;
	__be16 ip_id;
	__u8 proto;
	__u8 ingress; /* 1 for the ingress direction */
};
build_bug_on(sizeof(struct frag_key) != 12);

/* frag_value.flags */
#define FRAG_F_DROPPED (1U << 0) /* the first fragment was dropped: so are the rest */
#define FRAG_F_STEERED (1U << 1) /* the first fragment was redirected to the egress interface */

struct frag_value {
	__be32 to_addr; /* 0: the first fragment was left untouched */
	__u32 flags;
};
build_bug_on(sizeof(struct frag_value) != 8);

/*
 * IPv6: the same structs with 16-byte addresses (four words in network order), kept in maps of
 * their own (masq_nat6_*, lib/nat6.h) so the IPv4 entries stay small. The flags and the
 * meaning of every field are those of the IPv4 structs above.
 */

struct lpm_v6_key {
	__u32 prefixlen;
	__be32 addr[4];
};
build_bug_on(sizeof(struct lpm_v6_key) != 20);

/* A map key or value holding one IPv6 address (masq_local_addrs6, snat_pool6). */
struct v6_addr {
	__be32 a[4];
};
build_bug_on(sizeof(struct v6_addr) != 16);

/* struct snat_pool for IPv6 (masq_snat_pools6, lib/pool6.h). */
struct snat_pool6 {
	__u32 count;
	struct v6_addr addrs[MASQ_SNAT_POOL_MAX];
};
build_bug_on(sizeof(struct snat_pool6) != 516);

struct nat_tuple6 {
	__be32 saddr[4];
	__be32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};
build_bug_on(sizeof(struct nat_tuple6) != 40);

struct nat_entry6 {
	__be32 to_addr[4];
	__be16 to_port;
	__u8 flags;
	__u8 pad[5];
	__u64 created;   /* jiffies (nat_now) */
	__u64 last_seen; /* jiffies */
};
build_bug_on(sizeof(struct nat_entry6) != 40);

struct alloc_failure6 {
	__be32 snat_addr[4];
	__be32 daddr[4];
	__be16 dport;
	__u8 proto;
	__u8 pad;
	__u32 span;
	__u64 when; /* jiffies; 0: never */
};
build_bug_on(sizeof(struct alloc_failure6) != 48);

/* IPv6 fragments carry a 32-bit identification in their fragment header. */
struct frag_key6 {
	__be32 saddr[4];
	__be32 daddr[4];
	__be32 id;
	__u8 proto;
	__u8 ingress;
	__u8 pad[2];
};
build_bug_on(sizeof(struct frag_key6) != 40);

struct frag_value6 {
	__be32 to_addr[4]; /* all zero: the first fragment was left untouched */
	__u32 flags;       /* FRAG_F_* */
};
build_bug_on(sizeof(struct frag_value6) != 20);

#endif /* MASQ_LIB_NAT_TYPES_H */
