// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * pping's per-packet data path: docs/algorithm.md, stage by stage.
 *
 * The hooks (tc ingress and egress, and XDP as the alternative ingress) call
 * one body. It parses the packet exactly as
 * src/pping/packet.py does (same bounds, same skip reasons, counted per CPU),
 * then runs the pipeline under the specification's stage names:
 *
 *   parse_packet -> lookup_or_create_flow -> update_forward ->
 *   timestamp_packet -> update_reverse -> match_packet -> close_flows
 *
 * Events (RTT, flow opening/closing, map full) go to the ring buffer. The
 * periodic clean-up is the SEC("syscall") program pping_cleanup at the end,
 * run by user space (src/pping/kernel/cleanup.py); flow entries carry a
 * creation sequence number so that its timeouts are reported in the engine's
 * order.
 * A packet is never dropped or changed: every path returns TC_ACT_UNSPEC
 * (TCX_NEXT under tcx) or XDP_PASS, and every failure becomes a counter.
 *
 * docs/kernel.md explains the verifier workarounds marked "verifier:" below.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "pping.h"

#define NS_PER_SEC 1000000000ULL

/* packet.py's bounds. */
#define MAX_VLAN_TAGS 2
#define MAX_MPLS_LABELS 4
#define MAX_IPV6_EXT_HEADERS 3
#define MAX_TCP_OPTION_STEPS 40

/*
 * verifier: a packet offset must have a known upper bound before it is added
 * to a packet pointer. No header the parser reads can start beyond this (the
 * deepest is TCP after three 2 KiB IPv6 extension headers: below 6.3 KiB), so
 * the bound never changes an answer.
 */
#define MAX_PARSE_OFFSET 8191

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define ETH_P_QINQ_9100 0x9100
#define ETH_P_MPLS_UC 0x8847
#define ETH_P_PPP_SES 0x8864
#define PPP_IP 0x0021
#define PPP_IPV6 0x0057

#define IPPROTO_ICMP_ 1
#define IPPROTO_TCP_ 6
#define IPPROTO_ICMPV6_ 58
#define IPV6_EXT_HOPOPTS 0
#define IPV6_EXT_ROUTING 43
#define IPV6_EXT_FRAGMENT 44
#define IPV6_EXT_DSTOPTS 60

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

#define AF_INET_ 2
#define AF_INET6_ 10

/* Not a skip reason: the packet was parsed. */
#define PARSE_OK 0

const volatile struct pping_config config = {
	.rate_limit = 100 * 1000 * 1000,
	.track_tcp = 1,
};

/* The sampling interval in force (see pping.h); user space writes it before load
 * and whenever the pressure controller changes it. */
struct pping_sampling sampling SEC(".data.sampling") = {
	.rate_limit = 100 * 1000 * 1000,
};

/* Creation order of flow entries (clean-up reports timeouts in this order). */
__u64 flow_seq = 0;

/*
 * Never used: a pointer to every type of the contract that no map or global
 * mentions, so that they reach the object's BTF (tests/test_abi.py checks
 * abi.py against it).
 */
struct pping_abi {
	struct rtt_event rtt_event;
	struct flow_event flow_event;
	struct map_full_event map_full_event;
	struct cleanup_args cleanup_args;
	struct expired_flow expired_flow;
	enum pping_cleanup_walk cleanup_walk;
	enum pping_event_type event_type;
	enum pping_counter counter;
	enum pping_conn_state conn_state;
	enum pping_flow_event_type flow_event_type;
	enum pping_event_reason event_reason;
	enum pping_event_source event_source;
	enum pping_table table;
	enum agg_class agg_class;
};
const struct pping_abi *pping_abi_types __attribute__((unused));

/* The value a new flow entry starts from. */
static const struct dual_flow empty_flow;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PPING_DEFAULT_MAX_FLOWS);
	__type(key, struct flow_key);
	__type(value, struct dual_flow);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PPING_DEFAULT_MAX_TIMESTAMPS);
	__type(key, struct timestamp_key);
	__type(value, __u64);
} timestamps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, PPING_DEFAULT_RINGBUF_BYTES);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PPING_NR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PPING_NR_TABLES);
	__type(key, __u32);
	__type(value, struct warning_state);
} warnings SEC(".maps");

/*
 * Output of the clean-up program pping_cleanup (see pping.h).
 *
 * verifier: an array map, not a global array. Indexing a global with the count
 * kept in the walk's state (on the caller's stack, reached from the callback)
 * makes this kernel's verifier fail with EFAULT; a map lookup by key needs no
 * bounds on the index.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PPING_CLEANUP_BATCH);
	__type(key, __u32);
	__type(value, struct expired_flow);
} expired SEC(".maps");

/* -a: the prefix tables (see pping.h), and which copy packets update. */
#define AGG_MAP(name)						\
	struct {						\
		__uint(type, BPF_MAP_TYPE_PERCPU_HASH);		\
		__uint(max_entries, PPING_DEFAULT_MAX_PREFIXES);	\
		__type(key, struct agg_key);			\
		__type(value, struct agg_stats);		\
	} name SEC(".maps")

AGG_MAP(agg_v4_0);
AGG_MAP(agg_v4_1);
AGG_MAP(agg_v6_0);
AGG_MAP(agg_v6_1);

__u32 agg_active SEC(".data.aggregate") = 0;

/* The value a new prefix entry starts from. */
static const struct agg_stats empty_agg_stats;

/* What the pipeline needs from one packet: packet.PacketInfo. */
struct packet_info {
	struct flow_key key;	/* the packet's own direction */
	__u32 pid;
	__u32 reply_pid;
	__u32 payload;
	__u8 pid_valid;
	__u8 reply_pid_valid;
	__u8 event_type;	/* enum pping_flow_event_type */
	__u8 event_reason;	/* enum pping_event_reason */
	__u8 wait_first_edge;
	__u8 tcp_flags;
	__u8 is_ipv6;
	__u8 tos;		/* IPv4 TOS (for the FIB lookup of the local filter) */
	__u32 ip_len;		/* IPv4 total length, IPv6 payload length + 40 */
	__u32 flowinfo;		/* IPv6 traffic class and flow label, network order */
	__u32 ingress_ifindex;	/* where the packet came in (the local filter's FIB lookup) */
	__u8 ip_valid;		/* -a: the IP header is valid (addresses set) */
	__u8 ip_proto;		/* -a: protocol of the fixed IP header */
	__u8 reserved[2];
};

/* The captured bytes of the packet. */
struct cursor {
	void *data;
	void *data_end;
};

/*
 * The fields of a flow entry that ingress, egress and several CPUs can update at
 * once are changed with atomic adds. `outstanding` never goes below 0: an
 * underflowed count would keep the entry from ever being deleted. A decrement is
 * tried only on a non-zero count, and undone if another CPU took the count to 0
 * in between (so the counter may read 2^32 - 1 for a few instructions, never
 * longer).
 */
static __always_inline void atomic_add_u64(__u64 *value, __u64 delta)
{
	__sync_fetch_and_add(value, delta);
}

static __always_inline void outstanding_inc(__u32 *outstanding)
{
	__sync_fetch_and_add(outstanding, 1);
}

/* Subtracts up to `n` from *outstanding, never below 0. */
static __always_inline void outstanding_sub(__u32 *outstanding, __u32 n)
{
	__u32 old;

	if (n == 0 || *(volatile __u32 *)outstanding == 0)
		return;
	old = __sync_fetch_and_add(outstanding, -n);
	if (old < n)
		__sync_fetch_and_add(outstanding, n - old);
}

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &index);

	if (value)
		*value += 1;
}

