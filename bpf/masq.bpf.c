/* masq's tc programs: SNAT of pod traffic on egress, reverse SNAT of the replies on ingress. */
#include "lib/common.h"
#include "lib/csum.h"
#include "lib/drop_reasons.h"
#include "lib/icmp_error.h"
#include "lib/maps.h"
#include "lib/metrics.h"
#include "lib/nat.h"
#include "lib/parse.h"
#include "lib/steer.h"

char _license[] SEC("license") = "GPL";

/* A fragment after the first follows the first one's fate; unseen firsts fall back to the
 * address-only decision (ports play no part in it). */
__always_inline_fn int egress_later_fragment(struct __sk_buff *skb, const struct pkt *p, int steer)
{
	struct frag_value *seen = frag_lookup(p, 0);
	const struct masq_config *cfg;
	struct steer_route route;
	__u32 ifindex = skb->ifindex;
	__be32 to_addr = 0;

	if (steer && steer_lookup(skb, p->daddr, &route) == 0)
		ifindex = route.ifindex;
	else
		steer = 0;
	if (seen) {
		to_addr = seen->to_addr;
	} else {
		count(MASQ_FRAG_UNTRACKED);
		cfg = config_get();
		if (cfg && decide(cfg, p->saddr, p->daddr) == MASQ_TRANSLATED_EGRESS)
			to_addr = snat_addr_for(ifindex);
	}
	if (!to_addr)
		return MASQ_CONTINUE;
	if (rewrite(skb, p, 0, p->saddr, to_addr, 0, 0) < 0)
		return drop(MASQ_DROP_REWRITE);
	count(MASQ_TRANSLATED_EGRESS);
	return steer ? steer_redirect(skb, &route) : MASQ_CONTINUE;
}

/*
 * The first packet of a flow nobody has translated yet: SPEC section 3 decides. Returns 1 with
 * *out set to translate, 0 to leave the packet alone, -1 to drop it (no port was free: it must
 * not leave with the pod's address). With steer (a secondary interface), a translated flow is
 * given the egress table's route in *route and the address of that route's interface.
 */
__always_inline_fn int egress_new_flow(struct __sk_buff *skb, const struct pkt *p,
				       const struct nat_tuple *fwd, struct nat_entry *out,
				       int steer, struct steer_route *route)
{
	const struct masq_config *cfg = config_get();
	enum masq_reason verdict;
	__u32 ifindex = skb->ifindex;
	__be32 snat;

	if (!cfg)
		return 0;
	verdict = decide(cfg, p->saddr, p->daddr);
	if (verdict == MASQ_KEEP_NOT_A_POD && !steer) {
		snat = snat_addr_for(skb->ifindex);
		if (snat && p->saddr == snat && nat_reserve_host_port(p)) {
			/*
			 * A steered pod packet arrives here translated already and collides with its
			 * own NAT pair: it is not the node's (counted where it was translated).
			 * Checked on collisions only, so the node's own flows pay nothing more.
			 */
			if (steered_here(skb))
				return 0;
			/* The node's own flow collides with a pod's translation: move it. */
			count(MASQ_HOST_PORT_REMAPPED);
			return nat_create(fwd, snat, cfg, 0, out) == 0 ? 1 : -1;
		}
	}
	if (verdict != MASQ_TRANSLATED_EGRESS) {
		count(verdict);
		return 0;
	}
	/*
	 * A TCP connection is translated from its SYN on, or never: one that began kept (a
	 * destination just removed from nonMasqueradeCIDRs) must not change source mid-stream, or
	 * the peer resets it. New config applies to new connections only (SPEC section 3).
	 */
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) != TCP_FLAG_SYN) {
		count(MASQ_PASS_MIDSTREAM);
		return 0;
	}
	if (steer) {
		if (steer_lookup(skb, p->daddr, route) < 0) {
			count(MASQ_PASS_NO_SNAT_ADDR);
			return 0;
		}
		ifindex = route->ifindex;
	}
	snat = snat_addr_for(ifindex);
	if (!snat) {
		count(MASQ_PASS_NO_SNAT_ADDR);
		return 0;
	}
	return nat_create(fwd, snat, cfg, steer ? NAT_F_STEERED : 0, out) == 0 ? 1 : -1;
}

