/* The numbered list of per-packet outcomes masq counts: translations, decisions and drops. */
#ifndef MASQ_LIB_REASONS_H
#define MASQ_LIB_REASONS_H

/*
 * Index into the per-CPU counter array (metrics.h). The numbers are an ABI shared with userspace:
 * keep crates/datapath/src/ebpf/types.rs (`Reason`) in step, never reuse a number, and rename a
 * retired value to MASQ_UNUSEDn instead of deleting it. Drops are the values from
 * MASQ_DROP_FIRST on; everything before counts packets that went on.
 */
enum masq_reason {
	MASQ_TRANSLATED_EGRESS = 0,   /* source rewritten to the SNAT address */
	MASQ_TRANSLATED_INGRESS = 1,  /* reply destination rewritten back to the pod */
	MASQ_NAT_CREATED = 2,         /* new NAT pair created (first packet of a flow) */
	MASQ_PORT_RETRY = 3,          /* one port candidate was taken, another was tried */
	MASQ_KEEP_NON_MASQ_SRC = 4,   /* new flow kept: source in nonMasqueradeSrcCIDRs */
	MASQ_KEEP_NOT_A_POD = 5,      /* new flow kept: source is not a pod */
	MASQ_KEEP_LINK_LOCAL = 6,     /* new flow kept: link-local destination */
	MASQ_KEEP_NON_MASQ_DST = 7,   /* new flow kept: destination in nonMasqueradeCIDRs */
	MASQ_KEEP_LOCAL = 8,          /* new flow kept: destination is a node address */
	MASQ_PASS_UNSUPPORTED = 9,    /* not IP (IPv6 without --enable-ipv6), or a protocol masq
				       * does not translate */
	MASQ_PASS_NO_SNAT_ADDR = 10,  /* would be masqueraded, but no SNAT address is configured */
	MASQ_FRAG_UNTRACKED = 11,     /* non-first fragment without a first fragment seen: untouched */
	MASQ_ICMP_ERROR_TRANSLATED = 12, /* ICMP error about a masqueraded flow sent back to the pod */
	MASQ_HOST_PORT_RESERVED = 13, /* a node-owned flow reserved its port against SNAT reuse */
	MASQ_NAT_REVERSE_RESTORED = 14, /* an evicted reverse half was put back by its flow */
	MASQ_HOST_PORT_REMAPPED = 15, /* a node-owned flow collided with a pod's port and was moved */
	MASQ_UNUSED16 = 16,           /* retired: mid-stream TCP without an entry was passed */
	MASQ_NAT_MIDSTREAM = 17,      /* TCP without an entry and no SYN, towards a masqueraded
				       * destination: given a mapping (it never leaves with the pod's address) */
	MASQ_PASS_TRACKED = 18,       /* packet of a kept or inbound flow, passed by its entry */
	MASQ_INBOUND_TRACKED = 19,    /* a flow from outside towards a pod was recorded */
	MASQ_NAT_FORWARD_RESTORED = 20, /* a missing forward half was put back from its reverse half */
	MASQ_BIG_PACKET = 21,         /* GSO packet over 64 KiB (BIG TCP: IPv4 tot_len 0, IPv6
				       * payload length 0) */
	MASQ_TRACK_FULL = 22,         /* a kept or inbound flow could not be recorded: table full */
	MASQ_PASS_INBOUND_REPLY = 23, /* a pod's SYN-ACK without an entry: the reply of an inbound
				       * connection, recorded and passed */
	MASQ_PASS_EXT_HEADERS = 24,   /* IPv6 extension headers past the walked bound (count or
				       * bytes): passed untouched */
	MASQ_NAT_REMAPPED = 25,       /* a flow found its port taken by another flow (its reverse
				       * half had gone missing meanwhile) and got a new one */
	MASQ_SNAT_FALLOVER = 26,      /* a new flow's SNAT address had no free port towards its
				       * destination: the next address of the pool was searched */

	MASQ_DROP_FIRST = 64,
	MASQ_DROP_BAD_IHL = 64,        /* IPv4 header length under 20 bytes or past the packet */
	MASQ_DROP_TRUNCATED = 65,      /* transport header shorter than the protocol needs (IPv6:
					* or a header before it) */
	MASQ_DROP_PORT_EXHAUSTED = 66, /* no free port towards this destination, on any address the
					* flow may take */
	MASQ_DROP_NAT_INSERT = 67,     /* the NAT table refused an insert */
	MASQ_DROP_REWRITE = 68,        /* a checksum or store helper failed mid-rewrite */
	MASQ_DROP_FRAG_OF_DROPPED = 69, /* a later fragment of a datagram whose first was dropped */

	MASQ_REASON_MAX = 72,          /* size of the counter array */
};

#endif /* MASQ_LIB_REASONS_H */
