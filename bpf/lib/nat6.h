/*
 * masq's SNAT engine for IPv6: the flow table (NAT pairs and passed flows) in maps of its own
 * and the new-flow decision (the port search: nat6_create.h). Every rule is lib/nat.h's
 * (pairs, passed flows, lifetimes, repair, the node's own ports); only the addresses are
 * wider. The clock, the state machine (nat_touch_state) and the counters are shared with IPv4.
 */
#ifndef MASQ_LIB_NAT6_H
#define MASQ_LIB_NAT6_H

#include "addr6.h"
#include "common.h"
#include "maps6.h"
#include "metrics.h"
#include "nat.h"
#include "nat_types.h"
#include "parse6.h"

/* Forward halves: pod tuple → translated source; and the flows that pass (NAT_F_PASS). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct nat_tuple6);
	__type(value, struct nat_entry6);
	__uint(max_entries, MASQ_NAT_MAX);
} masq_nat6_egress SEC(".maps");

/* Reverse halves: reply tuple → the pod's address and port; and the node's own ports. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct nat_tuple6);
	__type(value, struct nat_entry6);
	__uint(max_entries, MASQ_NAT_MAX);
} masq_nat6_ingress SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_key6);
	__type(value, struct frag_value6);
	__uint(max_entries, MASQ_FRAG_MAX);
} masq_frags6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct alloc_failure6);
	__uint(max_entries, 1);
} masq_alloc_failure6 SEC(".maps");

__always_inline_fn void tuple6_from_pkt(struct nat_tuple6 *t, const struct pkt6 *p)
{
	v6_copy(t->saddr, p->saddr);
	v6_copy(t->daddr, p->daddr);
	t->sport = p->sport;
	t->dport = p->dport;
	t->proto = p->proto;
	t->pad[0] = t->pad[1] = t->pad[2] = 0;
}

/* The other direction of the same flow, untranslated. */
__always_inline_fn void tuple6_swap(struct nat_tuple6 *out, const struct nat_tuple6 *t)
{
	v6_copy(out->saddr, t->daddr);
	v6_copy(out->daddr, t->saddr);
	out->sport = t->dport;
	out->dport = t->sport;
	out->proto = t->proto;
	out->pad[0] = out->pad[1] = out->pad[2] = 0;
}

/* The reverse key of a forward half: the reply, addressed to the translated source. */
__always_inline_fn void reverse6_of(struct nat_tuple6 *rev, const struct nat_tuple6 *fwd,
				    const struct nat_entry6 *e)
{
	v6_copy(rev->saddr, fwd->daddr);
	v6_copy(rev->daddr, e->to_addr);
	rev->sport = fwd->dport;
	rev->dport = e->to_port;
	rev->proto = fwd->proto;
	rev->pad[0] = rev->pad[1] = rev->pad[2] = 0;
}

/* The forward key of a reverse half: the pod's own tuple. */
__always_inline_fn void forward6_of(struct nat_tuple6 *fwd, const struct nat_tuple6 *rev,
				    const struct nat_entry6 *e)
{
	v6_copy(fwd->saddr, e->to_addr);
	v6_copy(fwd->daddr, rev->saddr);
	fwd->sport = e->to_port;
	fwd->dport = rev->sport;
	fwd->proto = rev->proto;
	fwd->pad[0] = fwd->pad[1] = fwd->pad[2] = 0;
}

/* An entry whose every byte is set: padding included (it is a map value). */
__always_inline_fn void entry6_set(struct nat_entry6 *e, const __be32 *to_addr, __be16 to_port,
				   __u8 flags, __u64 created, __u64 last_seen)
{
	v6_copy(e->to_addr, to_addr);
	e->to_port = to_port;
	e->flags = flags;
	e->pad[0] = e->pad[1] = e->pad[2] = e->pad[3] = e->pad[4] = 0;
	e->created = created;
	e->last_seen = last_seen;
}