/*
 * The `len` (a constant) bytes at `off`, or NULL when not all of them were
 * captured. NULL at a place where packet.py tests `end - off < len` is its
 * "truncated".
 */
static __always_inline void *bytes_at(const struct cursor *c, __u32 off, __u32 len)
{
	void *p;

	if (off > MAX_PARSE_OFFSET)
		return NULL;
	p = c->data + off;
	if (p + len > c->data_end)
		return NULL;
	return p;
}

/*
 * Big-endian fields as one load and a byte swap (assembled from single bytes,
 * each field took up to ten instructions). In the packet they may be unaligned,
 * which the verifier allows on CPUs with efficient unaligned access (x86-64,
 * arm64); stack and map memory is only read at aligned offsets (addresses in
 * keys), as the verifier demands there.
 */
static __always_inline __u16 load_be16(const __u8 *p)
{
	return bpf_ntohs(*(const __u16 *)p);
}

static __always_inline __u32 load_be32(const __u8 *p)
{
	return bpf_ntohl(*(const __u32 *)p);
}

static __always_inline int is_vlan_tpid(__u16 ethertype)
{
	return ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD ||
	       ethertype == ETH_P_QINQ_9100;
}

static __always_inline int is_ipv6_extension(__u8 nxt)
{
	return nxt == IPV6_EXT_HOPOPTS || nxt == IPV6_EXT_ROUTING ||
	       nxt == IPV6_EXT_FRAGMENT || nxt == IPV6_EXT_DSTOPTS;
}

/* -- parse --------------------------------------------------------------- */

/* Where the IP header starts and which parser reads it. */
enum l3_kind {
	L3_IPV4 = 4,
	L3_IPV6 = 6,
	L3_BY_VERSION = 1,	/* after MPLS: the version nibble decides */
};

/*
 * The PPP protocol field at `*off` (one byte if compressed, RFC 1661): sets
 * *off past it and *kind; returns PARSE_OK or a skip reason.
 */
static __always_inline int parse_ppp_protocol(const struct cursor *c, __u32 *off, int *kind)
{
	__u8 *p = bytes_at(c, *off, 1);
	__u16 protocol;

	if (!p)
		return COUNTER_SKIP_TRUNCATED;
	protocol = p[0];
	if (protocol & 1) {
		*off += 1;
	} else {
		p = bytes_at(c, *off, 2);
		if (!p)
			return COUNTER_SKIP_TRUNCATED;
		protocol = load_be16(p);
		*off += 2;
	}
	if (protocol == PPP_IP)
		*kind = L3_IPV4;
	else if (protocol == PPP_IPV6)
		*kind = L3_IPV6;
	else
		return COUNTER_SKIP_NOT_IP;
	return PARSE_OK;
}

/*
 * Ethernet, its VLAN tags, MPLS labels or PPPoE session header (packet.py's
 * _ethernet and _by_ethertype): sets *off to the IP header and *kind; returns
 * PARSE_OK or a skip reason.
 */
static __always_inline int parse_link(const struct cursor *c, __u32 *off, int *kind)
{
	__u8 *p = bytes_at(c, 0, ETH_HLEN);
	__u16 ethertype;
	__u32 pos = ETH_HLEN;
	int i;

	if (!p)
		return COUNTER_SKIP_TRUNCATED;
	ethertype = load_be16(p + 12);

#pragma unroll
	for (i = 0; i < MAX_VLAN_TAGS; i++) {
		if (!is_vlan_tpid(ethertype))
			break;
		p = bytes_at(c, pos, 4);
		if (!p)
			return COUNTER_SKIP_TRUNCATED;
		ethertype = load_be16(p + 2);
		pos += 4;
	}
	if (is_vlan_tpid(ethertype))
		return COUNTER_SKIP_VLAN;

	if (ethertype == ETH_P_IP) {
		*kind = L3_IPV4;
	} else if (ethertype == ETH_P_IPV6) {
		*kind = L3_IPV6;
	} else if (ethertype == ETH_P_MPLS_UC) {
		int bottom = 0;

#pragma unroll
		for (i = 0; i < MAX_MPLS_LABELS; i++) {
			p = bytes_at(c, pos, 4);
			if (!p)
				return COUNTER_SKIP_TRUNCATED;
			bottom = p[2] & 1;
			pos += 4;
			if (bottom)
				break;
		}
		if (!bottom)
			return COUNTER_SKIP_MPLS;
		*kind = L3_BY_VERSION;
	} else if (ethertype == ETH_P_PPP_SES) {
		int err;

		p = bytes_at(c, pos, 6);
		if (!p)
			return COUNTER_SKIP_TRUNCATED;
		if (p[0] != 0x11 || p[1] != 0)
			return COUNTER_SKIP_NOT_IP;
		pos += 6;
		err = parse_ppp_protocol(c, &pos, kind);
		if (err)
			return err;
	} else {
		return COUNTER_SKIP_NOT_IP;
	}
	*off = pos;
	return PARSE_OK;
}

/* Where the transport header starts, and what the IP header says about it. */
struct l4_location {
	__u32 off;
	__s32 len;		/* transport length from the IP length fields */
	__u8 proto;
};

static __always_inline void set_mapped_ipv4(__u8 *dst, const __u8 *src)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	dst[12] = src[0];
	dst[13] = src[1];
	dst[14] = src[2];
	dst[15] = src[3];
}

/* packet.py's _ipv4, up to the transport header. */
static __always_inline int parse_ipv4(const struct cursor *c, __u32 off,
				      struct packet_info *info, struct l4_location *l4)
{
	__u8 *h = bytes_at(c, off, 20);
	__u32 ihl, total;

	if (!h)
		return COUNTER_SKIP_TRUNCATED;
	ihl = (h[0] & 0x0f) << 2;
	total = load_be16(h + 2);
	if ((h[0] >> 4) != 4 || ihl < 20 || total < ihl)
		return COUNTER_SKIP_BAD_IPV4;
	/* The addresses first: -a counts every packet with a valid IP header. */
	set_mapped_ipv4(info->key.saddr, h + 12);
	set_mapped_ipv4(info->key.daddr, h + 16);
	info->ip_valid = 1;
	info->ip_proto = h[9];
	if (load_be16(h + 6) & 0x1fff)
		return COUNTER_SKIP_FRAGMENT;
	if (!bytes_at(c, off + ihl, 0))
		return COUNTER_SKIP_TRUNCATED;
	if (h[9] != IPPROTO_TCP_ && h[9] != IPPROTO_ICMP_)
		return COUNTER_SKIP_PROTOCOL;
	info->is_ipv6 = 0;
	info->tos = h[1];
	info->ip_len = total;
	l4->off = off + ihl;
	l4->len = total - ihl;
	l4->proto = h[9];
	return PARSE_OK;
}

/* packet.py's _ipv6, up to the transport header (at most three extension headers). */
static __always_inline int parse_ipv6(const struct cursor *c, __u32 off,
				      struct packet_info *info, struct l4_location *l4)
{
	__u8 *h = bytes_at(c, off, 40);
	__u32 plen, pos;
	__u8 nxt;
	int i;

