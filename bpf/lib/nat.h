/* masq's SNAT engine: the flow table (NAT pairs and passed flows) and the new-flow decision (a
 * new flow's pair and its port search: nat_create.h). */
#ifndef MASQ_LIB_NAT_H
#define MASQ_LIB_NAT_H

#include "common.h"
#include "maps.h"
#include "metrics.h"
#include "nat_types.h"
#include "parse.h"

/*
 * Capacity of each half of the flow table when userspace does not size it (--nat-table-size
 * sets max_entries at load time). This and every other number the Rust side also spells is
 * checked against it by crates/datapath/tests/ebpf_abi.rs.
 */
#define MASQ_NAT_MAX 131072
#define MASQ_FRAG_MAX 8192
/* Port candidates of the bounded search, for kernels without bpf_loop (before 5.17). */
#define MASQ_PORT_PROBES_BOUNDED 64

/*
 * Plain hashes, not LRU ones: like conntrack's table, only the userspace GC ever deletes an
 * entry (crates/datapath/src/ebpf/nat.rs), so the kernel never evicts one half of a live pair
 * or an idle pooled connection to make room for a flood; a full table refuses new flows
 * instead (counted), as nf_conntrack_max does.
 */

/* Forward halves: pod tuple → translated source; and the flows that pass (NAT_F_PASS). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct nat_tuple);
	__type(value, struct nat_entry);
	__uint(max_entries, MASQ_NAT_MAX);
} masq_nat_egress SEC(".maps");

/* Reverse halves: reply tuple → the pod's address and port; and the node's own ports. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct nat_tuple);
	__type(value, struct nat_entry);
	__uint(max_entries, MASQ_NAT_MAX);
} masq_nat_ingress SEC(".maps");

/* Fragments are short-lived: an LRU may forget the oldest. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_key);
	__type(value, struct frag_value);
	__uint(max_entries, MASQ_FRAG_MAX);
} masq_frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct alloc_failure);
	__uint(max_entries, 1);
} masq_alloc_failure SEC(".maps");

/* The map update helpers' "no room" answer (a full preallocated hash). */
#define MASQ_E2BIG 7

__always_inline_fn void tuple_from_pkt(struct nat_tuple *t, const struct pkt *p)
{
	t->saddr = p->saddr;
	t->daddr = p->daddr;
	t->sport = p->sport;
	t->dport = p->dport;
	t->proto = p->proto;
	t->pad[0] = t->pad[1] = t->pad[2] = 0;
}

/* The other direction of the same flow, untranslated. */
__always_inline_fn void tuple_swap(struct nat_tuple *out, const struct nat_tuple *t)
{
	out->saddr = t->daddr;
	out->daddr = t->saddr;
	out->sport = t->dport;
	out->dport = t->sport;
	out->proto = t->proto;
	out->pad[0] = out->pad[1] = out->pad[2] = 0;
}

/* The reverse key of a forward half: the reply, addressed to the translated source. */
__always_inline_fn void reverse_of(struct nat_tuple *rev, const struct nat_tuple *fwd,
				   const struct nat_entry *e)
{
	rev->saddr = fwd->daddr;
	rev->daddr = e->to_addr;
	rev->sport = fwd->dport;
	rev->dport = e->to_port;
	rev->proto = fwd->proto;
	rev->pad[0] = rev->pad[1] = rev->pad[2] = 0;
}

/* The forward key of a reverse half: the pod's own tuple. */
__always_inline_fn void forward_of(struct nat_tuple *fwd, const struct nat_tuple *rev,
				   const struct nat_entry *e)
{
	fwd->saddr = e->to_addr;
	fwd->daddr = rev->saddr;
	fwd->sport = e->to_port;
	fwd->dport = rev->sport;
	fwd->proto = rev->proto;
	fwd->pad[0] = fwd->pad[1] = fwd->pad[2] = 0;
}

/*
 * The NAT table's clock: jiffies. bpf_jiffies64 is inlined by the verifier, where the
 * nanosecond clocks are helper calls costing ~16 ns a packet here; userspace converts
 * (crates/datapath/src/ebpf/clock.rs).
 */
__always_inline_fn __u64 nat_now(void)
{
	return bpf_jiffies64();
}

/* An entry's last-seen time is refreshed at most this often: 1 s at HZ=100, 0.1 s at 1000. */
#define NAT_TOUCH_JIFFIES 100

/* nat_touch's answer, a bit set. */
#define TOUCH_REFRESHED 1 /* the timestamp moved: a cheap moment for rarer checks */
#define TOUCH_REOPENED 2  /* a new SYN: the flow starts over, its partner must too */

/*
 * Keeps an entry alive for the GC and follows the flow's state the way conntrack does: the
 * first packet of the reply direction (reply = 1) marks it replied; a TCP FIN or RST marks it
 * closing; a new SYN (no ACK) in the original direction starts it over, closing or not (the
 * partner half may be the one a reset closed), since the 4-tuple is being reused by a new
 * connection (conntrack: TCP_CONNTRACK_CLOSE → SYN_SENT). SYNs are rare on known flows, so the
 * partner's lookup this costs is too.
 * Writes happen only when something changes, so established packets touch no cache line but
 * once per NAT_TOUCH_JIFFIES.
 */