__always_inline_fn int nat6_touch(struct nat_entry6 *e, const struct pkt6 *p, int reply)
{
	return nat_touch_state(&e->flags, &e->last_seen, p->proto, p->tcp_flags, reply);
}

/* Is this reverse half the partner of the forward half keyed `fwd`? */
__always_inline_fn int reverse6_belongs(const struct nat_entry6 *r, const struct nat_tuple6 *fwd)
{
	return !(r->flags & NAT_F_HOST) && v6_equal(r->to_addr, fwd->saddr) &&
	       r->to_port == fwd->sport;
}

/* nat_restore_reverse (lib/nat.h) for IPv6: -1 when the port is another flow's now. */
__always_inline_fn int nat6_restore_reverse(const struct nat_tuple6 *fwd,
					    const struct nat_entry6 *e)
{
	struct nat_tuple6 rev;
	struct nat_entry6 val;
	struct nat_entry6 *r;

	reverse6_of(&rev, fwd, e);
	r = bpf_map_lookup_elem(&masq_nat6_ingress, &rev);
	if (r)
		return reverse6_belongs(r, fwd) ? 0 : -1;
	entry6_set(&val, fwd->saddr, fwd->sport, e->flags, e->created, e->last_seen);
	if (bpf_map_update_elem(&masq_nat6_ingress, &rev, &val, BPF_NOEXIST) == 0)
		count(MASQ_NAT_REVERSE_RESTORED);
	return 0;
}

/* nat_restore_forward (lib/nat.h) for IPv6. */
__always_inline_fn void nat6_restore_forward(const struct nat_tuple6 *rev,
					     const struct nat_entry6 *e)
{
	struct nat_tuple6 fwd;
	struct nat_entry6 val;

	forward6_of(&fwd, rev, e);
	if (bpf_map_lookup_elem(&masq_nat6_egress, &fwd))
		return;
	entry6_set(&val, rev->daddr, rev->dport, e->flags, e->created, e->last_seen);
	if (bpf_map_update_elem(&masq_nat6_egress, &fwd, &val, BPF_NOEXIST) == 0)
		count(MASQ_NAT_FORWARD_RESTORED);
}

/* nat_reopen_reverse (lib/nat.h) for IPv6: -1 when the port is another flow's now. */
__always_inline_fn int nat6_reopen_reverse(const struct nat_tuple6 *fwd,
					   const struct nat_entry6 *e)
{
	struct nat_tuple6 rev;
	struct nat_entry6 *r;

	reverse6_of(&rev, fwd, e);
	r = bpf_map_lookup_elem(&masq_nat6_ingress, &rev);
	if (!r || !reverse6_belongs(r, fwd))
		return nat6_restore_reverse(fwd, e);
	r->flags &= ~(NAT_F_CLOSING | NAT_F_REPLIED);
	r->last_seen = e->last_seen;
	return 0;
}

/* fe80::/10 */
__always_inline_fn int is_link_local6(const __be32 *addr)
{
	return (addr[0] & bpf_htonl(0xffc00000)) == bpf_htonl(0xfe800000);
}

/* ff00::/8 */
__always_inline_fn int is_multicast6(const __be32 *addr)
{
	return (addr[0] & bpf_htonl(0xff000000)) == bpf_htonl(0xff000000);
}

/* decide() (lib/nat.h) for IPv6: the same steps over the IPv6 maps. */
__always_inline_fn enum masq_reason decide6(const struct masq_config *cfg, const __be32 *saddr,
					    const __be32 *daddr)
{
	const __u8 *verdict;

	if ((cfg->flags & MASQ_CFG_SRC_CIDRS6) && lpm6_contains(&masq_nonmasq_src6, saddr))
		return MASQ_KEEP_NON_MASQ_SRC;
	if (cfg->flags & MASQ_CFG_POD_CIDRS) {
		if (!lpm6_contains(&masq_pod_cidrs6, saddr))
			return MASQ_KEEP_NOT_A_POD;
	} else if (is_local_addr6(saddr)) {
		return MASQ_KEEP_NOT_A_POD;
	}
	verdict = lpm6_lookup(&masq_dst_policy6, daddr);
	if (dst_verdict_keeps(verdict))
		return *verdict;
	if (is_local_addr6(daddr))
		return MASQ_KEEP_LOCAL;
	return MASQ_TRANSLATED_EGRESS;
}