	if (!h)
		return COUNTER_SKIP_TRUNCATED;
	plen = load_be16(h + 4);
	if ((h[0] >> 4) != 6 || plen == 0)
		return COUNTER_SKIP_BAD_IPV6;
	nxt = h[6];
	__builtin_memcpy(info->key.saddr, h + 8, 16);
	__builtin_memcpy(info->key.daddr, h + 24, 16);
	info->ip_valid = 1;
	info->ip_proto = nxt;
	pos = off + 40;

#pragma unroll
	for (i = 0; i < MAX_IPV6_EXT_HEADERS; i++) {
		__u8 *e;

		if (!is_ipv6_extension(nxt))
			break;
		e = bytes_at(c, pos, 8);
		if (!e)
			return COUNTER_SKIP_TRUNCATED;
		if (nxt == IPV6_EXT_FRAGMENT) {
			if (load_be16(e + 2) & 0xfff8)
				return COUNTER_SKIP_FRAGMENT;
			pos += 8;
		} else {
			pos += ((__u32)e[1] + 1) << 3;
		}
		nxt = e[0];
	}
	if (is_ipv6_extension(nxt))
		return COUNTER_SKIP_IPV6_EXT;
	if (nxt != IPPROTO_TCP_ && nxt != IPPROTO_ICMPV6_)
		return COUNTER_SKIP_PROTOCOL;
	info->is_ipv6 = 1;
	info->ip_len = plen + 40;
	/* The first word of the header without the version: struct bpf_fib_lookup's
	 * flowinfo (network order), as ePPing fills it. */
	__builtin_memcpy(&info->flowinfo, h, 4);
	info->flowinfo &= bpf_htonl(0x0fffffff);
	l4->off = pos;
	l4->len = (__s32)plen - (__s32)(pos - off - 40);
	l4->proto = nxt;
	return PARSE_OK;
}

/*
 * verifier: the option walk is an open-coded iterator loop (kernel >= 6.4).
 * Unrolled, its 40 steps give the verifier a distinct state for every range
 * of option positions at every step (more than its million-instruction
 * budget); as a loop, imprecise scalars are widened and the body converges
 * after a few passes.
 */
struct bpf_iter_num {
	__u64 __opaque[1];
} __attribute__((aligned(8)));

extern int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end) __ksym;
extern int *bpf_iter_num_next(struct bpf_iter_num *it) __ksym;
extern void bpf_iter_num_destroy(struct bpf_iter_num *it) __ksym;

/*
 * The options of nearly every timestamped segment (Linux, the BSDs): NOP, NOP,
 * then the timestamp option, at the options' start (`base`, `opt_len` bytes).
 * For them the walk below finds the option in its third step; this finds it
 * in one bounds check, without the walk's calls: the iterator is three to five
 * kfunc calls per packet, and with the kernel's return thunks (SRSO
 * mitigation) those calls cost as much as the rest of the parse. packet.py's
 * _tcp takes the same shortcut. Returns 1 with *tsval and *tsecr set, or 0
 * (the walk decides).
 */
static __always_inline int find_usual_timestamp(const struct cursor *c, __u32 base,
						__u32 opt_len, __u32 *tsval, __u32 *tsecr)
{
	__u8 *p;

	if (opt_len < 12)
		return 0;
	p = bytes_at(c, base, 12);
	if (!p || p[0] != 1 || p[1] != 1 || p[2] != 8 || p[3] != 10)
		return 0;
	*tsval = load_be32(p + 4);
	*tsecr = load_be32(p + 8);
	return 1;
}

/*
 * packet.py's _find_timestamp: walk the options of the TCP header at `off`
 * (header length `hlen`) for the timestamp option. The options end at the
 * data offset or, if the capture ends first, at the capture ("truncated").
 *
 * With o the position within the options and opt_len = hlen - 20, the
 * specification's "i >= stop" (stop = min(off + hlen, end)) is exactly
 * "o >= opt_len, or the byte at o was not captured"; likewise for the other
 * tests. So each test is one comparison with opt_len and one bytes_at().
 */
static __always_inline int find_timestamp(const struct cursor *c, __u32 off, __u32 hlen,
					  __u32 *tsval, __u32 *tsecr)
{
	__u32 opt_len = hlen - 20;
	__u32 base = off + 20;
	int short_reason = COUNTER_SKIP_NO_TIMESTAMP;
	int result = COUNTER_SKIP_NO_TIMESTAMP;	/* after MAX_TCP_OPTION_STEPS */
	struct bpf_iter_num it;
	__u32 o = 0;

	if (find_usual_timestamp(c, base, opt_len, tsval, tsecr))
		return PARSE_OK;
	if (!bytes_at(c, off, hlen))
		short_reason = COUNTER_SKIP_TRUNCATED;

	bpf_iter_num_new(&it, 0, MAX_TCP_OPTION_STEPS);
	while (bpf_iter_num_next(&it)) {
		__u8 *p;
		__u8 kind, length;

		if (o >= opt_len) {
			result = short_reason;
			break;
		}
		p = bytes_at(c, base + o, 1);
		if (!p) {
			result = short_reason;
			break;
		}
		kind = p[0];
		if (kind == 1) {
			o += 1;
			continue;
		}
		if (kind == 0) {
			result = COUNTER_SKIP_NO_TIMESTAMP;
			break;
		}
		if (o + 1 >= opt_len) {
			result = short_reason;
			break;
		}
		p = bytes_at(c, base + o, 2);
		if (!p) {
			result = short_reason;
			break;
		}
		length = p[1];
		if (kind == 8 && length == 10) {
			if (o + 10 > opt_len) {
				result = short_reason;
				break;
			}
			p = bytes_at(c, base + o, 10);
			if (!p) {
				result = short_reason;
				break;
			}
			*tsval = load_be32(p + 2);
			*tsecr = load_be32(p + 6);
			result = PARSE_OK;
			break;
		}
		if (length < 2) {
			result = COUNTER_SKIP_NO_TIMESTAMP;
			break;
		}
		o += length;
	}
	bpf_iter_num_destroy(&it);
	return result;
}

/* packet.py's _tcp and _tcp_info. */
static __always_inline int parse_tcp(const struct cursor *c, const struct l4_location *l4,
				     struct packet_info *info)
{
	__u8 *h = bytes_at(c, l4->off, 20);
	__u32 hlen, tsval = 0, tsecr = 0;
	__s32 payload;
	__u8 flags;
	int err;

	if (!h)
		return COUNTER_SKIP_TRUNCATED;
	hlen = (h[12] >> 4) << 2;
	if (hlen < 20)
		return COUNTER_SKIP_BAD_TCP;
	info->key.sport = load_be16(h);
	info->key.dport = load_be16(h + 2);
	flags = h[13];
	err = find_timestamp(c, l4->off, hlen, &tsval, &tsecr);
	if (err)
		return err;

	payload = l4->len - (__s32)hlen;
	if (payload < 0)
		payload = 0;
	info->payload = payload;
	info->pid = tsval;
	info->pid_valid = payload > 0 || (flags & (TCP_SYN | TCP_FIN));
	info->reply_pid = tsecr;
	info->reply_pid_valid = !!(flags & TCP_ACK);
	info->tcp_flags = flags;
	info->wait_first_edge = !(flags & TCP_SYN);
	if (flags & TCP_RST) {
		info->event_type = FLOW_EVENT_CLOSING_BOTH;
		info->event_reason = EVENT_REASON_RST;
	} else if (flags & TCP_FIN) {
		info->event_type = FLOW_EVENT_CLOSING;
		info->event_reason = EVENT_REASON_FIN;
	} else if (flags & TCP_SYN) {
		info->event_type = FLOW_EVENT_OPENING;
		info->event_reason = (flags & TCP_ACK) ? EVENT_REASON_SYN_ACK : EVENT_REASON_SYN;
	} else {
		info->event_type = FLOW_EVENT_NONE;
		info->event_reason = EVENT_REASON_NONE;
	}
	return PARSE_OK;
}

