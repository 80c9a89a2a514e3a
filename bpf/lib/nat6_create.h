/* nat_create.h for IPv6: the port search over the IPv6 pool's addresses, then the claim. */
#ifndef MASQ_LIB_NAT6_CREATE_H
#define MASQ_LIB_NAT6_CREATE_H

#include "addr6.h"
#include "common.h"
#include "metrics.h"
#include "nat6.h"
#include "nat_create.h"
#include "nat_types.h"
#include "parse6.h"
#include "pool6.h"

/* port_owned_by_node (lib/nat_create.h) for IPv6. */
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

/* struct port_search (lib/nat_create.h) for IPv6, without the pointers (port_search6_ctx has them:
 * this lives in a map value, which may hold no pointer). */
struct port_search6 {
	struct nat_tuple6 rev;
	struct nat_entry6 val;
	struct pool_cursor cursor;
	__u32 count; /* ports in masq_ports */
	int result;  /* PORT_* */
};

/* port_claim (lib/nat_create.h) for IPv6. */
__always_inline_fn int port6_claim(struct port_search6 *s)
{
	long err = bpf_map_update_elem(&masq_nat6_ingress, &s->rev, &s->val, BPF_NOEXIST);

	if (err == 0)
		s->result = PORT_CLAIMED;
	else if (err == -MASQ_E2BIG)
		s->result = PORT_TABLE_FULL;
	return s->result != 0;
}

/* port_try (lib/nat_create.h) for IPv6: an address's first candidate claimed at once, any
 * other looked up, checked, claimed. */
