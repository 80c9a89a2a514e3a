/*
 * The IPv6 half of masq's tc programs (masq.bpf.c dispatches on skb->protocol): the same steps
 * as the IPv4 functions there, one for one, on the IPv6 engine (lib/nat6.h). Without
 * MASQ_CFG_IPV6 (no --enable-ipv6) every IPv6 packet passes untouched.
 */
#ifndef MASQ_MASQ6_H
#define MASQ_MASQ6_H

#include "lib/addr6.h"
#include "lib/common.h"
#include "lib/csum6.h"
#include "lib/icmp6_error.h"
#include "lib/maps6.h"
#include "lib/metrics.h"
#include "lib/nat6.h"
#include "lib/nat6_create.h"
#include "lib/parse6.h"
#include "lib/steer6.h"

/* The IPv6 config in force, or NULL when IPv6 is not translated. */
__always_inline_fn const struct masq_config *config6_get(void)
{
	const struct masq_config *cfg = config_get();

	return cfg && (cfg->flags & MASQ_CFG_IPV6) ? cfg : NULL;
}

/* egress_later_fragment (masq.bpf.c) for IPv6. */
__always_inline_fn int egress6_later_fragment(struct __sk_buff *skb, const struct pkt6 *p,
					      int steer)
{
	struct frag_value6 *seen = frag6_lookup(p, 0);
	const struct snat_pool6 *pool;
	const struct masq_config *cfg;
	struct steer_route6 route;
	__u32 ifindex = skb->ifindex;
	__be32 to_addr[4] = {};
	int redirect = 0;
	__u32 size;

	if (seen) {
		if (seen->flags & FRAG_F_DROPPED)
			return drop(MASQ_DROP_FRAG_OF_DROPPED);
		v6_copy(to_addr, seen->to_addr);
		redirect = steer && (seen->flags & FRAG_F_STEERED);
	} else {
		count(MASQ_FRAG_UNTRACKED);
		cfg = config6_get();
		if (steer && steer6_lookup(skb, p->daddr, &route) == 0) {
			ifindex = route.ifindex;
			redirect = 1;
		}
		pool = snat_pool6_for(ifindex);
		size = pool ? snat_pool_size(pool->count) : 0;
		if (size && cfg && decide6(cfg, p->saddr, p->daddr) == MASQ_TRANSLATED_EGRESS) {
			__u32 home = snat_pool6_home(p->saddr, size);

			if (home < MASQ_SNAT_POOL_MAX)
				v6_copy(to_addr, pool->addrs[home].a);
		}
	}
	if (v6_is_zero(to_addr))
		return MASQ_CONTINUE;
	if (seen && redirect && steer6_lookup(skb, p->daddr, &route) < 0)
		redirect = 0;
	if (rewrite6(skb, p, 0, p->saddr, to_addr, 0, 0) < 0)
		return drop(MASQ_DROP_REWRITE);
	count(MASQ_TRANSLATED_EGRESS);
	return redirect ? steer6_redirect(skb, &route) : MASQ_CONTINUE;
}

/* egress_known_flow (masq.bpf.c) for IPv6. */
__always_inline_fn int egress6_known_flow(struct __sk_buff *skb, const struct pkt6 *p,
					  const struct nat_tuple6 *fwd, struct nat_entry6 *e,
					  int steer, struct steer_route6 *route,
					  struct nat6_to *to)
{
	int touched = nat6_touch(e, p, e->flags & NAT_F_INBOUND);

	if (e->flags & NAT_F_PASS) {
		count(MASQ_PASS_TRACKED);
		return EGRESS_PASS;
	}
	if (((touched & TOUCH_REOPENED) && nat6_reopen_reverse(fwd, e) < 0) ||
	    ((touched & TOUCH_REFRESHED) && nat6_restore_reverse(fwd, e) < 0)) {
		bpf_map_delete_elem(&masq_nat6_egress, fwd);
		count(MASQ_NAT_REMAPPED);
		return EGRESS_REMAP;
	}
	v6_copy(to->addr, e->to_addr);
	to->port = e->to_port;
	if (steer && steer6_lookup(skb, p->daddr, route) == 0)
		return EGRESS_STEER;
	return EGRESS_TRANSLATE;
}

