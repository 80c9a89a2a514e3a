/* masq's tc programs: SNAT of pod traffic on egress, reverse SNAT of the replies on ingress. */
#include "lib/common.h"
#include "lib/csum.h"
#include "lib/reasons.h"
#include "lib/icmp_error.h"
#include "lib/maps.h"
#include "lib/metrics.h"
#include "lib/nat.h"
#include "lib/nat_create.h"
#include "lib/parse.h"
#include "lib/pool.h"
#include "lib/steer.h"

char _license[] SEC("license") = "GPL";

/* What the egress program does with a packet that carries a transport header. */
enum egress_action {
	EGRESS_DROP = -1,      /* counted where decided */
	EGRESS_PASS = 0,       /* leaves untranslated */
	EGRESS_TRANSLATE = 1,  /* source rewritten in place */
	EGRESS_STEER = 2,      /* source rewritten, then redirected to the egress interface */
	EGRESS_REMAP = 3,      /* the flow's port is another flow's now: map it anew */
};

/* The translation a packet gets. */
struct egress_to {
	__be32 addr;
	__be16 port;
};

/* IPv6: the same functions on the IPv6 engine, after the definitions above. */
#include "masq6.h"

/*
 * A fragment after the first follows the first one's fate: translated alike, passed, dropped
 * or redirected. Unseen firsts fall back to the address-only decision (ports play no part in it).
 */
__always_inline_fn int egress_later_fragment(struct __sk_buff *skb, const struct pkt *p, int steer)
{
	struct frag_value *seen = frag_lookup(p, 0);
	const struct snat_pool *pool;
	const struct masq_config *cfg;
	struct steer_route route;
	__u32 ifindex = skb->ifindex;
	__be32 to_addr = 0;
	int redirect = 0;
	__u32 size;

	if (seen) {
		if (seen->flags & FRAG_F_DROPPED)
			return drop(MASQ_DROP_FRAG_OF_DROPPED);
		to_addr = seen->to_addr;
		redirect = steer && (seen->flags & FRAG_F_STEERED);
	} else {
		count(MASQ_FRAG_UNTRACKED);
		cfg = config_get();
		if (steer && steer_lookup(skb, p->daddr, &route) == 0) {
			ifindex = route.ifindex;
			redirect = 1;
		}
		pool = snat_pool_for(ifindex);
		size = pool ? snat_pool_size(pool->count) : 0;
		/* The pod's own address: no port to search, so no fall-over either. */
		if (size && cfg && decide(cfg, p->saddr, p->daddr) == MASQ_TRANSLATED_EGRESS) {
			__u32 home = snat_pool_home(p->saddr, size);

			if (home < MASQ_SNAT_POOL_MAX)
				to_addr = pool->addrs[home];
		}
	}
	if (!to_addr)
		return MASQ_CONTINUE;
	if (seen && redirect && steer_lookup(skb, p->daddr, &route) < 0)
		redirect = 0;
	if (rewrite(skb, p, 0, p->saddr, to_addr, 0, 0) < 0)
		return drop(MASQ_DROP_REWRITE);
	count(MASQ_TRANSLATED_EGRESS);
	return redirect ? steer_redirect(skb, &route) : MASQ_CONTINUE;
}

/*
 * A packet of a flow in the table. Passed flows (kept destinations, flows that began outside)
 * stay untranslated whatever the config says now. A translated flow is translated, always: on
 * a secondary interface it is redirected to the egress interface when the egress table has a
 * route, and translated in place otherwise, so the pod's address never leaves.
 */
__always_inline_fn int egress_known_flow(struct __sk_buff *skb, const struct pkt *p,
					 const struct nat_tuple *fwd, struct nat_entry *e, int steer,
					 struct steer_route *route, struct egress_to *to)
{
	/* An inbound flow's entry is keyed by the pod's answers: egress is its reply direction. */
	int touched = nat_touch(e, p, e->flags & NAT_F_INBOUND);