/* packet.py's _icmp: echo request and reply, code 0. */
static __always_inline int parse_icmp(const struct cursor *c, const struct l4_location *l4,
				      struct packet_info *info)
{
	__u8 *h = bytes_at(c, l4->off, 8);
	__u8 request = l4->proto == IPPROTO_ICMP_ ? 8 : 128;
	__u8 reply = l4->proto == IPPROTO_ICMP_ ? 0 : 129;
	__u16 ident, seq;
	__s32 payload;
	int is_request;

	if (!h)
		return COUNTER_SKIP_TRUNCATED;
	if (h[0] == request)
		is_request = 1;
	else if (h[0] == reply)
		is_request = 0;
	else
		return COUNTER_SKIP_NOT_ECHO;
	if (h[1] != 0)
		return COUNTER_SKIP_BAD_ICMP;
	ident = load_be16(h + 4);
	seq = load_be16(h + 6);
	payload = l4->len - 8;
	if (payload < 0)
		payload = 0;
	info->key.sport = ident;
	info->key.dport = ident;
	info->payload = payload;
	info->pid = is_request ? seq : 0;
	info->pid_valid = is_request;
	info->reply_pid = is_request ? 0 : seq;
	info->reply_pid_valid = !is_request;
	info->event_type = FLOW_EVENT_NONE;
	info->event_reason = EVENT_REASON_NONE;
	info->wait_first_edge = 0;
	info->tcp_flags = 0;
	return PARSE_OK;
}

/*
 * The transport header at `off` (TCP or ICMP/ICMPv6 by `proto`, `len` bytes
 * long according to IP): PARSE_OK with *info filled in, or a skip reason.
 */
static __always_inline int parse_transport_at(const struct cursor *c, struct packet_info *info,
					      __u32 off, __s32 len, __u32 proto)
{
	struct l4_location l4 = {
		.off = off,
		.len = len,
		.proto = proto,
	};

	if (!info)
		return COUNTER_SKIP_TRUNCATED;	/* never: the caller passes its own */
	if (proto == IPPROTO_TCP_)
		return parse_tcp(c, &l4, info);
	return parse_icmp(c, &l4, info);
}

/*
 * verifier: a global function is verified once, for any arguments. Inlined,
 * the option walk would be verified again for every way of reaching it (each
 * link layer and IP variant gives the transport offset another range). A
 * global function cannot take packet pointers, only the context, whose type is
 * the hook's: hence one per kind of hook.
 */
__noinline int parse_transport(struct __sk_buff *skb, struct packet_info *info, __u32 off,
			       __s32 len, __u32 proto)
{
	struct cursor cur = {
		.data = (void *)(long)skb->data,
		.data_end = (void *)(long)skb->data_end,
	};

	return parse_transport_at(&cur, info, off, len, proto);
}

__noinline int parse_transport_xdp(struct xdp_md *xdp, struct packet_info *info, __u32 off,
				   __s32 len, __u32 proto)
{
	struct cursor cur = {
		.data = (void *)(long)xdp->data,
		.data_end = (void *)(long)xdp->data_end,
	};

	return parse_transport_at(&cur, info, off, len, proto);
}

/*
 * parse: the packet's PacketInfo in *info, or the skip reason to count.
 * Packets the engine filters out (-T/-C, SYNs without -s) are refused here
 * too, with the engine's reasons. `ctx` is the hook's context (an XDP one if
 * `is_xdp`), [data, data_end) its packet.
 */
static __always_inline int parse_packet(void *ctx, void *data, void *data_end,
					struct packet_info *info, int is_xdp)
{
	struct cursor cur = {
		.data = data,
		.data_end = data_end,
	};
	const struct cursor *c = &cur;
	struct l4_location l4 = {};
	__u32 off = 0;
	int kind = 0;
	int err;

	err = parse_link(c, &off, &kind);
	if (err)
		return err;
	if (kind == L3_BY_VERSION) {
		__u8 *p = bytes_at(c, off, 1);

		if (!p)
			return COUNTER_SKIP_TRUNCATED;
		if ((p[0] >> 4) == 4)
			kind = L3_IPV4;
		else if ((p[0] >> 4) == 6)
			kind = L3_IPV6;
		else
			return COUNTER_SKIP_NOT_IP;
	}
	if (kind == L3_IPV4)
		err = parse_ipv4(c, off, info, &l4);
	else
		err = parse_ipv6(c, off, info, &l4);
	if (err)
		return err;

	info->key.proto = l4.proto;
	if (is_xdp)
		err = parse_transport_xdp(ctx, info, l4.off, l4.len, l4.proto);
	else
		err = parse_transport(ctx, info, l4.off, l4.len, l4.proto);
	if (err)
		return err;

	/* engine._tracked */
	if (l4.proto == IPPROTO_TCP_) {
		if (!config.track_tcp)
			return COUNTER_SKIP_UNTRACKED;
		if ((info->tcp_flags & TCP_SYN) && !config.include_syn)
			return COUNTER_SKIP_SYN;
	} else if (!config.track_icmp) {
		return COUNTER_SKIP_UNTRACKED;
	}
	return PARSE_OK;
}

/* -- helpers of the pipeline ---------------------------------------------- */

/* Byte-wise comparison of two 16-byte addresses: <0, 0 or >0. */
static __always_inline int compare_addresses(const __u8 *a, const __u8 *b)
{
	int i;

#pragma unroll
	for (i = 0; i < 16; i += 4) {
		__u32 x = load_be32(a + i);
		__u32 y = load_be32(b + i);

		if (x != y)
			return x < y ? -1 : 1;
	}
	return 0;
}

/* Whether a direction is the first of its flow entry: (saddr, sport) <= (daddr, dport). */
static __always_inline int is_first_direction(const struct flow_key *k)
{
	int order = compare_addresses(k->saddr, k->daddr);

	return order < 0 || (order == 0 && k->sport <= k->dport);
}

static __always_inline void reverse_key(struct flow_key *dst, const struct flow_key *src)
{
	dst->link = src->link;
	dst->proto = src->proto;
	dst->reserved[0] = 0;
	dst->reserved[1] = 0;
	dst->reserved[2] = 0;
	__builtin_memcpy(dst->saddr, src->daddr, 16);
	__builtin_memcpy(dst->daddr, src->saddr, 16);
	dst->sport = src->dport;
	dst->dport = src->sport;
}

static __always_inline int is_active(const struct flow_state *s)
{
	return s->conn_state == CONN_WAITOPEN || s->conn_state == CONN_OPEN;
}

static __always_inline void send_flow_event(const struct flow_key *flow, __u64 now, __u8 type,
					    __u8 reason, __u8 source)
{
	struct flow_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		count(COUNTER_RINGBUF_FULL);
		return;
	}
	e->event_type = EVENT_TYPE_FLOW;
	e->timestamp = now;
	e->flow = *flow;
	e->flow_event_type = type;
	e->reason = reason;
	e->source = source;
	e->reserved = 0;
	bpf_ringbuf_submit(e, 0);
}

/*
 * The number of entries of a hash map (kernel >= 6.6). libbpf checks the
 * prototype against the kernel's: `struct bpf_map` must be a struct there, not
 * a forward declaration; its members do not matter.
 */
