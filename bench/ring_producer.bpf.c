// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Bench/test-only producer of pping events: writes records in pping's format
 * (bpf/pping.h) into a ring buffer map laid out like pping's `events`.
 * Compiled by bench/ring_consumer.py and tests/test_ringbuf_batch.py (clang -I bpf);
 * run through BPF_PROG_TEST_RUN, never attached.
 *
 * emit_one: one record whose payload user space gives (any event type, any bytes),
 *           optionally reserved and then discarded.
 * emit_rtt: `count` RTT events in one run (bpf_loop), the flow cycling over
 *           `flows` ports; failed reserves (ring full) are counted, not retried.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "pping.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, PPING_DEFAULT_RINGBUF_BYTES);
} events SEC(".maps");

#define PAYLOAD_MAX sizeof(struct rtt_event)

struct emit_one_args {
	__u32 size;		/* sizeof one of the three events */
	__u32 discard;		/* reserve, then discard instead of submit */
	__u8 payload[PAYLOAD_MAX];
	__u32 failed;		/* out: 1 when the reserve failed */
	__u32 reserved;
};

#define EMIT(SIZE)                                                              \
	do {                                                                    \
		__u8 *e = bpf_ringbuf_reserve(&events, SIZE, 0);                \
		if (!e) {                                                       \
			ctx->failed = 1;                                        \
			return 0;                                               \
		}                                                               \
		__builtin_memcpy(e, ctx->payload, SIZE);                        \
		if (ctx->discard)                                               \
			bpf_ringbuf_discard(e, 0);                              \
		else                                                            \
			bpf_ringbuf_submit(e, 0);                               \
	} while (0)

SEC("syscall")
int emit_one(struct emit_one_args *ctx)
{
	ctx->failed = 0;
	if (ctx->size == sizeof(struct rtt_event))
		EMIT(sizeof(struct rtt_event));
	else if (ctx->size == sizeof(struct flow_event))
		EMIT(sizeof(struct flow_event));
	else if (ctx->size == sizeof(struct map_full_event))
		EMIT(sizeof(struct map_full_event));
	else
		return -1;
	return 0;
}

struct emit_rtt_args {
	__u64 count;		/* events to emit in this run */
	__u64 seq;		/* number of the first one (sequence in rtt) */
	__u32 flows;		/* distinct flows, >= 1 */
	__u32 reserved;
	__u64 emitted;		/* out */
	__u64 failed;		/* out: reserves refused (ring full) */
};

struct loop_state {
	__u64 seq;
	__u64 now;
	__u64 emitted;
	__u64 failed;
	__u32 flows;
	__u32 reserved;
};

static long emit_rtt_one(__u64 i, void *data)
{
	struct loop_state *s = data;
	struct rtt_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	__u64 n = s->seq + i;
	__u32 flow = s->flows ? (__u32)(n % s->flows) : 0;

	if (!e) {
		s->failed++;
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->event_type = EVENT_TYPE_RTT;
	e->timestamp = s->now + i;
	e->flow.link = 1;
	e->flow.proto = 6;
	/* ::ffff:10.0.x.y -> ::ffff:10.1.0.1 */
	e->flow.saddr[10] = 0xff;
	e->flow.saddr[11] = 0xff;
	e->flow.saddr[12] = 10;
	e->flow.saddr[14] = (flow >> 8) & 0xff;
	e->flow.saddr[15] = flow & 0xff;
	e->flow.daddr[10] = 0xff;
	e->flow.daddr[11] = 0xff;
	e->flow.daddr[12] = 10;
	e->flow.daddr[13] = 1;
	e->flow.daddr[15] = 1;
	e->flow.sport = 1024 + (flow & 0x7fff);
	e->flow.dport = 443;
	e->rtt = n;		/* the consumer checks the sequence */
	e->min_rtt = 1000;
	e->sent_pkts = n;
	e->sent_bytes = n * 1448;
	e->rec_pkts = n;
	e->rec_bytes = n * 66;
	e->match_on_egress = n & 1;
	bpf_ringbuf_submit(e, 0);
	s->emitted++;
	return 0;
}

SEC("syscall")
int emit_rtt(struct emit_rtt_args *ctx)
{
	struct loop_state s = {
		.seq = ctx->seq,
		.now = bpf_ktime_get_ns(),
		.flows = ctx->flows,
	};

	bpf_loop(ctx->count, emit_rtt_one, &s, 0);
	ctx->emitted = s.emitted;
	ctx->failed = s.failed;
	return 0;
}