__always_inline_fn int nat_touch_state(__u8 *entry_flags, __u64 *last_seen, __u8 proto,
					__u8 tcp_flags, int reply)
{
	__u64 now = nat_now();
	__u8 flags = *entry_flags;
	int touched = 0;

	if (now - *last_seen >= NAT_TOUCH_JIFFIES) {
		*last_seen = now;
		touched |= TOUCH_REFRESHED;
	}
	if (proto == IPPROTO_TCP) {
		if (tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)) {
			if (!(flags & NAT_F_CLOSING))
				*entry_flags = flags | NAT_F_CLOSING;
			return touched;
		}
		/* Whichever side closed it: the partner half may be the closing one. */
		if (!reply && (tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN) {
			if (flags & (NAT_F_CLOSING | NAT_F_REPLIED))
				*entry_flags = flags & ~(NAT_F_CLOSING | NAT_F_REPLIED);
			*last_seen = now;
			return touched | TOUCH_REOPENED;
		}
	}
	if (reply && !(flags & NAT_F_REPLIED))
		*entry_flags = flags | NAT_F_REPLIED;
	return touched;
}

/* nat_touch_state on an IPv4 entry (IPv6: nat6_touch, lib/nat6.h). */
__always_inline_fn int nat_touch(struct nat_entry *e, const struct pkt *p, int reply)
{
	return nat_touch_state(&e->flags, &e->last_seen, p->proto, p->tcp_flags, reply);
}

/*
 * The two halves of a pair are separate entries. Only the GC deletes, but a half can still go
 * missing (an entry deleted by hand, an upgrade that carried one map over and not the other);
 * whenever a flow's timestamp is refreshed the program puts the other half back, so neither
 * direction ever stops being translated. Returns -1 when the port went to another flow (or the
 * node) while the reverse half was missing: the replies are that flow's now, and this flow
 * must be mapped anew (its caller drops the forward half and starts over).
 */
__always_inline_fn int nat_restore_reverse(const struct nat_tuple *fwd, const struct nat_entry *e)
{
	struct nat_tuple rev;
	struct nat_entry *r;
	struct nat_entry val = {
		.to_addr = fwd->saddr,
		.to_port = fwd->sport,
		.flags = e->flags,
		.created = e->created,
		.last_seen = e->last_seen,
	};

	reverse_of(&rev, fwd, e);
	r = bpf_map_lookup_elem(&masq_nat_ingress, &rev);
	if (r)
		return (r->flags & NAT_F_HOST) || r->to_addr != fwd->saddr ||
			       r->to_port != fwd->sport ? -1 : 0;
	if (bpf_map_update_elem(&masq_nat_ingress, &rev, &val, BPF_NOEXIST) == 0)
		count(MASQ_NAT_REVERSE_RESTORED);
	return 0;
}

/* The same from the reply side: a missing forward half would let the pod's next packet leave
 * as a new flow, with another port. */
__always_inline_fn void nat_restore_forward(const struct nat_tuple *rev, const struct nat_entry *e)
{
	struct nat_tuple fwd;
	struct nat_entry val = {
		.to_addr = rev->daddr,
		.to_port = rev->dport,
		.flags = e->flags,
		.created = e->created,
		.last_seen = e->last_seen,
	};

	forward_of(&fwd, rev, e);
	if (bpf_map_lookup_elem(&masq_nat_egress, &fwd))
		return;
	if (bpf_map_update_elem(&masq_nat_egress, &fwd, &val, BPF_NOEXIST) == 0)
		count(MASQ_NAT_FORWARD_RESTORED);
}

/* A reused 4-tuple reopened the forward half: the reverse half starts over too (or comes back).
 * -1 as nat_restore_reverse. */
__always_inline_fn int nat_reopen_reverse(const struct nat_tuple *fwd, const struct nat_entry *e)
{
	struct nat_tuple rev;
	struct nat_entry *r;

	reverse_of(&rev, fwd, e);
	r = bpf_map_lookup_elem(&masq_nat_ingress, &rev);
	if (!r || (r->flags & NAT_F_HOST) || r->to_addr != fwd->saddr || r->to_port != fwd->sport)
		return nat_restore_reverse(fwd, e);
	r->flags &= ~(NAT_F_CLOSING | NAT_F_REPLIED);
	r->last_seen = e->last_seen;
	return 0;
}

__always_inline_fn int is_local_addr(__be32 addr)
{
	return bpf_map_lookup_elem(&masq_local_addrs, &addr) != NULL;
}

/*
 * Does a destination-policy entry (masq_dst_policy, NULL: none matched) keep the pod address?
 * Its value is then the reason; MASQ_TRANSLATED_EGRESS (a masqueradeCIDRs entry) goes on to
 * step 6, which it does not overrule: a node address is never translated.
 */
__always_inline_fn int dst_verdict_keeps(const __u8 *verdict)
{
	return verdict && *verdict != MASQ_TRANSLATED_EGRESS;
}