struct bpf_map {
	int unused;
};
extern __s64 bpf_map_sum_elem_count(const struct bpf_map *map) __ksym;

static __always_inline __u32 entries_of(void *map)
{
	__s64 count = bpf_map_sum_elem_count(map);

	return count > 0 ? count : 0;
}

/*
 * Growing tables (docs/sampling.md): the map is created at its cap, and a table
 * holding the capacity in force refuses a new entry as a full map would (-E2BIG).
 * Without config.grow_tables the verifier drops the test: no cost. Two CPUs may
 * pass the test together at capacity - 1; the map's own size (the cap) still holds.
 */
static __always_inline long insert_entry(void *map, __u32 capacity, const void *key,
					 const void *value)
{
	if (config.grow_tables && entries_of(map) >= capacity)
		return -7;	/* E2BIG */
	return bpf_map_update_elem(map, key, value, BPF_NOEXIST);
}

/*
 * A table refused an entry: one map-full event per table and second (the
 * engine's _warn_full). Racing CPUs may both emit one; that is harmless.
 */
static __always_inline void warn_full(__u32 table, const struct packet_info *info, __u64 now)
{
	struct warning_state *w = bpf_map_lookup_elem(&warnings, &table);
	struct map_full_event *e;

	if (!w)
		return;
	if (w->valid && (now < w->last || now - w->last < NS_PER_SEC))
		return;
	w->last = now;
	w->valid = 1;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(COUNTER_RINGBUF_FULL);
		return;
	}
	e->event_type = EVENT_TYPE_MAP_FULL;
	e->timestamp = now;
	e->flow = info->key;
	e->table = table;
	e->reserved[0] = 0;
	e->reserved[1] = 0;
	e->reserved[2] = 0;
	bpf_ringbuf_submit(e, 0);
}

/*
 * Live ingress only: is the packet addressed to this host? The FIB lookup of
 * the packet's addresses (filled as ePPing's is_local_address fills it) answers
 * NOT_FWDED for a local destination on a router, and FWD_DISABLED for every
 * destination when forwarding is off (an end host: nothing it receives is
 * forwarded, so all of it is local). Both mean "local".
 */
static __always_inline int is_local(void *ctx, const struct packet_info *info)
{
	struct bpf_fib_lookup fib = {};
	long ret;

	fib.ifindex = info->ingress_ifindex;
	fib.l4_protocol = info->key.proto;
	fib.tot_len = info->ip_len;
	if (info->is_ipv6) {
		fib.family = AF_INET6_;
		fib.flowinfo = info->flowinfo;
		__builtin_memcpy(fib.ipv6_src, info->key.saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, info->key.daddr, 16);
	} else {
		fib.family = AF_INET_;
		fib.tos = info->tos;
		__builtin_memcpy(&fib.ipv4_src, info->key.saddr + 12, 4);
		__builtin_memcpy(&fib.ipv4_dst, info->key.daddr + 12, 4);
	}
	ret = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	return ret == BPF_FIB_LKUP_RET_NOT_FWDED || ret == BPF_FIB_LKUP_RET_FWD_DISABLED;
}

/* RFC 7323 serial arithmetic for TCP timestamps; other identifiers only differ. */
static __always_inline int is_newer_identifier(__u8 proto, __u32 id, __u32 last_id)
{
	__u32 diff = id - last_id;

	if (proto == IPPROTO_TCP_)
		return diff != 0 && diff < (1U << 31);
	return diff != 0;
}

/* engine._rate_limited, with the limits in force (`sampling`, not `config`). */
static __always_inline int rate_limited(const struct flow_state *s, __u64 now)
{
	__u64 last = s->last_timestamp;
	__u64 rtt = config.use_srtt ? s->srtt : s->min_rtt;

	if (now < last)
		return 1;
	if (config.use_rtt_rate && rtt)
		return now - last < ((sampling.rtt_rate * rtt) >> 16);
	return now - last < sampling.rate_limit;
}

/*
 * A packet the rate limit refused joins the current sampling window if the
 * window is younger than --burst-window and has a packet left; returns 1 if so.
 * The slot is used up even if the insert fails (as the attempt of an opener is).
 */
static __always_inline int join_burst(struct flow_state *s, __u64 now)
{
	__u64 opened = s->last_timestamp;

	if (!s->burst_left || now < opened || now - opened >= config.burst_window)
		return 0;
	s->burst_left--;
	return 1;
}

/*
 * A packet the rate limit let through opens a sampling window: the attempt is
 * recorded (has_been_timestamped, last_timestamp) and, with bursts on, the
 * current window becomes the previous one.
 */
static __always_inline void open_window(struct flow_state *s, __u64 now)
{
	s->has_been_timestamped = 1;
	if (config.burst_packets) {
		s->previous_window = s->last_timestamp;
		s->previous_reported = s->window_reported;
		s->window_reported = 0;
		s->burst_left = config.burst_packets;
	}
	s->last_timestamp = now;
}

/*
 * engine._first_of_window: is a match of the timestamp taken at `sent` the
 * first of its window? Marks the window reported. Windows before the previous
 * one are not tracked: their matches are always reported.
 */
static __always_inline int first_of_window(struct flow_state *s, __u64 sent)
{
	int first = 1;

	if (sent >= s->last_timestamp) {
		first = !s->window_reported;
		s->window_reported = 1;
	} else if (sent >= s->previous_window) {
		first = !s->previous_reported;
		s->previous_reported = 1;
	}
	return first;
}

/* -- aggregation (-a, docs/aggregation.md) ------------------------------------ */

static __always_inline int is_ipv4_mapped(const __u8 *addr)
{
	__u64 head;
	__u32 middle;

	__builtin_memcpy(&head, addr, 8);
	__builtin_memcpy(&middle, addr + 8, 4);
	return head == 0 && middle == bpf_htonl(0x0000ffff);
}

/*
 * The entry of the prefix of `addr` in the active copy. With `create`, a
 * missing prefix is added if the table has room; a prefix that is missing
 * then goes to the backup entry (NULL only if that is missing too).
 */
static __always_inline struct agg_stats *agg_lookup(const __u8 *addr, int create)
{
	struct agg_key key = {};
	struct agg_stats *stats;
	__u32 active = *(volatile __u32 *)&agg_active;
	void *map;

	if (is_ipv4_mapped(addr)) {
		key.prefix = load_be32(addr + 12) & config.agg_ipv4_mask;
		map = active ? (void *)&agg_v4_1 : (void *)&agg_v4_0;
	} else {
		key.prefix = (((__u64)load_be32(addr)) << 32 | load_be32(addr + 4)) &
			     config.agg_ipv6_mask;
		map = active ? (void *)&agg_v6_1 : (void *)&agg_v6_0;
	}
	stats = bpf_map_lookup_elem(map, &key);
	if (stats)
		return stats;
	if (create) {
		long err = bpf_map_update_elem(map, &key, &empty_agg_stats, BPF_NOEXIST);

		if (err == 0 || err == -17 /* EEXIST: another CPU added it */) {
			stats = bpf_map_lookup_elem(map, &key);
			if (stats)
				return stats;
		}
	}
	key.prefix = 0;
	key.is_backup = 1;
	return bpf_map_lookup_elem(map, &key);
}

static __always_inline void agg_count(struct agg_stats *stats, struct agg_traffic *traffic,
				      __u32 cls, __u32 wire_len, __u64 now)
{
	if (cls >= AGG_NR_CLASSES)
		return;	/* verifier: bounds the index */
	traffic->packets[cls] += 1;
	traffic->bytes[cls] += wire_len;
	if (now > stats->last_updated)
		stats->last_updated = now;
}