/* egress_node_flow (masq.bpf.c) for IPv6. */
__always_inline_fn int egress6_node_flow(struct __sk_buff *skb, const struct pkt6 *p,
					 const struct nat_tuple6 *fwd,
					 const struct masq_config *cfg, struct nat6_to *to)
{
	struct snat_order order;

	if (!nat6_reserve_host_port(p)) {
		count(MASQ_KEEP_NOT_A_POD);
		return EGRESS_PASS;
	}
	if (steered_here(skb))
		return EGRESS_PASS;
	count(MASQ_HOST_PORT_REMAPPED);
	snat_order_own(&order);
	if (nat6_create(skb, p, fwd, NULL, &order, cfg, 0, to) < 0)
		return EGRESS_DROP;
	return EGRESS_TRANSLATE;
}

/* egress_new_flow (masq.bpf.c) for IPv6: the decision, a kept record or a NAT pair. */
__always_inline_fn int egress6_new_flow(struct __sk_buff *skb, const struct pkt6 *p,
					const struct nat_tuple6 *fwd, int steer,
					struct steer_route6 *route, struct nat6_to *to)
{
	const struct masq_config *cfg = config6_get();
	const struct snat_pool6 *pool = NULL;
	struct snat_order order;
	enum masq_reason verdict;
	__u32 size;