/* dst_is_pod() for IPv6: multicast never is; nor is a link-local address (no pod is reached
 * through the uplink by one). */
__always_inline_fn int dst_is_pod6(const struct masq_config *cfg, const __be32 *daddr)
{
	if (is_multicast6(daddr) || is_link_local6(daddr))
		return 0;
	if (cfg->flags & MASQ_CFG_POD_CIDRS)
		return lpm6_contains(&masq_pod_cidrs6, daddr);
	return !is_local_addr6(daddr);
}

/* nat_track_pass (lib/nat.h) for IPv6. */
__always_inline_fn void nat6_track_pass(const struct nat_tuple6 *fwd, __u8 flags)
{
	struct nat_entry6 val;
	__u64 now = nat_now();

	entry6_set(&val, fwd->saddr, fwd->sport, NAT_F_PASS | flags, now, now);
	if (bpf_map_update_elem(&masq_nat6_egress, fwd, &val, BPF_NOEXIST) == -MASQ_E2BIG)
		count(MASQ_TRACK_FULL);
}

/* nat_reserve_host_port (lib/nat.h) for IPv6. */
__always_inline_fn int nat6_reserve_host_port(const struct pkt6 *p)
{
	struct nat_tuple6 rev;
	struct nat_entry6 val;
	struct nat_entry6 *e;
	__u64 now;

	v6_copy(rev.saddr, p->daddr);
	v6_copy(rev.daddr, p->saddr);
	rev.sport = p->dport;
	rev.dport = p->sport;
	rev.proto = p->proto;
	rev.pad[0] = rev.pad[1] = rev.pad[2] = 0;
	e = bpf_map_lookup_elem(&masq_nat6_ingress, &rev);
	if (e) {
		if (!(e->flags & NAT_F_HOST))
			return 1;
		nat6_touch(e, p, 0);
		return 0;
	}
	now = nat_now();
	entry6_set(&val, p->saddr, p->sport, NAT_F_HOST, now, now);
	if (bpf_map_update_elem(&masq_nat6_ingress, &rev, &val, BPF_NOEXIST) == 0)
		count(MASQ_HOST_PORT_RESERVED);
	return 0;
}

__always_inline_fn void frag6_key(struct frag_key6 *key, const struct pkt6 *p, int ingress)
{
	v6_copy(key->saddr, p->saddr);
	v6_copy(key->daddr, p->daddr);
	key->id = p->frag_id;
	key->proto = p->proto;
	key->ingress = ingress;
	key->pad[0] = key->pad[1] = 0;
}

/* frag_remember (lib/nat.h) for IPv6; to_addr NULL: the first fragment was left untouched. */
__always_inline_fn void frag6_remember(const struct pkt6 *p, int ingress, const __be32 *to_addr,
				       __u32 flags)
{
	struct frag_key6 key;
	struct frag_value6 val = { .flags = flags };

	frag6_key(&key, p, ingress);
	if (to_addr)
		v6_copy(val.to_addr, to_addr);
	bpf_map_update_elem(&masq_frags6, &key, &val, BPF_ANY);
}

__always_inline_fn struct frag_value6 *frag6_lookup(const struct pkt6 *p, int ingress)
{
	struct frag_key6 key;

	frag6_key(&key, p, ingress);
	return bpf_map_lookup_elem(&masq_frags6, &key);
}

#endif /* MASQ_LIB_NAT6_H */