/*
 * Every packet with a valid IP header counts for its source prefix (rx) and
 * its destination prefix (tx); only a packet that enters the pipeline
 * (`reason` PARSE_OK) may add a prefix.
 */
static __noinline void aggregate_packet(const struct packet_info *info, int reason,
					__u32 wire_len, __u32 flags, __u64 now)
{
	int parsed = reason == PARSE_OK || reason == COUNTER_SKIP_SYN ||
		     reason == COUNTER_SKIP_UNTRACKED;
	int create = reason == PARSE_OK;
	struct agg_stats *stats;
	__u32 cls;

	if (!info || !info->ip_valid)
		return;
	if (flags & AGG_FLAG_TRAFFIC_ONLY)
		parsed = create = 0;	/* the whole packet was not parsed */
	if (!parsed && (flags & AGG_FLAG_PARSED_ONLY))
		return;
	if (parsed && info->key.proto == IPPROTO_TCP_)
		cls = AGG_TCP_TS;
	else if (info->ip_proto == IPPROTO_TCP_)
		cls = AGG_TCP_NOTS;
	else
		cls = AGG_OTHER;
	stats = agg_lookup(info->key.saddr, create);
	if (stats)
		agg_count(stats, &stats->rx, cls, wire_len, now);
	stats = agg_lookup(info->key.daddr, create);
	if (stats)
		agg_count(stats, &stats->tx, cls, wire_len, now);
}

/* An RTT of the reply `info`: to its source's prefix (or its destination's). */
static __always_inline void aggregate_rtt(const struct packet_info *info, __u64 rtt)
{
	struct agg_stats *stats;
	__u64 bin = rtt / AGG_BIN_WIDTH_NS;

	stats = agg_lookup(config.agg_by_dst ? info->key.daddr : info->key.saddr, 0);
	if (!stats)
		return;
	if (stats->rtt_count == 0 || rtt < stats->rtt_min)
		stats->rtt_min = rtt;
	if (rtt > stats->rtt_max)
		stats->rtt_max = rtt;
	stats->rtt_count += 1;
	if (bin >= AGG_BINS)
		bin = AGG_BINS - 1;
	stats->bins[bin] += 1;
}

/* -- the pipeline ----------------------------------------------------------- */

/*
 * lookup_or_create_flow: the entry of `key`, or NULL when the packet goes no
 * further. Only a packet with a valid identifier that closes nothing creates an
 * entry, or replaces a closed one (a new connection on the same tuple).
 */
static __always_inline struct dual_flow *lookup_or_create_flow(const struct flow_key *key,
							       const struct packet_info *info,
							       __u64 now)
{
	struct dual_flow *dual = bpf_map_lookup_elem(&flows, key);
	int can_create = info->pid_valid && info->event_type < FLOW_EVENT_CLOSING;
	long err;

	if (dual && !(dual->closed && can_create))
		return dual;
	if (!can_create)
		return NULL;
	if (dual) {
		/* Replacing the closed entry in place equals deleting and creating it. */
		__builtin_memset(dual, 0, sizeof(*dual));
		dual->seq = __sync_fetch_and_add(&flow_seq, 1);
		count(COUNTER_FLOWS_CREATED);
		return dual;
	}
	err = insert_entry(&flows, sampling.max_flows, key, &empty_flow);
	if (err == -7 /* E2BIG: the table is full */) {
		count(COUNTER_FLOWS_TABLE_FULL);
		warn_full(TABLE_FLOWS, info, now);
		return NULL;
	}
	dual = bpf_map_lookup_elem(&flows, key);
	if (!dual)
		return NULL;
	if (err == 0) {
		dual->seq = __sync_fetch_and_add(&flow_seq, 1);
		count(COUNTER_FLOWS_CREATED);
	}
	return dual;
}

/* update_forward, first half: an empty direction starts with a valid identifier. */
static __always_inline void start_direction(struct flow_state *s, const struct packet_info *info,
					    __u64 now)
{
	s->conn_state = CONN_WAITOPEN;
	s->last_timestamp = now;
	s->started = now;
	s->last_id = info->pid;
	s->opening_reason = info->event_type == FLOW_EVENT_OPENING ?
				    info->event_reason : EVENT_REASON_FIRST_OBSERVED_PACKET;
	s->has_been_timestamped = 0;
}

/*
 * timestamp_packet, for an active direction and a valid, new identifier:
 * local filter, rate limit (or a slot of the open burst), then (direction,
 * pid) -> now without overwriting a waiting entry of this incarnation, unless
 * the direction is at its cap.
 */
static __always_inline void timestamp_packet(void *ctx, struct flow_state *s,
					     const struct packet_info *info, __u64 now,
					     int is_ingress)
{
	struct timestamp_key ts_key;
	__u64 *existing;
	long err;

	if (is_ingress && config.local_filter && is_local(ctx, info))
		return;
	s->last_id = info->pid;
	if (s->has_been_timestamped && rate_limited(s, now)) {
		if (!join_burst(s, now))
			return;
	} else {
		/* The attempt counts even if the table refuses the entry (fairness). */
		open_window(s, now);
	}

	ts_key.flow = info->key;
	ts_key.pid = info->pid;
	existing = bpf_map_lookup_elem(&timestamps, &ts_key);
	if (existing) {
		if (*existing >= s->started)
			return;	/* the same identifier already waits for its reply */
		/* An orphan of an earlier connection on this tuple: replaced. */
		*existing = now;
		count(COUNTER_TIMESTAMPS_CREATED);
		return;
	}
	/* Fairness: a direction holding its share does not take more of the table. */
	if (config.max_outstanding && s->outstanding >= config.max_outstanding) {
		count(COUNTER_TIMESTAMPS_CAPPED);
		return;
	}
	err = insert_entry(&timestamps, sampling.max_timestamps, &ts_key, &now);
	if (err == -7 /* E2BIG */) {
		count(COUNTER_TIMESTAMPS_TABLE_FULL);
		warn_full(TABLE_TIMESTAMPS, info, now);
		return;
	}
	if (err)
		return;	/* another CPU inserted the same key first */
	outstanding_inc(&s->outstanding);
	count(COUNTER_TIMESTAMPS_CREATED);
}

/* update_reverse: the first reply opens a waiting direction. */
static __always_inline void update_reverse(struct flow_state *s, const struct packet_info *info)
{
	if (!is_active(s))
		return;
	if (s->conn_state == CONN_WAITOPEN && info->event_type != FLOW_EVENT_CLOSING_BOTH) {
		s->conn_state = CONN_OPEN;
		send_flow_event(&info->key, s->last_timestamp, FLOW_EVENT_OPENING,
				s->opening_reason, EVENT_SOURCE_PACKET_DEST);
	}
	atomic_add_u64(&s->rec_pkts, 1);
	atomic_add_u64(&s->rec_bytes, info->payload);
}

