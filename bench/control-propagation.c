/*
 * Copyright (C) The relay authors
 */


/*
 * Policy propagation load client for controld: N Node.Session streams
 * (node ids bench-0 .. bench-N-1) spread over a few channels, each ACKing
 * every policy it receives; then R times: Admin.Apply a changed policy and
 * measure from the start of the Apply call until every subscriber has
 * received that version and its ACK has been written (send completed).
 * Prints p50/p99/max over the rounds and controld's VmRSS (from /proc).
 *
 * Several targets (-t A,B,C: replicas of controld on etcd) spread the
 * subscribers over them, subscriber i on target i % T; Apply goes to the
 * first.  A stream that ends starts again on the next target after 0.5 to
 * 1.5 s (what a node's first reconnection waits).  With -k PID the client
 * then kills that replica (SIGKILL) and measures, for every subscriber
 * whose stream it broke, the time until its new stream is up on another
 * (initial metadata back: controld accepted it), and prints p50/p99/max
 * over them.
 *
 * controld must run with --insecure: on mTLS every stream would need a
 * certificate of its own node id.  One thread, one completion queue.
 *
 *   control-propagation -t HOST:PORT[,HOST:PORT...] -n 1000 [-c 4] [-r 20]
 *       [-p PID[,PID...]] [-k PID]
 */


#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>

#include "relay/control/v1/control.pb-c.h"


typedef enum {
    BENCH_OP_START = 0,     /* metadata + hello */
    BENCH_OP_RECV,
    BENCH_OP_SEND,          /* an ACK */
    BENCH_OP_STATUS
} bench_op_e;


typedef struct bench_sub_s  bench_sub_t;

typedef struct {
    bench_sub_t            *sub;
    bench_op_e              op;
} bench_tag_t;


struct bench_sub_s {
    int                     id;
    int                     target;          /* of its stream now */
    int                     pending;         /* batches in flight */
    double                  restart_at;      /* 0: none to start */
    double                  broken_at;       /* its stream broke at a kill */
    double                  back;            /* then up again after (s) */
    grpc_call              *call;
    grpc_byte_buffer       *recv_buf;
    grpc_byte_buffer       *send_buf;
    grpc_metadata_array     md;
    grpc_metadata_array     trailers;
    grpc_status_code        status;
    grpc_slice              details;
    uint64_t                received;
    uint64_t                acked;           /* last ACK started */
    uint64_t                confirmed;       /* last ACK written */
    int                     counted;         /* in this round's reached */
    uint64_t                ack_pending;     /* to send after the current */
    int                     sending;
    int                     ended;
    bench_tag_t             t_start, t_recv, t_send, t_status;
};


static int bench_pack(const ProtobufCMessage *m, grpc_byte_buffer **bb);
static void bench_open(bench_sub_t *s);
static int bench_event(bench_tag_t *tag, int ok);
static void bench_restarts(void);
static void bench_ack(bench_sub_t *s, uint64_t v);
static int bench_apply(grpc_channel *ch, int round, uint64_t *version);
static long bench_rss(int pid);
static double bench_now(void);
static int bench_cmp(const void *a, const void *b);


static grpc_completion_queue  *cq;
static bench_sub_t            *subs;
static int                     nsubs;
static grpc_channel          **chans;        /* per target, per channel */
static int                     ntargets;
static int                     nchan;
static double                  killed_at;    /* 0: no kill yet */
static uint64_t                target;       /* version of this round */
static int                     reached;      /* confirmed >= target */
static int                     apply_done;
static int                     apply_tag;


