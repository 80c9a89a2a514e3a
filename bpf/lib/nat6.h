/*
 * masq's SNAT engine for IPv6: the flow table (NAT pairs and passed flows) in maps of its own,
 * the new-flow decision and the port search. Every rule is lib/nat.h's (pairs, passed flows,
 * lifetimes, repair, the complete port search, node sockets, the node's own ports); only the
 * addresses are wider. The clock, the state machine (nat_touch_state) and the counters are
 * shared with IPv4.
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

/* port_owned_by_node (lib/nat.h) for IPv6. */
__always_inline_fn int port6_owned_by_node(struct __sk_buff *skb, const struct nat_tuple6 *rev)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;

	v6_copy(t.ipv6.saddr, rev->saddr);
	v6_copy(t.ipv6.daddr, rev->daddr);
	t.ipv6.sport = rev->sport;
	t.ipv6.dport = rev->dport;
	if (rev->proto == IPPROTO_TCP)
		sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv6), BPF_F_CURRENT_NETNS, 0);
	else if (rev->proto == IPPROTO_UDP)
		sk = bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv6), BPF_F_CURRENT_NETNS, 0);
	else
		return 0;
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

/* struct port_search (lib/nat.h) for IPv6, without the skb (port_search6_ctx has it). */
struct port_search6 {
	struct nat_tuple6 rev;
	struct nat_entry6 val;
	__u32 count; /* ports in masq_ports */
	__u32 start;
	int result; /* PORT_* */
};

/* port_try (lib/nat.h) for IPv6: one candidate, looked up, checked, claimed. */
__always_inline_fn int port6_try(struct __sk_buff *skb, struct port_search6 *s, __be16 port)
{
	struct nat_entry6 *taken;
	long err;

	s->rev.dport = port;
	taken = bpf_map_lookup_elem(&masq_nat6_ingress, &s->rev);
	if (taken) {
		if (!(taken->flags & (NAT_F_HOST | NAT_F_PASS)) &&
		    v6_equal(taken->to_addr, s->val.to_addr) && taken->to_port == s->val.to_port) {
			s->result = PORT_ADOPTED;
			return 1;
		}
	} else if (!port6_owned_by_node(skb, &s->rev)) {
		err = bpf_map_update_elem(&masq_nat6_ingress, &s->rev, &s->val, BPF_NOEXIST);
		if (err == 0) {
			s->result = PORT_CLAIMED;
			return 1;
		}
		if (err == -MASQ_E2BIG) {
			s->result = PORT_TABLE_FULL;
			return 1;
		}
	}
	count(MASQ_PORT_RETRY);
	return 0;
}

/*
 * The search state lives in a per-CPU scratch slot, not on the stack: the IPv6 structs are
 * large, and the steering program's frame (its IPv4 and IPv6 paths) plus the bpf_loop
 * callback's must stay under the 512 bytes of BPF stack (448 where the verifier rounds frames
 * to 32 bytes). A tc program runs to its end on one CPU without nesting, so the slot is its
 * own while it searches. bpf_loop hands the callback a pointer to it through the stack.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct port_search6);
	__uint(max_entries, 1);
} masq_port_search6 SEC(".maps");

/* What bpf_loop hands the callback: the skb (which only a stack can hold) and the state. */
struct port_search6_ctx {
	struct __sk_buff *skb;
	struct port_search6 *s;
};

static long port6_probe(__u32 i, void *ctx)
{
	struct port_search6_ctx *c = ctx;
	struct port_search6 *s = c->s;
	__u32 index = s->start + i;
	__be16 *port;

	if (index >= s->count)
		index -= s->count;
	port = bpf_map_lookup_elem(&masq_ports, &index);
	if (!port)
		return 1;
	return port6_try(c->skb, s, *port);
}