/* match_packet: the reply identifier finds the reverse direction's timestamp. */
static __always_inline void match_packet(struct flow_state *s, const struct packet_info *info,
					 __u64 now, int is_ingress)
{
	struct timestamp_key ts_key;
	struct rtt_event *e;
	__u64 *found, sent, rtt;

	reverse_key(&ts_key.flow, &info->key);
	ts_key.pid = info->reply_pid;
	found = bpf_map_lookup_elem(&timestamps, &ts_key);
	if (!found)
		return;
	sent = *found;
	/* An entry older than the direction's start belongs to an earlier connection. */
	if (now < sent || sent < s->started)
		return;
	rtt = now - sent;
	if (bpf_map_delete_elem(&timestamps, &ts_key))
		return;	/* another CPU matched it first */
	outstanding_sub(&s->outstanding, 1);
	if (s->min_rtt == 0 || rtt < s->min_rtt)
		s->min_rtt = rtt;
	s->srtt = s->srtt ? s->srtt - (s->srtt >> 3) + (rtt >> 3) : rtt;
	count(COUNTER_TIMESTAMPS_MATCHED);
	/* One RTT event per sampling window; every match feeds min_rtt and srtt. */
	if (config.burst_packets && !first_of_window(s, sent))
		return;
	count(COUNTER_RTT_EVENTS);
	if (config.aggregate) {
		aggregate_rtt(info, rtt);	/* instead of the event */
		return;
	}

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(COUNTER_RINGBUF_FULL);
		return;
	}
	e->event_type = EVENT_TYPE_RTT;
	e->timestamp = now;
	e->flow = info->key;
	e->reserved = 0;
	e->rtt = rtt;
	e->min_rtt = s->min_rtt;
	e->sent_pkts = s->sent_pkts;
	e->sent_bytes = s->sent_bytes;
	e->rec_pkts = s->rec_pkts;
	e->rec_bytes = s->rec_bytes;
	e->match_on_egress = !is_ingress;
	__builtin_memset(e->reserved2, 0, sizeof(e->reserved2));
	bpf_ringbuf_submit(e, 0);
}

/*
 * close_flows: FIN closes the packet's direction, RST both. An entry with no
 * active direction is closed, and deleted once nothing is outstanding.
 */
static __always_inline void close_flows(const struct flow_key *key, struct dual_flow *dual,
					struct flow_state *forward, struct flow_state *reverse,
					const struct packet_info *info, __u64 now)
{
	if (info->event_type >= FLOW_EVENT_CLOSING) {
		if (forward->conn_state == CONN_OPEN) {
			struct flow_key flow;

			reverse_key(&flow, &info->key);
			send_flow_event(&flow, now, FLOW_EVENT_CLOSING, info->event_reason,
					EVENT_SOURCE_PACKET_DEST);
		}
		forward->conn_state = CONN_CLOSED;
		if (info->event_type == FLOW_EVENT_CLOSING_BOTH) {
			if (reverse->conn_state == CONN_OPEN)
				send_flow_event(&info->key, now, FLOW_EVENT_CLOSING,
						info->event_reason, EVENT_SOURCE_PACKET_SOURCE);
			reverse->conn_state = CONN_CLOSED;
		}
		if (!dual->closed && !is_active(forward) && !is_active(reverse)) {
			dual->closed = 1;
			count(COUNTER_FLOWS_CLOSED);
		}
	}
	if (dual->closed && forward->outstanding == 0 && reverse->outstanding == 0)
		bpf_map_delete_elem(&flows, key);
}

/* The whole pipeline for one parsed packet (engine.Engine.process). */
static __always_inline void process_packet(void *ctx, struct packet_info *info, __u64 now,
					    int is_ingress)
{
	struct flow_state *forward, *reverse;
	struct dual_flow *dual;
	struct flow_key key;
	int first = is_first_direction(&info->key);

	if (first)
		key = info->key;
	else
		reverse_key(&key, &info->key);

	dual = lookup_or_create_flow(&key, info, now);
	if (!dual)
		return;
	if (first) {
		forward = &dual->dir[0];
		reverse = &dual->dir[1];
	} else {
		forward = &dual->dir[1];
		reverse = &dual->dir[0];
	}

	/* update_forward */
	if (forward->conn_state == CONN_EMPTY && info->pid_valid)
		start_direction(forward, info, now);
	if (is_active(forward)) {
		atomic_add_u64(&forward->sent_pkts, 1);
		atomic_add_u64(&forward->sent_bytes, info->payload);
		/* Only a valid identifier, and (once stamped, or when waiting for the
		 * first edge) only a newer one. */
		if (info->pid_valid &&
		    (!(forward->has_been_timestamped || info->wait_first_edge) ||
		     is_newer_identifier(info->key.proto, info->pid, forward->last_id)))
			timestamp_packet(ctx, forward, info, now, is_ingress);
	}

	update_reverse(reverse, info);

	/* A CLOSED direction still matches while its entry exists. */
	if (reverse->outstanding && info->reply_pid_valid && reverse->conn_state != CONN_EMPTY)
		match_packet(reverse, info, now, is_ingress);

	close_flows(&key, dual, forward, reverse, info, now);
}

/* The hooks that run the body. */
enum hook {
	HOOK_TC_INGRESS,
	HOOK_TC_EGRESS,
	HOOK_XDP,
};

/*
 * -a: the packet's time and length on the wire. Read only with -a: without it
 * a skipped packet needs neither (bpf_ktime_get_ns() is a third of the cost of
 * a skipped packet). XDP runs live only, with the frame's own length.
 */
static __always_inline __u64 aggregate_time(void *ctx, enum hook hook)
{
	if (config.replay && hook != HOOK_XDP)
		return *(volatile __u64 *)&((struct __sk_buff *)ctx)->tstamp;
	return bpf_ktime_get_ns();
}

static __always_inline __u32 aggregate_length(void *ctx, void *data, void *data_end,
					      enum hook hook)
{
	struct __sk_buff *skb = ctx;
	__u32 len, wire_len;

	if (hook == HOOK_XDP)
		return data_end - data;
	/* verifier: both read unconditionally, as in pping() below. */
	len = *(volatile __u32 *)&skb->len;
	wire_len = *(volatile __u32 *)&skb->cb[AGG_CB_WIRE_LEN];
	/* Replay: the frame run may be shorter than the packet captured. */
	return config.replay ? wire_len : len;
}

/*
 * The body, for a packet [data, data_end) seen at `hook` (a constant).
 * parse_packet and process_packet are inlined: on this kernel every call
 * costs a return thunk (SRSO mitigation), and clang gives their locals, which
 * never live at the same time, the same stack slots: a hook's frame takes at
 * most 264 bytes, 336 with parse_transport's (the verifier allows 512).
 */
static __always_inline void pping(void *ctx, void *data, void *data_end, enum hook hook)
{
	struct packet_info info = {};
	__u32 mark, ifindex, ingress_ifindex, flags = 0;
	__u64 now = 0, tstamp;
	int reason;

	if (config.aggregate && config.replay && hook != HOOK_XDP)
		flags = *(volatile __u32 *)&((struct __sk_buff *)ctx)->cb[AGG_CB_FLAGS];
	if (!(flags & AGG_FLAG_TRAFFIC_ONLY))
		count(COUNTER_PACKETS);
	reason = parse_packet(ctx, data, data_end, &info, hook == HOOK_XDP);
	if (config.aggregate) {
		now = aggregate_time(ctx, hook);
		aggregate_packet(&info, reason, aggregate_length(ctx, data, data_end, hook), flags,
				 now);
		if (flags & AGG_FLAG_TRAFFIC_ONLY)
			return;
	}
	if (reason) {
		count(reason);
		return;
	}
	if (hook == HOOK_XDP) {
		/* XDP runs live only: its context has no field to carry replay's
		 * time and link. */
		ingress_ifindex = ((struct xdp_md *)ctx)->ingress_ifindex;
		if (!config.aggregate)
			now = bpf_ktime_get_ns();
		info.key.link = ingress_ifindex;
		info.ingress_ifindex = ingress_ifindex;
		process_packet(ctx, &info, now, 1);
		return;
	}
	/* verifier: the context is read unconditionally, with volatile loads;
	 * loads under the branch below get merged by clang into one load
	 * through a selected pointer, which the verifier refuses
	 * ("dereference of modified ctx ptr"). */
	tstamp = *(volatile __u64 *)&((struct __sk_buff *)ctx)->tstamp;
	mark = *(volatile __u32 *)&((struct __sk_buff *)ctx)->mark;
	ifindex = *(volatile __u32 *)&((struct __sk_buff *)ctx)->ifindex;
	info.ingress_ifindex = ((struct __sk_buff *)ctx)->ingress_ifindex;
	if (config.replay) {
		/* Replay (BPF_PROG_TEST_RUN): user space passes the capture time
		 * and the capture's interface in the context. */
		now = tstamp;
		info.key.link = mark;
	} else {
		if (!config.aggregate)
			now = bpf_ktime_get_ns();
		info.key.link = ifindex;
	}
	process_packet(ctx, &info, now, hook == HOOK_TC_INGRESS);
}