int
main(int argc, char **argv)
{
    int                 ch, rounds, kill_pid, i, r, started, affected, back;
    char               *t, *targets[16], *pids;
    double             *lat, *backs, t0, wait_until;
    grpc_arg            arg[2];
    grpc_event          ev;
    bench_sub_t        *s;
    grpc_channel       *admin;
    grpc_channel_args   args;
    grpc_channel_credentials  *creds;

    t = "127.0.0.1:7443";
    nsubs = 100;
    nchan = 4;
    rounds = 20;
    pids = NULL;
    kill_pid = 0;

    while ((ch = getopt(argc, argv, "t:n:c:r:p:k:")) != -1) {
        switch (ch) {
        case 't': t = optarg; break;
        case 'n': nsubs = atoi(optarg); break;
        case 'c': nchan = atoi(optarg); break;
        case 'r': rounds = atoi(optarg); break;
        case 'p': pids = optarg; break;
        case 'k': kill_pid = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: %s -t HOST:PORT[,HOST:PORT...] [-n N] "
                    "[-c CHANNELS] [-r ROUNDS] [-p PID[,PID...]] "
                    "[-k PID]\n", argv[0]);
            return 2;
        }
    }

    if (nsubs < 1 || nchan < 1 || rounds < 1) {
        return 2;
    }

    for (ntargets = 0, t = strtok(t, ","); t && ntargets < 16;
         t = strtok(NULL, ","))
    {
        targets[ntargets++] = t;
    }

    grpc_init();
    cq = grpc_completion_queue_create_for_next(NULL);
    creds = grpc_insecure_credentials_create();

    chans = calloc(ntargets * nchan, sizeof(grpc_channel *));
    subs = calloc(nsubs, sizeof(bench_sub_t));
    lat = calloc(rounds, sizeof(double));
    backs = calloc(nsubs, sizeof(double));

    for (i = 0; i < ntargets * nchan; i++) {
        /* a channel id of its own: one TCP connection per channel */
        arg[0].type = GRPC_ARG_INTEGER;
        arg[0].key = "bench.channel";
        arg[0].value.integer = i;
        arg[1].type = GRPC_ARG_INTEGER;
        arg[1].key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
        arg[1].value.integer = 1;
        args.num_args = 2;
        args.args = arg;
        chans[i] = grpc_channel_create(targets[i / nchan], creds, &args);
    }

    arg[0].value.integer = ntargets * nchan;
    admin = grpc_channel_create(targets[0], creds, &args);

    /* open every stream: subscriber i on target i % T */

    for (i = 0; i < nsubs; i++) {
        s = &subs[i];
        s->id = i;
        s->target = i % ntargets;
        s->t_start = (bench_tag_t) { s, BENCH_OP_START };
        s->t_recv = (bench_tag_t) { s, BENCH_OP_RECV };
        s->t_send = (bench_tag_t) { s, BENCH_OP_SEND };
        s->t_status = (bench_tag_t) { s, BENCH_OP_STATUS };
        bench_open(s);
    }

    started = 0;
    r = -1;
    t0 = bench_now();
    wait_until = t0 + 30;

    /* round -1 waits for every hello to be through; then the rounds */

    for ( ;; ) {
        ev = grpc_completion_queue_next(cq,
                 gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                              gpr_time_from_millis(100, GPR_TIMESPAN)),
                 NULL);

        if (ev.type == GRPC_OP_COMPLETE && ev.tag == &apply_tag) {
            apply_done = 1;

        } else if (ev.type == GRPC_OP_COMPLETE) {
            started += bench_event(ev.tag, ev.success);
        }

        bench_restarts();

        if (r == -1) {
            if (started == nsubs) {
                /* let controld take every hello before the first apply */
                if (wait_until > bench_now() + 1) {
                    wait_until = bench_now() + 1;
                }
            }

            if (bench_now() < wait_until) {
                continue;
            }

            if (started < nsubs) {
                fprintf(stderr, "only %d of %d streams started\n", started,
                        nsubs);
                return 1;
            }

            r = 0;
            goto next_round;
        }

        if (apply_done == 1) {
            apply_done = 2;

            if (bench_apply(admin, -1, &target) != 0) {
                return 1;
            }

            reached = 0;
            for (i = 0; i < nsubs; i++) {
                subs[i].counted = subs[i].confirmed >= target;
                reached += subs[i].counted;
            }
        }

        if (apply_done == 2 && reached >= nsubs) {
            lat[r] = (bench_now() - t0) * 1000;
            r++;

            if (r == rounds) {
                break;
            }

        next_round:

            target = 0;
            apply_done = 0;
            t0 = bench_now();

            if (bench_apply(admin, r, NULL) != 0) {
                return 1;
            }

            continue;
        }

        if (apply_done == 2 && bench_now() - t0 > 60) {
            fprintf(stderr, "round %d: only %d of %d ACKed in 60s\n", r,
                    reached, nsubs);
            return 1;
        }
    }

    qsort(lat, rounds, sizeof(double), bench_cmp);

    printf("subscribers=%d targets=%d channels=%d rounds=%d p50=%.1fms "
           "p99=%.1fms max=%.1fms controld_rss=", nsubs, ntargets, nchan,
           rounds, lat[(rounds - 1) / 2],
           lat[(int) ((rounds - 1) * 0.99 + 0.5)], lat[rounds - 1]);

    for (t = pids ? strtok(pids, ",") : NULL, i = 0; t;
         t = strtok(NULL, ","), i++)
    {
        printf("%s%ldkB", i ? "," : "", bench_rss(atoi(t)));
    }

    printf("%s\n", pids ? "" : "-");
    fflush(stdout);

    if (kill_pid == 0) {
        goto done;
    }

    /* a replica killed: its subscribers back on another, one by one */

    killed_at = bench_now();
    kill(kill_pid, SIGKILL);
    wait_until = killed_at + 60;

    for ( ;; ) {
        ev = grpc_completion_queue_next(cq,
                 gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                              gpr_time_from_millis(20, GPR_TIMESPAN)),
                 NULL);

        if (ev.type == GRPC_OP_COMPLETE && ev.tag != &apply_tag) {
            (void) bench_event(ev.tag, ev.success);
        }

        bench_restarts();

        affected = 0;
        back = 0;

        for (i = 0; i < nsubs; i++) {
            s = &subs[i];

            if (s->broken_at) {
                backs[affected++] = s->back;
                back += s->back > 0;
            }
        }

        if (affected && back == affected && bench_now() - killed_at > 2) {
            break;
        }

        if (bench_now() > wait_until) {
            fprintf(stderr, "only %d of %d subscribers back in 60s\n",
                    back, affected);
            return 1;
        }
    }

    qsort(backs, affected, sizeof(double), bench_cmp);

    printf("killed replica: %d subscribers back on another: p50=%.0fms "
           "p99=%.0fms max=%.0fms\n", affected,
           backs[(affected - 1) / 2] * 1000,
           backs[(int) ((affected - 1) * 0.99 + 0.5)] * 1000,
           backs[affected - 1] * 1000);
    fflush(stdout);