/* port_search (lib/nat.h) for IPv6: the port table from a random place, to the end. */
__always_inline_fn int port6_search(struct __sk_buff *skb, struct port_search6 *s)
{
	struct port_search6_ctx ctx = { .skb = skb, .s = s };

	if (!s->count || s->count > MASQ_PORTS_MAX)
		return 0;
	s->start = bpf_get_prandom_u32() % s->count;
#ifdef MASQ_PORT_SEARCH_BOUNDED
	for (__u32 i = 0; i < MASQ_PORT_PROBES_BOUNDED && i < s->count; i++)
		if (port6_probe(i, &ctx))
			break;
#else
	bpf_loop(s->count, port6_probe, &ctx, 0);
#endif
	return s->result;
}

__always_inline_fn void alloc6_failure_note(const struct nat_tuple6 *rev, __u32 span)
{
	__u32 zero = 0;
	struct alloc_failure6 *last = bpf_map_lookup_elem(&masq_alloc_failure6, &zero);

	if (!last)
		return;
	v6_copy(last->snat_addr, rev->daddr);
	v6_copy(last->daddr, rev->saddr);
	last->dport = rev->sport;
	last->proto = rev->proto;
	last->span = span;
	last->when = nat_now();
}

/* The translation an IPv6 packet gets (struct egress_to in masq.bpf.c for IPv4). */
struct nat6_to {
	__be32 addr[4];
	__be16 port;
};

/*
 * nat_create (lib/nat.h) for IPv6: the reverse half claims the port, the forward half follows.
 * Unlike IPv4's it hands back only the translation (*to), and builds the forward half in the
 * search state's entry once the claim is made: the IPv6 structs are large, and the steering
 * program's stack (IPv4 and IPv6 paths, plus the bpf_loop callback) must stay under 512 bytes.
 */
__always_inline_fn int nat6_create(struct __sk_buff *skb, const struct pkt6 *p,
				   const struct nat_tuple6 *fwd, const __be32 *snat_addr,
				   const struct masq_config *cfg, __u8 flags, struct nat6_to *to)
{
	struct port_search6 *s;
	struct nat_entry6 *e;
	__u64 now = nat_now();
	__u32 zero = 0;
	int found;

	s = bpf_map_lookup_elem(&masq_port_search6, &zero);
	if (!s) {
		count(MASQ_DROP_NAT_INSERT);
		return -1;
	}
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)))
		flags |= NAT_F_CLOSING;
	s->count = cfg->port_count;
	s->start = 0;
	s->result = 0;
	entry6_set(&s->val, fwd->saddr, fwd->sport, flags, now, now);
	v6_copy(s->rev.saddr, fwd->daddr);
	v6_copy(s->rev.daddr, snat_addr);
	s->rev.sport = fwd->dport;
	s->rev.dport = 0;
	s->rev.proto = fwd->proto;
	s->rev.pad[0] = s->rev.pad[1] = s->rev.pad[2] = 0;

	found = port6_search(skb, s);
	if (found <= 0) {
		if (found == 0)
			alloc6_failure_note(&s->rev, s->count);
		count(found < 0 ? MASQ_DROP_NAT_INSERT : MASQ_DROP_PORT_EXHAUSTED);
		return -1;
	}

	v6_copy(to->addr, snat_addr);
	to->port = s->rev.dport;
	/* The reverse half is written: its value's memory becomes the forward half. */
	entry6_set(&s->val, snat_addr, s->rev.dport, flags, now, now);
	if (bpf_map_update_elem(&masq_nat6_egress, fwd, &s->val, BPF_NOEXIST) == 0) {
		count(MASQ_NAT_CREATED);
		return 0;
	}
	if (found == PORT_CLAIMED)
		bpf_map_delete_elem(&masq_nat6_ingress, &s->rev);
	e = bpf_map_lookup_elem(&masq_nat6_egress, fwd);
	if (!e || (e->flags & NAT_F_PASS)) {
		count(MASQ_DROP_NAT_INSERT);
		return -1;
	}
	v6_copy(to->addr, e->to_addr);
	to->port = e->to_port;
	return 0;
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