	if (e->flags & NAT_F_PASS) {
		count(MASQ_PASS_TRACKED);
		return EGRESS_PASS;
	}
	if (((touched & TOUCH_REOPENED) && nat_reopen_reverse(fwd, e) < 0) ||
	    ((touched & TOUCH_REFRESHED) && nat_restore_reverse(fwd, e) < 0)) {
		bpf_map_delete_elem(&masq_nat_egress, fwd);
		count(MASQ_NAT_REMAPPED);
		return EGRESS_REMAP;
	}
	to->addr = e->to_addr;
	to->port = e->to_port;
	if (steer && steer_lookup(skb, p->daddr, route) == 0)
		return EGRESS_STEER;
	return EGRESS_TRANSLATE;
}

/*
 * The node's own flow (its source is an address of the SNAT pool): untranslated, with its port
 * reserved against pod translations — whatever nonMasqueradeSrcCIDRs says of the node's
 * address. When a pod's translation already holds that port towards that destination, the
 * node's flow moves to another port of its own address.
 */
__always_inline_fn int egress_node_flow(struct __sk_buff *skb, const struct pkt *p,
					const struct nat_tuple *fwd, const struct masq_config *cfg,
					struct egress_to *to)
{
	struct nat_entry created;
	struct snat_order order;

	if (!nat_reserve_host_port(p)) {
		count(MASQ_KEEP_NOT_A_POD);
		return EGRESS_PASS;
	}
	/*
	 * A steered pod packet arrives here translated already and collides with its own NAT
	 * pair: it is not the node's (counted where it was translated). Checked on collisions
	 * only, so the node's own flows pay nothing more.
	 */
	if (steered_here(skb))
		return EGRESS_PASS;
	count(MASQ_HOST_PORT_REMAPPED);
	snat_order_own(&order);
	if (nat_create(skb, p, fwd, NULL, &order, cfg, 0, &created) < 0)
		return EGRESS_DROP;
	to->addr = created.to_addr;
	to->port = created.to_port;
	return EGRESS_TRANSLATE;
}

/*
 * The first packet of a flow not in the table: docs/decision.md decides. A kept flow is
 * recorded so it stays kept; a masqueraded one gets its NAT pair, or is dropped when no port is
 * free (it must not leave with the pod's address). With steer (a secondary interface), a
 * translated flow takes the egress table's route and the address of that route's interface.
 */
__always_inline_fn int egress_new_flow(struct __sk_buff *skb, const struct pkt *p,
				       const struct nat_tuple *fwd, int steer,
				       struct steer_route *route, struct egress_to *to)
{
	const struct masq_config *cfg = config_get();
	const struct snat_pool *pool = NULL;
	struct snat_order order;
	enum masq_reason verdict;
	struct nat_entry created;
	__u32 size;