done:

    for (i = 0; i < nsubs; i++) {
        grpc_call_cancel(subs[i].call, NULL);
    }

    return 0;
}


/*
 * A batch of a subscriber's stream completed: ACK what came, count what
 * was confirmed, and when the stream is over, schedule it again on the
 * next target as a node would (0.5 to 1.5 s).  1: a stream started.
 */

static int
bench_event(bench_tag_t *tag, int ok)
{
    int                                  started;
    uint64_t                             v;
    grpc_op                              op;
    grpc_slice                           sl;
    bench_sub_t                         *s;
    grpc_byte_buffer_reader              rd;
    Relay__Control__V1__ControlMessage  *cm;

    s = tag->sub;
    s->pending--;
    started = 0;

    switch (tag->op) {

    case BENCH_OP_START:
    case BENCH_OP_SEND:
        s->sending = 0;
        grpc_byte_buffer_destroy(s->send_buf);
        s->send_buf = NULL;

        if (!ok || s->ended) {
            s->ended = 1;
            break;
        }

        if (tag->op == BENCH_OP_START) {
            started = 1;

            if (s->broken_at && s->back == 0) {
                s->back = bench_now() - s->broken_at;
            }

        } else {
            s->confirmed = s->acked;

            if (target && s->confirmed >= target && !s->counted) {
                s->counted = 1;
                reached++;
            }
        }

        if (s->ack_pending) {
            v = s->ack_pending;
            s->ack_pending = 0;
            bench_ack(s, v);
        }

        break;

    case BENCH_OP_RECV:
        if (!ok || s->recv_buf == NULL) {
            s->ended = 1;
            break;
        }

        grpc_byte_buffer_reader_init(&rd, s->recv_buf);
        sl = grpc_byte_buffer_reader_readall(&rd);
        grpc_byte_buffer_reader_destroy(&rd);
        grpc_byte_buffer_destroy(s->recv_buf);
        s->recv_buf = NULL;

        cm = relay__control__v1__control_message__unpack(NULL,
                 GRPC_SLICE_LENGTH(sl), GRPC_SLICE_START_PTR(sl));
        grpc_slice_unref(sl);

        if (cm
            && cm->msg_case == RELAY__CONTROL__V1__CONTROL_MESSAGE__MSG_POLICY)
        {
            s->received = cm->policy->version;

            if (s->sending) {
                s->ack_pending = s->received;

            } else {
                bench_ack(s, s->received);
            }
        }

        if (cm) {
            relay__control__v1__control_message__free_unpacked(cm, NULL);
        }

        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &s->recv_buf;
        s->pending += grpc_call_start_batch(s->call, &op, 1, &s->t_recv,
                                            NULL)
                      == GRPC_CALL_OK;
        break;

    case BENCH_OP_STATUS:
        s->ended = 1;
        grpc_call_cancel(s->call, NULL);
        break;
    }

    if (s->ended && s->pending == 0 && s->restart_at == 0) {
        if (killed_at && s->broken_at == 0) {
            s->broken_at = killed_at;
        }

        s->restart_at = bench_now() + 0.5 + (random() % 1000) / 1e3;
    }

    return started;
}


