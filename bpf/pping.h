/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The one contract between the kernel program (pping.bpf.c) and user space.
 *
 * Everything that crosses the boundary is defined here and mirrored once in
 * src/pping/kernel/abi.py; tests/test_abi.py checks every size and offset of
 * the mirror against the BTF of the compiled object. Rules for this file:
 * fixed-width types only, every hole filled with an explicit `reserved` field,
 * every event starts with `__u64 event_type`.
 *
 * Times are nanoseconds in the program's clock: bpf_ktime_get_ns() when live,
 * the capture time minus a base chosen by user space when replaying a capture
 * (see docs/kernel.md, "Time").
 */
#ifndef PPING_H
#define PPING_H

#include <linux/types.h>

/* Configuration: one `const volatile` global in .rodata, written before load. */
struct pping_config {
	/* As configured; the rate limit reads the values in force from `sampling`. */
	__u64 rate_limit;	/* static sampling interval per direction, ns */
	__u64 rtt_rate;		/* -R as 16.16 fixed point (modulo 2^64) */
	__u8 use_rtt_rate;	/* -R given (the fixed point before reduction was not 0) */
	__u8 use_srtt;		/* -t smoothed: -R multiplies srtt, not min_rtt */
	__u8 track_tcp;
	__u8 track_icmp;
	__u8 include_syn;	/* timestamp SYNs (-s) */
	__u8 local_filter;	/* live ingress: do not timestamp packets to this host */
	__u8 replay;		/* time from skb->tstamp and link from skb->mark */
	__u8 reserved;
	__u32 burst_packets;	/* --burst: more packets per sampling window (0: off) */
	__u32 reserved2;
	__u64 burst_window;	/* --burst-window, ns */
	/* -a (docs/aggregation.md): per-prefix tables instead of RTT events. */
	__u64 agg_ipv6_mask;	/* upper 64 bits of an IPv6 address, host order */
	__u32 agg_ipv4_mask;	/* host order */
	__u8 aggregate;
	__u8 agg_by_dst;	/* --aggregate-reverse: RTTs to the reply's destination */
	__u8 grow_tables;	/* --max-*-cap: the capacities in force are in `sampling` */
	__u8 reserved3;
	__u32 max_outstanding;	/* timestamps one direction may hold; 0: no cap */
	__u32 reserved4;
};

/*
 * The limits in force: the global `sampling`, alone in its data section
 * ".data.sampling" (writable, unlike the config), rewritten whole by user space
 * when the pressure controller (src/pping/pressure.py) changes the scale or
 * grows a table at a clean-up. The first two fields are the configured values
 * times the scale. With config.grow_tables the maps are created at their caps
 * and the last two fields are the capacities in force: a table at its capacity
 * refuses new entries as a full map would.
 */
struct pping_sampling {
	__u64 rate_limit;	/* static interval per direction, ns (saturated) */
	__u64 rtt_rate;		/* -R as 16.16 fixed point (modulo 2^64) */
	__u32 max_timestamps;	/* timestamp entries allowed now (grow_tables) */
	__u32 max_flows;	/* flow entries allowed now (grow_tables) */
};

/* Connection states of one direction (engine.py: EMPTY, WAITOPEN, OPEN, CLOSED). */
enum pping_conn_state {
	CONN_EMPTY = 0,
	CONN_WAITOPEN = 1,
	CONN_OPEN = 2,
	CONN_CLOSED = 3,
};

/* Flow event types and reasons: the values of events.FlowEventType / EventReason. */
enum pping_flow_event_type {
	FLOW_EVENT_NONE = 0,
	FLOW_EVENT_OPENING = 1,
	FLOW_EVENT_CLOSING = 2,
	FLOW_EVENT_CLOSING_BOTH = 3,
};

enum pping_event_reason {
	EVENT_REASON_NONE = 0,
	EVENT_REASON_SYN = 1,
	EVENT_REASON_SYN_ACK = 2,
	EVENT_REASON_FIRST_OBSERVED_PACKET = 3,
	EVENT_REASON_FIN = 4,
	EVENT_REASON_RST = 5,
	EVENT_REASON_FLOW_TIMEOUT = 6,
};

/* events.EventSource */
enum pping_event_source {
	EVENT_SOURCE_PACKET_SOURCE = 0,
	EVENT_SOURCE_PACKET_DEST = 1,
	EVENT_SOURCE_GARBAGE_COLLECTION = 2,
};

/* events.Table: the bounded tables whose exhaustion is reported. */
enum pping_table {
	TABLE_TIMESTAMPS = 0,
	TABLE_FLOWS = 1,
	PPING_NR_TABLES = 2,
};

/*
 * One direction of a conversation, or (with the lower endpoint first) the key
 * of a flow-table entry. Addresses are 16 bytes in network order, IPv4 as
 * IPv4-mapped IPv6; ports in host order (for ICMP echo both hold the echo
 * identifier); `link` is the observation point.
 */
struct flow_key {
	__u32 link;
	__u8 proto;
	__u8 reserved[3];
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
};