	if (!cfg)
		return EGRESS_PASS;
	if (!steer) {
		pool = snat_pool_for(skb->ifindex);
		if (pool && snat_pool_contains(pool, p->saddr))
			return egress_node_flow(skb, p, fwd, cfg, to);
	}
	verdict = decide(cfg, p->saddr, p->daddr);
	if (verdict != MASQ_TRANSLATED_EGRESS) {
		count(verdict);
		if (verdict != MASQ_KEEP_NOT_A_POD)
			nat_track_pass(fwd, 0);
		return EGRESS_PASS;
	}
	if (p->proto == IPPROTO_TCP) {
		/*
		 * A pod's SYN-ACK answers a SYN from outside: no connection masq translates ever
		 * starts that way (its SYN-ACK comes from the remote side). Its ingress record is
		 * missing (the SYN came through another interface, or before masq): make one.
		 */
		if ((p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == (TCP_FLAG_SYN | TCP_FLAG_ACK)) {
			nat_track_pass(fwd, NAT_F_INBOUND | NAT_F_REPLIED);
			count(MASQ_PASS_INBOUND_REPLY);
			return EGRESS_PASS;
		}
		/*
		 * Mid-stream without an entry: a translated flow whose entry is gone (expired
		 * while idle, an upgrade) must not leave with the pod's address; it gets a mapping,
		 * as conntrack picks up a mid-stream connection (nf_conntrack_tcp_loose). Kept
		 * connections have entries of their own and never get here (docs/ebpf.md).
		 */
		if (!(p->tcp_flags & TCP_FLAG_SYN))
			count(MASQ_NAT_MIDSTREAM);
	}
	if (steer) {
		if (steer_lookup(skb, p->daddr, route) < 0) {
			count(MASQ_PASS_NO_SNAT_ADDR);
			return EGRESS_PASS;
		}
		pool = snat_pool_for(route->ifindex);
	}
	size = pool ? snat_pool_size(pool->count) : 0;
	if (!size) {
		count(MASQ_PASS_NO_SNAT_ADDR);
		return EGRESS_PASS;
	}
	snat_order_for_pod(&order, size, snat_pool_home(p->saddr, size));
	if (nat_create(skb, p, fwd, pool, &order, cfg, steer ? NAT_F_STEERED : 0, &created) < 0)
		return EGRESS_DROP;
	to->addr = created.to_addr;
	to->port = created.to_port;
	return steer ? EGRESS_STEER : EGRESS_TRANSLATE;
}

/*
 * SNAT of a packet leaving the node. steer is a compile-time constant: 0 for the egress
 * interfaces (masq_egress), 1 for the secondary interfaces of a VPC-native node (masq_steer),
 * where translated packets are redirected to the egress interface.
 */
__always_inline_fn int egress(struct __sk_buff *skb, const int steer)
{
	struct steer_route route;
	struct egress_to to = {};
	struct nat_tuple fwd;
	struct nat_entry *e;
	struct pkt p;
	int action, ret;

	ret = parse_ipv4(skb, &p, 0);
	if (ret == PARSE_UNSUPPORTED) {
		count(MASQ_PASS_UNSUPPORTED);
		return MASQ_CONTINUE;
	}
	if (ret < 0)
		return drop(-ret);
	if (p.frag == FRAG_LATER)
		return egress_later_fragment(skb, &p, steer);
	if (p.proto == IPPROTO_ICMP && p.icmp_type != ICMP_ECHO)
		return icmp_error(skb, &p, 0);

	/* Flows in the table first: they never pay for the CIDR lookups. */
	tuple_from_pkt(&fwd, &p);
	e = bpf_map_lookup_elem(&masq_nat_egress, &fwd);
	action = e ? egress_known_flow(skb, &p, &fwd, e, steer, &route, &to) : EGRESS_REMAP;
	if (action == EGRESS_REMAP)
		action = egress_new_flow(skb, &p, &fwd, steer, &route, &to);

	/* Every outcome, in one place, so the later fragments cannot diverge from this one. */
	if (p.frag == FRAG_FIRST)
		frag_remember(&p, 0, action > 0 ? to.addr : 0,
			      action == EGRESS_DROP ? FRAG_F_DROPPED :
			      action == EGRESS_STEER ? FRAG_F_STEERED : 0);
	if (action == EGRESS_DROP)
		return MASQ_DROP;
	if (action == EGRESS_PASS)
		return MASQ_CONTINUE;
	if (rewrite(skb, &p, 0, p.saddr, to.addr, p.sport, to.port) < 0)
		return drop(MASQ_DROP_REWRITE);
	count(MASQ_TRANSLATED_EGRESS);
	return action == EGRESS_STEER ? steer_redirect(skb, &route) : MASQ_CONTINUE;
}

/* Each program dispatches on the frame's protocol: IPv6 to masq6.h, the rest to the IPv4 path
 * (which passes anything but IPv4). */
SEC("classifier")
int masq_egress(struct __sk_buff *skb)
{
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return egress6(skb, 0);
	return egress(skb, 0);
}

SEC("classifier")
int masq_steer(struct __sk_buff *skb)
{
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return egress6(skb, 1);
	return egress(skb, 1);
}

/*
 * A packet that is no reply to a translated flow. Towards a pod it is part of a flow the pod
 * did not start (a client reaching the pod), or the reply of a kept flow: either way the pod's
 * packets of that flow must leave untranslated, as conntrack leaves a connection's reply
 * direction alone. The flow is recorded (or refreshed) under the pod's own tuple.
 */
__always_inline_fn int ingress_untracked(const struct pkt *p, const struct nat_tuple *rev)
{
	const struct masq_config *cfg;
	struct nat_tuple pod_side;
	struct nat_entry *e;

	/* ICMP: the pod's echo replies and errors are never translated on egress anyway. */
	if (p->proto == IPPROTO_ICMP)
		return MASQ_CONTINUE;
	cfg = config_get();
	if (!cfg || !dst_is_pod(cfg, p->daddr))
		return MASQ_CONTINUE;
	tuple_swap(&pod_side, rev);
	e = bpf_map_lookup_elem(&masq_nat_egress, &pod_side);
	if (e) {
		/* Only passed flows: a packet sent straight to the pod's address of a translated
		 * flow's tuple changes nothing. */
		if (e->flags & NAT_F_PASS)
			nat_touch(e, p, !(e->flags & NAT_F_INBOUND));
		return MASQ_CONTINUE;
	}
	nat_track_pass(&pod_side, NAT_F_INBOUND);
	count(MASQ_INBOUND_TRACKED);
	return MASQ_CONTINUE;
}

/* Reverse SNAT of an IPv4 packet arriving, and the record of flows that begin outside
 * (masq_ingress dispatches). */
__always_inline_fn int ingress(struct __sk_buff *skb)
{
	struct frag_value *seen;
	struct nat_tuple rev;
	struct nat_entry *e;
	struct pkt p;
	__be32 to_addr;
	__be16 to_port;
	int ret;

	ret = parse_ipv4(skb, &p, 1);
	if (ret == PARSE_UNSUPPORTED)
		return MASQ_CONTINUE;
	if (ret < 0)
		return drop(-ret);
	if (p.frag == FRAG_LATER) {
		seen = frag_lookup(&p, 1);
		if (!seen) {
			count(MASQ_FRAG_UNTRACKED);
			return MASQ_CONTINUE;
		}
		to_addr = seen->to_addr;
		if (!to_addr)
			return MASQ_CONTINUE;
		if (rewrite(skb, &p, 1, p.daddr, to_addr, 0, 0) < 0)
			return drop(MASQ_DROP_REWRITE);
		count(MASQ_TRANSLATED_INGRESS);
		return MASQ_CONTINUE;
	}
	if (p.proto == IPPROTO_ICMP && p.icmp_type != ICMP_ECHOREPLY)
		return icmp_error(skb, &p, 1);

	tuple_from_pkt(&rev, &p);
	e = bpf_map_lookup_elem(&masq_nat_ingress, &rev);
	if (!e)
		return ingress_untracked(&p, &rev);
	if (nat_touch(e, &p, 1) & TOUCH_REFRESHED && !(e->flags & NAT_F_HOST))
		nat_restore_forward(&rev, e);
	if (e->flags & NAT_F_HOST)
		return MASQ_CONTINUE;
	if (e->flags & NAT_F_STEERED)
		mark_steered_reply(skb);
	to_addr = e->to_addr;
	to_port = e->to_port;
	if (p.frag == FRAG_FIRST)
		frag_remember(&p, 1, to_addr, 0);

	if (rewrite(skb, &p, 1, p.daddr, to_addr, p.dport, to_port) < 0)
		return drop(MASQ_DROP_REWRITE);
	count(MASQ_TRANSLATED_INGRESS);
	return MASQ_CONTINUE;
}

SEC("classifier")
int masq_ingress(struct __sk_buff *skb)
{
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return ingress6(skb);
	return ingress(skb);
}