/* the streams whose time has come start again, on the next target */

static void
bench_restarts(void)
{
    int           i;
    bench_sub_t  *s;

    for (i = 0; i < nsubs; i++) {
        s = &subs[i];

        if (s->restart_at && bench_now() >= s->restart_at) {
            s->restart_at = 0;
            s->target = (s->target + 1) % ntargets;
            grpc_call_unref(s->call);
            grpc_metadata_array_destroy(&s->md);
            grpc_metadata_array_destroy(&s->trailers);
            grpc_slice_unref(s->details);
            bench_open(s);
        }
    }
}


/* a stream of s on its target: metadata with wait-for-ready, the hello */

static void
bench_open(bench_sub_t *s)
{
    char                             id[32];
    grpc_op                          ops[3];
    Relay__Control__V1__Hello        h = RELAY__CONTROL__V1__HELLO__INIT;
    Relay__Control__V1__NodeMessage  m = RELAY__CONTROL__V1__NODE_MESSAGE__INIT;

    grpc_metadata_array_init(&s->md);
    grpc_metadata_array_init(&s->trailers);
    s->details = grpc_empty_slice();
    s->ended = 0;
    s->sending = 0;
    s->ack_pending = 0;
    s->pending = 0;

    s->call = grpc_channel_create_call(
                  chans[s->target * nchan + (s->id / ntargets) % nchan],
                  NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                  grpc_slice_from_static_string(
                      "/relay.control.v1.Node/Session"),
                  NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);

    snprintf(id, sizeof(id), "bench-%d", s->id);
    h.node_id = id;
    h.software = "control-propagation";
    h.applied_version = s->confirmed;
    m.msg_case = RELAY__CONTROL__V1__NODE_MESSAGE__MSG_HELLO;
    m.hello = &h;
    bench_pack(&m.base, &s->send_buf);

    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY
                   | GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = s->send_buf;
    ops[2].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[2].data.recv_initial_metadata.recv_initial_metadata = &s->md;
    s->sending = 1;
    s->pending += grpc_call_start_batch(s->call, ops, 3, &s->t_start, NULL)
                  == GRPC_CALL_OK;

    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &s->trailers;
    ops[0].data.recv_status_on_client.status = &s->status;
    ops[0].data.recv_status_on_client.status_details = &s->details;
    s->pending += grpc_call_start_batch(s->call, ops, 1, &s->t_status, NULL)
                  == GRPC_CALL_OK;

    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_MESSAGE;
    ops[0].data.recv_message.recv_message = &s->recv_buf;
    s->pending += grpc_call_start_batch(s->call, ops, 1, &s->t_recv, NULL)
                  == GRPC_CALL_OK;
}


static void
bench_ack(bench_sub_t *s, uint64_t v)
{
    grpc_op                          op;
    Relay__Control__V1__Ack          a = RELAY__CONTROL__V1__ACK__INIT;
    Relay__Control__V1__NodeMessage  m = RELAY__CONTROL__V1__NODE_MESSAGE__INIT;

    a.version = v;
    a.ok = 1;
    m.msg_case = RELAY__CONTROL__V1__NODE_MESSAGE__MSG_ACK;
    m.ack = &a;

    bench_pack(&m.base, &s->send_buf);

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = s->send_buf;

    s->acked = v;
    s->sending = 1;
    s->pending += grpc_call_start_batch(s->call, &op, 1, &s->t_send, NULL)
                  == GRPC_CALL_OK;
}