/*
 * State of one direction: engine.FlowState, field for field. With bursts on,
 * last_timestamp is when the current sampling window opened and the last four
 * fields track it and the window before (docs/algorithm.md, timestamp_packet).
 */
struct flow_state {
	__u64 min_rtt;		/* 0: not known yet */
	__u64 srtt;		/* 0: not known yet */
	__u64 last_timestamp;
	__u64 started;		/* when this incarnation of the direction began */
	__u64 sent_pkts;
	__u64 sent_bytes;
	__u64 rec_pkts;
	__u64 rec_bytes;
	__u64 previous_window;	/* when the window before the current one opened */
	__u32 last_id;
	__u32 outstanding;	/* timestamps of this incarnation not yet matched/expired */
	__u8 conn_state;	/* enum pping_conn_state */
	__u8 has_been_timestamped;
	__u8 opening_reason;	/* enum pping_event_reason */
	__u8 burst_left;	/* packets the current window may still timestamp */
	__u8 window_reported;	/* an RTT of the current window was reported */
	__u8 previous_reported;	/* an RTT of the previous window was reported */
	__u8 reserved[2];
};

/* One flow-table entry: engine.DualFlow. */
struct dual_flow {
	struct flow_state dir[2];	/* [0]: the direction of the entry's key */
	__u64 seq;		/* creation order: clean-up reports in this order */
	__u8 closed;		/* both directions closed, replies may still come */
	__u8 reserved[7];
};

/* Timestamp table: (direction, identifier) -> time the identifier was seen. */
struct timestamp_key {
	struct flow_key flow;
	__u32 pid;
};

/* Last map-full event per table (array map `warnings`, index enum pping_table). */
struct warning_state {
	__u64 last;		/* time of the last map-full event */
	__u64 valid;		/* 0: none emitted yet */
};

/* Events, sent through the ring buffer `events`. */
enum pping_event_type {
	EVENT_TYPE_RTT = 1,
	EVENT_TYPE_FLOW = 2,
	EVENT_TYPE_MAP_FULL = 3,
};

struct rtt_event {
	__u64 event_type;	/* EVENT_TYPE_RTT */
	__u64 timestamp;
	struct flow_key flow;	/* the reply's direction */
	__u32 reserved;
	__u64 rtt;
	__u64 min_rtt;
	__u64 sent_pkts;	/* counters of the timestamped direction */
	__u64 sent_bytes;
	__u64 rec_pkts;
	__u64 rec_bytes;
	__u8 match_on_egress;
	__u8 reserved2[7];
};

struct flow_event {
	__u64 event_type;	/* EVENT_TYPE_FLOW */
	__u64 timestamp;
	struct flow_key flow;
	__u8 flow_event_type;	/* enum pping_flow_event_type */
	__u8 reason;		/* enum pping_event_reason */
	__u8 source;		/* enum pping_event_source */
	__u8 reserved;
};

struct map_full_event {
	__u64 event_type;	/* EVENT_TYPE_MAP_FULL */
	__u64 timestamp;
	struct flow_key flow;	/* the packet that found the table full */
	__u8 table;		/* enum pping_table */
	__u8 reserved[3];
};

/*
 * Per-CPU counters (array map `counters`). The SKIP_* entries are the skip
 * reasons of src/pping/packet.py that a packet reaching the program can hit
 * (the link-layer ones stay in user space), then the engine's two filters.
 * Expiry counts are returned by the clean-up program (struct cleanup_args).
 */
enum pping_counter {
	COUNTER_PACKETS = 0,
	COUNTER_SKIP_TRUNCATED,
	COUNTER_SKIP_NOT_IP,
	COUNTER_SKIP_VLAN,
	COUNTER_SKIP_MPLS,
	COUNTER_SKIP_BAD_IPV4,
	COUNTER_SKIP_BAD_IPV6,
	COUNTER_SKIP_FRAGMENT,
	COUNTER_SKIP_IPV6_EXT,
	COUNTER_SKIP_PROTOCOL,
	COUNTER_SKIP_BAD_TCP,
	COUNTER_SKIP_NO_TIMESTAMP,
	COUNTER_SKIP_NOT_ECHO,
	COUNTER_SKIP_BAD_ICMP,
	COUNTER_SKIP_SYN,
	COUNTER_SKIP_UNTRACKED,
	COUNTER_TIMESTAMPS_CREATED,
	COUNTER_TIMESTAMPS_MATCHED,
	COUNTER_TIMESTAMPS_TABLE_FULL,
	COUNTER_FLOWS_CREATED,
	COUNTER_FLOWS_CLOSED,
	COUNTER_FLOWS_TABLE_FULL,
	COUNTER_RTT_EVENTS,
	COUNTER_RINGBUF_FULL,
	COUNTER_TIMESTAMPS_CAPPED,	/* the direction held config.max_outstanding */
	PPING_NR_COUNTERS,
};