SEC("tc")
int pping_tc_ingress(struct __sk_buff *skb)
{
	pping(skb, (void *)(long)skb->data, (void *)(long)skb->data_end, HOOK_TC_INGRESS);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int pping_tc_egress(struct __sk_buff *skb)
{
	pping(skb, (void *)(long)skb->data, (void *)(long)skb->data_end, HOOK_TC_EGRESS);
	return TC_ACT_UNSPEC;
}

/*
 * Ingress at XDP (`-I xdp`): the same body, earlier on the receive path
 * (before GRO and the skb); egress stays at tc.
 */
SEC("xdp")
int pping_xdp_ingress(struct xdp_md *xdp)
{
	pping(xdp, (void *)(long)xdp->data, (void *)(long)xdp->data_end, HOOK_XDP);
	return XDP_PASS;
}

/* -- clean-up ------------------------------------------------------------------ */

/* age > k * srtt for age > 0, without overflowing the product. */
static __always_inline int older_than_multiple(__u64 age, __u64 srtt, __u64 k)
{
	return k == 0 || srtt <= (age - 1) / k;
}

/* config.timestamp_is_stale, for a timestamp `age` > 0 ns old. */
static __always_inline int timestamp_is_stale(const struct cleanup_args *w, __u64 age, __u64 srtt)
{
	if (srtt && age > w->timestamp_min_lifetime &&
	    older_than_multiple(age, srtt, w->timestamp_rtt_lifetime))
		return 1;
	return age > w->timestamp_lifetime;
}

/* config.direction_is_old, with the specification's conditions around it. */
static __always_inline int direction_is_old(const struct cleanup_args *w, __u8 proto,
					    const struct flow_state *s)
{
	__u64 last = s->last_timestamp, age;

	if (!is_active(s) || last > w->now)
		return 0;
	age = w->now - last;
	if (s->conn_state == CONN_WAITOPEN && age > w->unopened_flow_lifetime)
		return 1;
	if ((proto == IPPROTO_ICMP_ || proto == IPPROTO_ICMPV6_) && age > w->icmp_flow_lifetime)
		return 1;
	return age > w->flow_lifetime;
}

/* The state of the direction `direction` in its flow entry, or NULL. */
static __always_inline struct flow_state *direction_state(const struct flow_key *direction)
{
	struct dual_flow *dual;
	struct flow_key key;
	int first = is_first_direction(direction);

	if (first)
		key = *direction;
	else
		reverse_key(&key, direction);
	dual = bpf_map_lookup_elem(&flows, &key);
	if (!dual)
		return NULL;
	return first ? &dual->dir[0] : &dual->dir[1];
}

/*
 * bpf_for_each_map_elem callback over `timestamps` (engine._expire_timestamps):
 * a stale timestamp is deleted, and released from its direction's
 * `outstanding` if it belongs to the direction's current incarnation.
 */
static long expire_timestamp(void *map, struct timestamp_key *key, __u64 *value,
			     struct cleanup_args *w)
{
	struct flow_state *s = direction_state(&key->flow);
	__u64 sent = *value;

	if (w->now <= sent || !timestamp_is_stale(w, w->now - sent, s ? s->srtt : 0))
		return 0;
	if (bpf_map_delete_elem(&timestamps, key))
		return 0;	/* a packet matched it first */
	w->timestamps_expired++;
	if (s && sent >= s->started)
		outstanding_sub(&s->outstanding, 1);
	return 0;
}

/*
 * bpf_for_each_map_elem callback over `flows` (engine._expire_flows): an entry
 * none of whose directions is active and young is deleted and recorded in
 * the map `expired`. Returns 1 (stop) when that is full.
 */
static long expire_flow(void *map, struct flow_key *key, struct dual_flow *dual,
			struct cleanup_args *w)
{
	__u32 index = w->flows_expired;
	struct expired_flow *out;
	int old0, old1;
	__u8 timed_out = 0;
	__u64 seq;

	if (index >= PPING_CLEANUP_BATCH) {
		w->more = 1;
		return 1;
	}
	old0 = direction_is_old(w, key->proto, &dual->dir[0]);
	old1 = direction_is_old(w, key->proto, &dual->dir[1]);
	if ((is_active(&dual->dir[0]) && !old0) || (is_active(&dual->dir[1]) && !old1))
		return 0;
	if (old0 && dual->dir[0].conn_state == CONN_OPEN)
		timed_out |= 1;
	if (old1 && dual->dir[1].conn_state == CONN_OPEN)
		timed_out |= 2;
	seq = dual->seq;
	if (bpf_map_delete_elem(&flows, key))
		return 0;	/* a packet's close_flows deleted it first */
	out = bpf_map_lookup_elem(&expired, &index);
	if (!out)
		return 1;	/* never: index < PPING_CLEANUP_BATCH */
	out->seq = seq;
	out->key = *key;
	out->timed_out = timed_out;
	w->flows_expired = index + 1;
	return 0;
}

/*
 * The clean-up: user space only says when (`now`) and with which lifetimes;
 * every decision is taken here on the live entry, next to its deletion (see
 * pping.h). Returns the number of flow entries written to `expired`.
 */
SEC("syscall")
int pping_cleanup(struct cleanup_args *args)
{
	struct cleanup_args walk = *args;

	walk.timestamps_expired = 0;
	walk.flows_expired = 0;
	walk.more = 0;
	/* The occupancy as the clean-up finds it: the pressure controller's input
	 * (src/pping/pressure.py). A walk visits every bucket, however few entries
	 * there are: an empty table is not walked. */
	walk.timestamp_entries = (walk.walk & CLEANUP_TIMESTAMPS) ? entries_of(&timestamps) : 0;
	walk.flow_entries = (walk.walk & CLEANUP_FLOWS) ? entries_of(&flows) : 0;
	if (walk.timestamp_entries)
		bpf_for_each_map_elem(&timestamps, expire_timestamp, &walk, 0);
	if (walk.flow_entries)
		bpf_for_each_map_elem(&flows, expire_flow, &walk, 0);
	args->timestamps_expired = walk.timestamps_expired;
	args->flows_expired = walk.flows_expired;
	args->more = walk.more;
	args->timestamp_entries = walk.timestamp_entries;
	args->flow_entries = walk.flow_entries;
	return walk.flows_expired;
}

char LICENSE[] SEC("license") = "GPL";