	if (!cfg)
		return EGRESS_PASS;
	if (!steer) {
		pool = snat_pool6_for(skb->ifindex);
		if (pool && snat_pool6_contains(pool, p->saddr))
			return egress6_node_flow(skb, p, fwd, cfg, to);
	}
	verdict = decide6(cfg, p->saddr, p->daddr);
	if (verdict != MASQ_TRANSLATED_EGRESS) {
		count(verdict);
		if (verdict != MASQ_KEEP_NOT_A_POD)
			nat6_track_pass(fwd, 0);
		return EGRESS_PASS;
	}
	if (p->proto == IPPROTO_TCP) {
		/* A pod's SYN-ACK answers a SYN from outside (see egress_new_flow). */
		if ((p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == (TCP_FLAG_SYN | TCP_FLAG_ACK)) {
			nat6_track_pass(fwd, NAT_F_INBOUND | NAT_F_REPLIED);
			count(MASQ_PASS_INBOUND_REPLY);
			return EGRESS_PASS;
		}
		if (!(p->tcp_flags & TCP_FLAG_SYN))
			count(MASQ_NAT_MIDSTREAM);
	}
	if (steer) {
		if (steer6_lookup(skb, p->daddr, route) < 0) {
			count(MASQ_PASS_NO_SNAT_ADDR);
			return EGRESS_PASS;
		}
		pool = snat_pool6_for(route->ifindex);
	}
	size = pool ? snat_pool_size(pool->count) : 0;
	if (!size) {
		count(MASQ_PASS_NO_SNAT_ADDR);
		return EGRESS_PASS;
	}
	snat_order_for_pod(&order, size, snat_pool6_home(p->saddr, size));
	if (nat6_create(skb, p, fwd, pool, &order, cfg, steer ? NAT_F_STEERED : 0, to) < 0)
		return EGRESS_DROP;
	return steer ? EGRESS_STEER : EGRESS_TRANSLATE;
}

/* egress() (masq.bpf.c) for IPv6; steer is a compile-time constant there too. */
__always_inline_fn int egress6(struct __sk_buff *skb, const int steer)
{
	struct steer_route6 route;
	struct nat6_to to = {};
	struct nat_tuple6 fwd;
	struct nat_entry6 *e;
	struct pkt6 p = {};
	int action, ret;

	if (!config6_get()) {
		count(MASQ_PASS_UNSUPPORTED);
		return MASQ_CONTINUE;
	}
	ret = parse_ipv6(skb, &p, 0);
	if (ret == PARSE_UNSUPPORTED) {
		count(MASQ_PASS_UNSUPPORTED);
		return MASQ_CONTINUE;
	}
	if (ret == PARSE_PASS_COUNTED)
		return MASQ_CONTINUE;
	if (ret < 0)
		return drop(-ret);
	if (p.frag == FRAG_LATER)
		return egress6_later_fragment(skb, &p, steer);
	if (p.proto == IPPROTO_ICMPV6 && p.icmp_type != ICMPV6_ECHO_REQUEST)
		return icmp6_error(skb, &p, 0);

	tuple6_from_pkt(&fwd, &p);
	e = bpf_map_lookup_elem(&masq_nat6_egress, &fwd);
	action = e ? egress6_known_flow(skb, &p, &fwd, e, steer, &route, &to) : EGRESS_REMAP;
	if (action == EGRESS_REMAP)
		action = egress6_new_flow(skb, &p, &fwd, steer, &route, &to);

	if (p.frag == FRAG_FIRST)
		frag6_remember(&p, 0, action > 0 ? to.addr : NULL,
			       action == EGRESS_DROP ? FRAG_F_DROPPED :
			       action == EGRESS_STEER ? FRAG_F_STEERED : 0);
	if (action == EGRESS_DROP)
		return MASQ_DROP;
	if (action == EGRESS_PASS)
		return MASQ_CONTINUE;
	if (rewrite6(skb, &p, 0, p.saddr, to.addr, p.sport, to.port) < 0)
		return drop(MASQ_DROP_REWRITE);
	count(MASQ_TRANSLATED_EGRESS);
	return action == EGRESS_STEER ? steer6_redirect(skb, &route) : MASQ_CONTINUE;
}

/* ingress_untracked (masq.bpf.c) for IPv6: a flow that began outside, towards a pod. */
__always_inline_fn int ingress6_untracked(const struct pkt6 *p, const struct nat_tuple6 *rev,
					  const struct masq_config *cfg)
{
	struct nat_tuple6 pod_side;
	struct nat_entry6 *e;

	if (p->proto == IPPROTO_ICMPV6 || !dst_is_pod6(cfg, p->daddr))
		return MASQ_CONTINUE;
	tuple6_swap(&pod_side, rev);
	e = bpf_map_lookup_elem(&masq_nat6_egress, &pod_side);
	if (e) {
		if (e->flags & NAT_F_PASS)
			nat6_touch(e, p, !(e->flags & NAT_F_INBOUND));
		return MASQ_CONTINUE;
	}
	nat6_track_pass(&pod_side, NAT_F_INBOUND);
	count(MASQ_INBOUND_TRACKED);
	return MASQ_CONTINUE;
}

/* masq_ingress (masq.bpf.c) for IPv6: reverse SNAT of the replies. */
__always_inline_fn int ingress6(struct __sk_buff *skb)
{
	const struct masq_config *cfg = config6_get();
	struct frag_value6 *seen;
	struct nat_tuple6 rev;
	struct nat_entry6 *e;
	struct pkt6 p = {};
	__be32 to_addr[4] = {};
	__be16 to_port;
	int ret;

	if (!cfg)
		return MASQ_CONTINUE;
	ret = parse_ipv6(skb, &p, 1);
	if (ret == PARSE_UNSUPPORTED || ret == PARSE_PASS_COUNTED)
		return MASQ_CONTINUE;
	if (ret < 0)
		return drop(-ret);
	if (p.frag == FRAG_LATER) {
		seen = frag6_lookup(&p, 1);
		if (!seen) {
			count(MASQ_FRAG_UNTRACKED);
			return MASQ_CONTINUE;
		}
		v6_copy(to_addr, seen->to_addr);
		if (v6_is_zero(to_addr))
			return MASQ_CONTINUE;
		if (rewrite6(skb, &p, 1, p.daddr, to_addr, 0, 0) < 0)
			return drop(MASQ_DROP_REWRITE);
		count(MASQ_TRANSLATED_INGRESS);
		return MASQ_CONTINUE;
	}
	if (p.proto == IPPROTO_ICMPV6 && p.icmp_type != ICMPV6_ECHO_REPLY)
		return icmp6_error(skb, &p, 1);

	tuple6_from_pkt(&rev, &p);
	e = bpf_map_lookup_elem(&masq_nat6_ingress, &rev);
	if (!e)
		return ingress6_untracked(&p, &rev, cfg);
	if (nat6_touch(e, &p, 1) & TOUCH_REFRESHED && !(e->flags & NAT_F_HOST))
		nat6_restore_forward(&rev, e);
	if (e->flags & NAT_F_HOST)
		return MASQ_CONTINUE;
	if (e->flags & NAT_F_STEERED)
		mark_steered_reply(skb);
	v6_copy(to_addr, e->to_addr);
	to_port = e->to_port;
	if (p.frag == FRAG_FIRST)
		frag6_remember(&p, 1, to_addr, 0);

	if (rewrite6(skb, &p, 1, p.daddr, to_addr, p.dport, to_port) < 0)
		return drop(MASQ_DROP_REWRITE);
	count(MASQ_TRANSLATED_INGRESS);
	return MASQ_CONTINUE;
}

#endif /* MASQ_MASQ6_H */