/*
 * The periodic clean-up (docs/algorithm.md, "Clean-up"), done in the kernel by
 * the SEC("syscall") program `pping_cleanup`, which user space runs with
 * BPF_PROG_TEST_RUN and `struct cleanup_args` as its context. The lifetimes are
 * those of src/pping/config.py, passed in on every run (one definition). The
 * program walks the timestamps, then the flows, and decides on each entry as it
 * is in the map at that moment, right before deleting it: what a packet changed
 * before the walk reached the entry counts. Expired flow entries are returned in
 * the array map `expired` (indices 0 .. flows_expired - 1); when it is full the
 * walk stops and `more` asks for another run (flows only), which goes on where
 * this one stopped since deleted entries are gone.
 */
#define PPING_CLEANUP_BATCH 1024

/* What one run of pping_cleanup walks (cleanup_args.walk). */
enum pping_cleanup_walk {
	CLEANUP_TIMESTAMPS = 1,
	CLEANUP_FLOWS = 2,
};

struct cleanup_args {
	__u64 now;			/* in: the program's clock */
	__u64 timestamp_lifetime;	/* in: config.TIMESTAMP_LIFETIME_NS */
	__u64 timestamp_min_lifetime;	/* in: config.TIMESTAMP_MIN_LIFETIME_NS */
	__u64 timestamp_rtt_lifetime;	/* in: config.TIMESTAMP_RTT_LIFETIME (x srtt) */
	__u64 flow_lifetime;		/* in: config.FLOW_LIFETIME_NS */
	__u64 icmp_flow_lifetime;	/* in: config.ICMP_FLOW_LIFETIME_NS */
	__u64 unopened_flow_lifetime;	/* in: config.UNOPENED_FLOW_LIFETIME_NS */
	__u32 walk;			/* in: enum pping_cleanup_walk bits */
	__u32 timestamps_expired;	/* out: timestamps this run deleted */
	__u32 flows_expired;		/* out: flow entries this run deleted */
	__u32 more;			/* out: expired_flows filled up before the walk ended */
	__u32 timestamp_entries;	/* out: timestamps before this run (when walked) */
	__u32 flow_entries;		/* out: flow entries before this run (when walked) */
};

/* One flow entry the clean-up deleted (engine: a key of `dead`). */
struct expired_flow {
	__u64 seq;		/* the entry's creation number: events go in this order */
	struct flow_key key;
	__u8 timed_out;		/* bit i: dir[i] was OPEN and old (a closing event) */
	__u8 reserved[3];
};

/*
 * Aggregation (-a, docs/aggregation.md). Four per-CPU hash maps, one per
 * address family and copy: agg_v4_0, agg_v4_1, agg_v6_0, agg_v6_1. Packets
 * update the copy named by the global `agg_active` (section ".data.aggregate");
 * user space flips it, then reads, clears or deletes the entries of the other.
 * The backup entry of a map (is_backup = 1) is inserted by user space.
 */
#define AGG_BINS 250
#define AGG_BIN_WIDTH_NS 4000000ULL

enum agg_class {
	AGG_TCP_TS = 0,		/* TCP the RTT parser accepts (timestamp option) */
	AGG_TCP_NOTS = 1,	/* other TCP */
	AGG_OTHER = 2,
	AGG_NR_CLASSES = 3,
};

struct agg_key {
	__u64 prefix;		/* the masked IPv4 address, or upper 64 bits of IPv6 */
	__u8 is_backup;
	__u8 reserved[7];
};

struct agg_traffic {
	__u64 packets[AGG_NR_CLASSES];
	__u64 bytes[AGG_NR_CLASSES];
};

struct agg_stats {
	__u64 last_updated;	/* latest packet time */
	struct agg_traffic rx;	/* packets from the prefix */
	struct agg_traffic tx;	/* packets to the prefix */
	__u64 rtt_count;
	__u64 rtt_min;		/* valid when rtt_count > 0 */
	__u64 rtt_max;
	__u32 bins[AGG_BINS];	/* RTT histogram, AGG_BIN_WIDTH_NS wide, the last open */
};

/*
 * Replay only: skb->cb[AGG_CB_WIRE_LEN] carries the packet's length on the wire,
 * skb->cb[AGG_CB_FLAGS] these flags (the converted frame may differ from the
 * captured one).
 */
#define AGG_CB_WIRE_LEN 0
#define AGG_CB_FLAGS 1
#define AGG_FLAG_PARSED_ONLY 1	/* count the packet only if the RTT parser accepts it */
#define AGG_FLAG_TRAFFIC_ONLY 2	/* count its traffic, nothing else (user space counts it) */

#define PPING_DEFAULT_MAX_PREFIXES 16384

/* Default table sizes (config.DEFAULT_MAX_*); the loader sets the real ones. */
#define PPING_DEFAULT_MAX_FLOWS 131072
#define PPING_DEFAULT_MAX_TIMESTAMPS 131072
#define PPING_DEFAULT_RINGBUF_BYTES (1 << 20)

#endif /* PPING_H */