/*
 * SNAT of a packet leaving the node. steer is a compile-time constant: 0 for the egress
 * interfaces (masq_egress), 1 for the secondary interfaces of a VPC-native node (masq_steer),
 * where translated packets are redirected to the egress interface.
 */
__always_inline_fn int egress(struct __sk_buff *skb, const int steer)
{
	struct steer_route route;
	struct nat_entry created;
	struct nat_tuple fwd;
	struct nat_entry *e = NULL;
	struct pkt p;
	__be32 to_addr;
	__be16 to_port;
	int ret;

	ret = parse_ipv4(skb, &p, 0);
	if (ret == PARSE_UNSUPPORTED) {
		count(MASQ_PASS_UNSUPPORTED);
		return MASQ_CONTINUE;
	}
	if (ret < 0)
		return drop(-ret);
	if (p.frag == FRAG_LATER)
		return egress_later_fragment(skb, &p, steer);

	/* Established flows first: they never pay for the CIDR lookups. */
	tuple_from_pkt(&fwd, &p);
	e = bpf_map_lookup_elem(&masq_nat_egress, &fwd);
	if (e) {
		if (nat_touch(e, &p))
			nat_restore_reverse(&fwd, e);
		to_addr = e->to_addr;
		to_port = e->to_port;
		/* A flow translated on the egress interface itself (older entry) is not moved. */
		if (steer && (!(e->flags & NAT_F_STEERED) || steer_lookup(skb, p.daddr, &route) < 0))
			return MASQ_CONTINUE;
	} else {
		ret = egress_new_flow(skb, &p, &fwd, &created, steer, &route);
		if (ret < 0)
			return MASQ_DROP; /* counted by nat_create */
		if (ret == 0) {
			if (p.frag == FRAG_FIRST)
				frag_remember(&p, 0, 0);
			return MASQ_CONTINUE;
		}
		to_addr = created.to_addr;
		to_port = created.to_port;
	}
	if (p.frag == FRAG_FIRST)
		frag_remember(&p, 0, to_addr);

	if (rewrite(skb, &p, 0, p.saddr, to_addr, p.sport, to_port) < 0)
		return drop(MASQ_DROP_REWRITE);
	count(MASQ_TRANSLATED_EGRESS);
	return steer ? steer_redirect(skb, &route) : MASQ_CONTINUE;
}

SEC("classifier")
int masq_egress(struct __sk_buff *skb)
{
	return egress(skb, 0);
}

SEC("classifier")
int masq_steer(struct __sk_buff *skb)
{
	return egress(skb, 1);
}

SEC("classifier")
int masq_ingress(struct __sk_buff *skb)
{
	struct frag_value *seen;
	struct nat_tuple rev;
	struct nat_entry *e = NULL;
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
		return icmp_error_ingress(skb, &p);

	tuple_from_pkt(&rev, &p);
	e = bpf_map_lookup_elem(&masq_nat_ingress, &rev);
	if (!e)
		return MASQ_CONTINUE;
	nat_touch(e, &p);
	if (e->flags & NAT_F_HOST)
		return MASQ_CONTINUE;
	if (e->flags & NAT_F_STEERED)
		mark_steered_reply(skb);
	to_addr = e->to_addr;
	to_port = e->to_port;
	if (p.frag == FRAG_FIRST)
		frag_remember(&p, 1, to_addr);

	if (rewrite(skb, &p, 1, p.daddr, to_addr, p.dport, to_port) < 0)
		return drop(MASQ_DROP_REWRITE);
	count(MASQ_TRANSLATED_INGRESS);
	return MASQ_CONTINUE;
}