/*
 * docs/decision.md, steps 2–6, for the first packet of a flow leaving the node. Returns
 * MASQ_TRANSLATED_EGRESS to masquerade, or the MASQ_KEEP_* reason.
 */
__always_inline_fn enum masq_reason decide(const struct masq_config *cfg, __be32 saddr,
					   __be32 daddr)
{
	const __u8 *verdict;

	if ((cfg->flags & MASQ_CFG_SRC_CIDRS) && lpm_contains(&masq_nonmasq_src, saddr))
		return MASQ_KEEP_NON_MASQ_SRC;
	if (cfg->flags & MASQ_CFG_POD_CIDRS) {
		if (!lpm_contains(&masq_pod_cidrs, saddr))
			return MASQ_KEEP_NOT_A_POD;
	} else if (is_local_addr(saddr)) {
		return MASQ_KEEP_NOT_A_POD;
	}
	verdict = lpm_lookup(&masq_dst_policy, daddr);
	if (dst_verdict_keeps(verdict))
		return *verdict;
	if (is_local_addr(daddr))
		return MASQ_KEEP_LOCAL;
	return MASQ_TRANSLATED_EGRESS;
}

/*
 * Is this arriving packet addressed to a pod, i.e. would the pod's answer be a candidate for
 * masquerading? The same notion of "pod" as decide(): inside --pod-cidr when given, else any
 * address that is not the node's. Multicast, broadcast and class E never are.
 */
__always_inline_fn int dst_is_pod(const struct masq_config *cfg, __be32 daddr)
{
	if ((bpf_ntohl(daddr) >> 28) >= 0xe)
		return 0;
	if (cfg->flags & MASQ_CFG_POD_CIDRS)
		return lpm_contains(&masq_pod_cidrs, daddr);
	return !is_local_addr(daddr);
}

__always_inline_fn const struct masq_config *config_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&masq_config, &zero);
}

/*
 * Records a flow that leaves untranslated (NAT_F_PASS): its packets then pass on one lookup, and
 * a config change can no longer turn it into a translated flow mid-stream (conntrack keeps a
 * kept connection kept). `flags` adds NAT_F_INBOUND / NAT_F_REPLIED. A full table only costs
 * that guarantee (counted): the packet passes anyway.
 */
__always_inline_fn void nat_track_pass(const struct nat_tuple *fwd, __u8 flags)
{
	struct nat_entry val = {
		.to_addr = fwd->saddr,
		.to_port = fwd->sport,
		.flags = NAT_F_PASS | flags,
	};

	val.created = nat_now();
	val.last_seen = val.created;
	if (bpf_map_update_elem(&masq_nat_egress, fwd, &val, BPF_NOEXIST) == -MASQ_E2BIG)
		count(MASQ_TRACK_FULL);
}

/*
 * A flow of the node itself (source = the SNAT address) leaves untranslated: record its tuple
 * as a reverse entry flagged NAT_F_HOST, so no pod flow is given the same port towards the
 * same destination, and replies to it are recognised and left alone. Returns 1 when a pod flow
 * already holds that port towards that destination (it was claimed before the node's socket
 * used it): the node's flow must then be moved to another port like a pod's, or its replies
 * would go to the pod.
 */
__always_inline_fn int nat_reserve_host_port(const struct pkt *p)
{
	struct nat_tuple rev = {
		.saddr = p->daddr,
		.daddr = p->saddr,
		.sport = p->dport,
		.dport = p->sport,
		.proto = p->proto,
	};
	struct nat_entry val = { .to_addr = p->saddr, .to_port = p->sport, .flags = NAT_F_HOST };
	struct nat_entry *e = bpf_map_lookup_elem(&masq_nat_ingress, &rev);

	if (e) {
		if (!(e->flags & NAT_F_HOST))
			return 1;
		nat_touch(e, p, 0);
		return 0;
	}
	val.created = nat_now();
	val.last_seen = val.created;
	if (bpf_map_update_elem(&masq_nat_ingress, &rev, &val, BPF_NOEXIST) == 0)
		count(MASQ_HOST_PORT_RESERVED);
	return 0;
}

/* What the first fragment of a datagram met, for the fragments after it (no ports there). */
__always_inline_fn void frag_remember(const struct pkt *p, int ingress, __be32 to_addr, __u32 flags)
{
	struct frag_key key = {
		.saddr = p->saddr, .daddr = p->daddr, .ip_id = p->ip_id,
		.proto = p->proto, .ingress = ingress,
	};
	struct frag_value val = { .to_addr = to_addr, .flags = flags };

	bpf_map_update_elem(&masq_frags, &key, &val, BPF_ANY);
}

__always_inline_fn struct frag_value *frag_lookup(const struct pkt *p, int ingress)
{
	struct frag_key key = {
		.saddr = p->saddr, .daddr = p->daddr, .ip_id = p->ip_id,
		.proto = p->proto, .ingress = ingress,
	};

	return bpf_map_lookup_elem(&masq_frags, &key);
}

#endif /* MASQ_LIB_NAT_H */