__always_inline_fn int port6_try(struct __sk_buff *skb, struct port_search6 *s, __be16 port,
				 int first)
{
	struct nat_entry6 *taken;

	s->rev.dport = port;
	if (first && !port6_owned_by_node(skb, &s->rev) && port6_claim(s))
		return 1;
	taken = bpf_map_lookup_elem(&masq_nat6_ingress, &s->rev);
	if (taken) {
		if (!(taken->flags & (NAT_F_HOST | NAT_F_PASS)) &&
		    v6_equal(taken->to_addr, s->val.to_addr) && taken->to_port == s->val.to_port) {
			s->result = PORT_ADOPTED;
			return 1;
		}
	} else if (!port6_owned_by_node(skb, &s->rev) && port6_claim(s)) {
		return 1;
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

/* What bpf_loop hands the callback: the skb and the pool (which only a stack can hold) and the
 * state. */
struct port_search6_ctx {
	struct __sk_buff *skb;
	const struct snat_pool6 *pool;
	struct port_search6 *s;
};

/* port_try_index (lib/nat_create.h) for IPv6. */
__always_inline_fn int port6_try_index(struct __sk_buff *skb, struct port_search6 *s,
				       __u32 candidate, int first)
{
	__be16 *port = bpf_map_lookup_elem(&masq_ports, &candidate);

	if (!port)
		return 1;
	return port6_try(skb, s, *port, first);
}

#ifdef MASQ_PORT_SEARCH_BOUNDED
/* port_search (lib/nat.h, bounded build) for IPv6: the first address of the order only. */
__always_inline_fn int port6_search(struct __sk_buff *skb, const struct snat_pool6 *pool,
				    struct port_search6 *s)
{
	__u32 address = snat_order_index(&s->cursor.order, 0);

	if (!s->count || s->count > MASQ_PORTS_MAX)
		return 0;
	pool_cursor_begin(&s->cursor, s->count);
	if (pool && address < MASQ_SNAT_POOL_MAX)
		v6_copy(s->rev.daddr, pool->addrs[address].a);
	for (__u32 i = 0; i < MASQ_PORT_PROBES_BOUNDED && i < s->count; i++) {
		__u32 index = s->cursor.start + i;

		if (port6_try_index(skb, s, index >= s->count ? index - s->count : index, 0))
			break;
	}
	return s->result;
}
#else
/* port_probe (lib/nat_create.h) for IPv6. */
static long port6_probe(__u32 i, void *ctx)
{
	struct port_search6_ctx *c = ctx;
	struct port_search6 *s = c->s;

	return port6_try_index(c->skb, s, pool_cursor_candidate(&s->cursor, i, s->count), i == 0);
}

/* port_search_address (lib/nat_create.h) for IPv6. */
static long port6_search_address(__u32 k, void *ctx)
{
	struct port_search6_ctx *c = ctx;
	struct port_search6 *s = c->s;
	__u32 address = snat_order_index(&s->cursor.order, k);
	__u64 *at;

	if (address >= MASQ_SNAT_POOL_MAX)
		return 1;
	if (c->pool)
		v6_copy(s->rev.daddr, c->pool->addrs[address].a);
	s->rev.dport = 0;
	s->cursor.rank = k;
	if (s->cursor.lately) {
		at = bpf_map_lookup_elem(&masq_ports_full6, &s->rev);
		if (at && ports_full_fresh(*at, nat_now()))
			return 0;
	}
	bpf_loop(pool_cursor_steps(&s->cursor, s->count), port6_probe, c, 0);
	if (s->result)
		return 1;
	/* Its time: the flow's (no stack here, where the frames of three calls add up). */
	s->rev.dport = 0;
	bpf_map_update_elem(&masq_ports_full6, &s->rev, &s->val.created, BPF_ANY);
	s->cursor.found_full = 1;
	return 0;
}

/* port_search (lib/nat_create.h) for IPv6: every port of each address the flow may take, in order. */
__always_inline_fn int port6_search(struct __sk_buff *skb, const struct snat_pool6 *pool,
				    struct port_search6 *s)
{
	struct port_search6_ctx ctx = { .skb = skb, .pool = pool, .s = s };

	if (!s->count || s->count > MASQ_PORTS_MAX)
		return 0;
	pool_cursor_begin(&s->cursor, s->count);
	s->cursor.lately = ports_full_lately(nat_now());
	bpf_loop(s->cursor.order.tries, port6_search_address, &ctx, 0);
	pool_cursor_end(&s->cursor, nat_now());
	return s->result;
}
#endif

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
 * nat_create (lib/nat_create.h) for IPv6: the reverse half claims the port, the forward half follows.
 * Unlike IPv4's it hands back only the translation (*to), and builds the forward half in the
 * search state's entry once the claim is made: the IPv6 structs are large, and the steering
 * program's stack (IPv4 and IPv6 paths, plus the bpf_loop callback) must stay under 512 bytes.
 */
__always_inline_fn int nat6_create(struct __sk_buff *skb, const struct pkt6 *p,
				   const struct nat_tuple6 *fwd, const struct snat_pool6 *pool,
				   const struct snat_order *order, const struct masq_config *cfg,
				   __u8 flags, struct nat6_to *to)
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
	s->cursor.order = *order;
	s->result = 0;
	entry6_set(&s->val, fwd->saddr, fwd->sport, flags, now, now);
	v6_copy(s->rev.saddr, fwd->daddr);
	v6_copy(s->rev.daddr, fwd->saddr); /* without a pool, the flow's own (node flows) */
	s->rev.sport = fwd->dport;
	s->rev.dport = 0;
	s->rev.proto = fwd->proto;
	s->rev.pad[0] = s->rev.pad[1] = s->rev.pad[2] = 0;

	found = port6_search(skb, pool, s);
	if (found <= 0) {
		if (found == 0)
			alloc6_failure_note(&s->rev, s->count);
		count(found < 0 ? MASQ_DROP_NAT_INSERT : MASQ_DROP_PORT_EXHAUSTED);
		return -1;
	}

	v6_copy(to->addr, s->rev.daddr);
	to->port = s->rev.dport;
	/* The reverse half is written: its value's memory becomes the forward half. */
	entry6_set(&s->val, s->rev.daddr, s->rev.dport, flags, now, now);
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

#endif /* MASQ_LIB_NAT6_CREATE_H */