/*
 * round >= 0: start an Apply of a policy unique to the round; round -1:
 * read the finished Apply's response into *version.
 */

static int
bench_apply(grpc_channel *ch, int round, uint64_t *version)
{
    char                               comment[64], pattern[64];
    char                              *hops[1];
    grpc_op                            ops[6];
    grpc_slice                         sl;
    grpc_byte_buffer_reader            rd;
    Relay__Control__V1__Route          rt = RELAY__CONTROL__V1__ROUTE__INIT;
    Relay__Control__V1__Route         *rts[1];
    Relay__Control__V1__Policy         p = RELAY__CONTROL__V1__POLICY__INIT;
    Relay__Control__V1__ApplyRequest   req =
                                       RELAY__CONTROL__V1__APPLY_REQUEST__INIT;
    Relay__Control__V1__ApplyResponse *resp;

    static grpc_call             *call;
    static grpc_byte_buffer      *send, *recv;
    static grpc_metadata_array    md, trailers;
    static grpc_status_code       status;
    static grpc_slice             details;

    if (round < 0) {
        if (status != GRPC_STATUS_OK || recv == NULL) {
            char  *d = grpc_slice_to_c_string(details);
            fprintf(stderr, "Apply failed: %d %s\n", status, d);
            return -1;
        }

        grpc_byte_buffer_reader_init(&rd, recv);
        sl = grpc_byte_buffer_reader_readall(&rd);
        grpc_byte_buffer_reader_destroy(&rd);
        resp = relay__control__v1__apply_response__unpack(NULL,
                   GRPC_SLICE_LENGTH(sl), GRPC_SLICE_START_PTR(sl));
        grpc_slice_unref(sl);

        *version = resp ? resp->version : 0;

        if (resp) {
            relay__control__v1__apply_response__free_unpacked(resp, NULL);
        }

        grpc_byte_buffer_destroy(send);
        grpc_byte_buffer_destroy(recv);
        grpc_metadata_array_destroy(&md);
        grpc_metadata_array_destroy(&trailers);
        grpc_slice_unref(details);
        grpc_call_unref(call);

        return *version ? 0 : -1;
    }

    snprintf(comment, sizeof(comment), "bench round %d at %ld", round,
             (long) time(NULL));
    snprintf(pattern, sizeof(pattern), "r%d.example", round);
    hops[0] = "[192.0.2.1]:25";
    rt.pattern = pattern;
    rt.n_next_hops = 1;
    rt.next_hops = hops;
    rts[0] = &rt;
    p.comment = comment;
    p.n_routes = 1;
    p.routes = rts;
    req.policy = &p;

    bench_pack(&req.base, &send);
    recv = NULL;
    grpc_metadata_array_init(&md);
    grpc_metadata_array_init(&trailers);

    call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
               grpc_slice_from_static_string("/relay.control.v1.Admin/Apply"),
               NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);

    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY
                   | GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailers;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;

    if (grpc_call_start_batch(call, ops, 6, &apply_tag, NULL)
        != GRPC_CALL_OK)
    {
        fprintf(stderr, "cannot start Apply\n");
        return -1;
    }

    return 0;
}


static int
bench_pack(const ProtobufCMessage *m, grpc_byte_buffer **bb)
{
    grpc_slice  s;

    s = grpc_slice_malloc(protobuf_c_message_get_packed_size(m));
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);

    return 0;
}


static long
bench_rss(int pid)
{
    long   kb;
    char   path[64], line[256];
    FILE  *f;

    snprintf(path, sizeof(path), "/proc/%d/status", pid);

    f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }

    kb = -1;

    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) {
            break;
        }
    }

    fclose(f);

    return kb;
}


static double
bench_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static int
bench_cmp(const void *a, const void *b)
{
    double  x = *(const double *) a, y = *(const double *) b;

    return x < y ? -1 : x > y;
}
