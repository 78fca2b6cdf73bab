/*
 * Copyright (C) The relay authors
 */


/*
 * A client of etcd's v3 gRPC API on the server's completion queue: unary
 * calls (KV Range/Put/DeleteRange/Txn, Lease grant and revoke) and
 * bidirectional streams (Watch, LeaseKeepAlive), asynchronous like every
 * other call of controld: nothing here ever waits.  Knows nothing of what
 * controld keeps in etcd (ctld_store_etcd.c does).
 *
 * One channel per member: a call goes to the member in use, and when it
 * fails UNAVAILABLE (refused, reset) the next member becomes the one in
 * use and the call is made again there, so a call fails only when no
 * member answers, and then fast (no wait for ready; reconnection backoff
 * at most 1 s, so a member that comes back is used again soon).  An
 * attempt gets 1.5 s: a member without a leader (one died, the others
 * elect) holds a request until etcd's own timeout, several seconds, even
 * once a leader is elected, so it is made again, on the next member,
 * until the call's time (--store-timeout) is over.  Streams are started
 * on the member in use; their end is their owner's to handle (a watch
 * starts again from its revision).
 *
 * A call made again may have been applied the first time: puts and
 * deletes do not mind; the Txn that makes a version finds its own record
 * there and says so (ctld_store_etcd.c).
 *
 * Every batch's tag is a ctld_event_t of the call or stream; a call or
 * stream is freed when its last batch has been reaped.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc_security.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/support/alloc.h>

#include "ctld_codec.h"
#include "ctld_etcd.h"
#include "ctld_log.h"
#include "ctld_server.h"


#define CTLD_ETCD_MAX_MESSAGE   (64 * 1024 * 1024)
#define CTLD_ETCD_ATTEMPT       1500             /* ms */


typedef struct ctld_etcd_out_s  ctld_etcd_out_t;

struct ctld_etcd_out_s {
    ctld_etcd_out_t                  *next;
    grpc_byte_buffer                 *bb;
};


/* a unary call, made again on the next member when one fails */

typedef struct {
    ctld_event_t                      ev;
    const char                       *method;
    grpc_slice                        req;
    const ProtobufCMessageDescriptor *resp_desc;
    ctld_etcd_done_pt                 done;
    void                             *data;
    unsigned                          refused;  /* in a row: UNAVAILABLE */
    gpr_timespec                      until;    /* the call's end */

    grpc_call                        *call;
    grpc_byte_buffer                 *send;
    grpc_byte_buffer                 *recv;
    grpc_metadata_array               initial;
    grpc_metadata_array               trailing;
    grpc_status_code                  status;
    grpc_slice                        details;
} ctld_etcd_call_t;


struct ctld_etcd_stream_s {
    ctld_event_t                      ev_start;
    ctld_event_t                      ev_recv;
    ctld_event_t                      ev_send;
    ctld_event_t                      ev_status;
    const ProtobufCMessageDescriptor *resp_desc;
    ctld_etcd_recv_pt                 recv_handler;
    ctld_etcd_end_pt                  end_handler;
    void                             *data;

    grpc_call                        *call;
    grpc_byte_buffer                 *recv;
    grpc_byte_buffer                 *send;
    ctld_etcd_out_t                  *out_head;
    ctld_etcd_out_t                  *out_tail;
    grpc_metadata_array               initial;
    grpc_metadata_array               trailing;
    grpc_status_code                  status;
    grpc_slice                        details;
    unsigned                          refs;
    unsigned                          status_seen:1;
    unsigned                          cancelled:1;
};


static int ctld_etcd_start_call(ctld_etcd_call_t *ec);
static void ctld_etcd_call_done(ctld_event_t *ev, int ok);
static void ctld_etcd_call_free(ctld_etcd_call_t *ec);
static void ctld_etcd_failed(void);
static void ctld_etcd_stream_start(ctld_event_t *ev, int ok);
static void ctld_etcd_stream_recv(ctld_event_t *ev, int ok);
static void ctld_etcd_stream_sent(ctld_event_t *ev, int ok);
static void ctld_etcd_stream_status(ctld_event_t *ev, int ok);
static int ctld_etcd_stream_arm(ctld_etcd_stream_t *s);
static void ctld_etcd_stream_pump(ctld_etcd_stream_t *s);
static void ctld_etcd_stream_unref(ctld_etcd_stream_t *s);
static ProtobufCMessage *ctld_etcd_unpack(
    const ProtobufCMessageDescriptor *d, grpc_byte_buffer *bb);


static ctld_etcd_conf_t        ctld_etcd_conf;
static grpc_completion_queue  *ctld_etcd_cq;
static grpc_channel          **ctld_etcd_channels;
static size_t                  ctld_etcd_current;
static unsigned                ctld_etcd_calls;      /* in flight */
static int                     ctld_etcd_stopping;


int
ctld_etcd_init(const ctld_etcd_conf_t *conf)
{
    ctld_etcd_conf = *conf;

    if (conf->nendpoints == 0) {
        ctld_log("etcd: no endpoint");
        return -1;
    }

    return 0;
}


/* channels once gRPC runs: a member each, reconnecting within a second */

void
ctld_etcd_start(grpc_completion_queue *cq)
{
    size_t                       i;
    grpc_arg                     args[6];
    grpc_channel_args            cargs;
    grpc_channel_credentials    *creds;
    grpc_ssl_pem_key_cert_pair   kp;

    ctld_etcd_cq = cq;

    ctld_arg_int(&args[0], GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    ctld_arg_int(&args[1], GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    ctld_arg_int(&args[2], GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    ctld_arg_int(&args[3], GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                 CTLD_ETCD_MAX_MESSAGE);
    ctld_arg_int(&args[4], GRPC_ARG_KEEPALIVE_TIME_MS, 5000);
    ctld_arg_int(&args[5], GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 3000);

    cargs.num_args = 6;
    cargs.args = args;

    ctld_etcd_channels = calloc(ctld_etcd_conf.nendpoints,
                                sizeof(grpc_channel *));
    if (ctld_etcd_channels == NULL) {
        ctld_log("etcd: out of memory");
        return;
    }

    for (i = 0; i < ctld_etcd_conf.nendpoints; i++) {
        if (ctld_etcd_conf.ca) {
            kp.private_key = ctld_etcd_conf.key;
            kp.cert_chain = ctld_etcd_conf.cert;
            creds = grpc_ssl_credentials_create(ctld_etcd_conf.ca,
                                                ctld_etcd_conf.cert
                                                ? &kp : NULL, NULL, NULL);

        } else {
            creds = grpc_insecure_credentials_create();
        }

        ctld_etcd_channels[i] = grpc_channel_create(
                                    ctld_etcd_conf.endpoints[i], creds,
                                    &cargs);
        grpc_channel_credentials_release(creds);
    }
}


void
ctld_etcd_stop(void)
{
    ctld_etcd_stopping = 1;
}


unsigned
ctld_etcd_busy(void)
{
    return ctld_etcd_calls;
}


const char *
ctld_etcd_endpoint(void)
{
    return ctld_etcd_conf.endpoints[ctld_etcd_current];
}


void
ctld_etcd_close(void)
{
    size_t  i;

    for (i = 0; ctld_etcd_channels && i < ctld_etcd_conf.nendpoints; i++) {
        grpc_channel_destroy(ctld_etcd_channels[i]);
    }

    free(ctld_etcd_channels);
    ctld_etcd_channels = NULL;
}


/* the member in use did not answer: the next one is */

static void
ctld_etcd_failed(void)
{
    ctld_etcd_current = (ctld_etcd_current + 1) % ctld_etcd_conf.nendpoints;
}


/* ---------------------------------------------------------------- unary */


int
ctld_etcd_call(const char *method, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *resp, ctld_etcd_done_pt done,
    void *data)
{
    ctld_etcd_call_t  *ec;

    if (ctld_etcd_stopping || ctld_etcd_channels == NULL) {
        return -1;
    }

    ec = calloc(1, sizeof(ctld_etcd_call_t));
    if (ec == NULL) {
        return -1;
    }

    ctld_event_set(&ec->ev, ctld_etcd_call_done, ec);
    ec->method = method;
    ec->req = ctld_codec_pack_slice(req);
    ec->resp_desc = resp;
    ec->done = done;
    ec->data = data;
    ec->until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                             gpr_time_from_millis(ctld_etcd_conf.timeout_ms,
                                                  GPR_TIMESPAN));

    ctld_etcd_calls++;

    if (ctld_etcd_start_call(ec) != 0) {
        grpc_slice_unref(ec->req);
        free(ec);
        ctld_etcd_calls--;
        return -1;
    }

    return 0;
}


/* a Txn: resp is an Etcdserverpb__TxnResponse */

int
ctld_etcd_txn(const Etcdserverpb__TxnRequest *txn, ctld_etcd_done_pt done,
    void *data)
{
    return ctld_etcd_call(CTLD_ETCD_TXN, &txn->base,
                          &etcdserverpb__txn_response__descriptor, done,
                          data);
}


static int
ctld_etcd_start_call(ctld_etcd_call_t *ec)
{
    grpc_op           ops[6];
    gpr_timespec      deadline;
    grpc_call_error   rc;

    deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                            gpr_time_from_millis(CTLD_ETCD_ATTEMPT,
                                                 GPR_TIMESPAN));

    if (gpr_time_cmp(deadline, ec->until) > 0) {
        deadline = ec->until;
    }

    ec->call = grpc_channel_create_call(
                   ctld_etcd_channels[ctld_etcd_current], NULL,
                   GRPC_PROPAGATE_DEFAULTS, ctld_etcd_cq,
                   grpc_slice_from_static_string(ec->method), NULL, deadline,
                   NULL);
    if (ec->call == NULL) {
        return -1;
    }

    ec->send = grpc_raw_byte_buffer_create(&ec->req, 1);
    ec->recv = NULL;
    ec->status = GRPC_STATUS_UNKNOWN;
    ec->details = grpc_empty_slice();
    grpc_metadata_array_init(&ec->initial);
    grpc_metadata_array_init(&ec->trailing);

    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = ec->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &ec->initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &ec->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &ec->trailing;
    ops[5].data.recv_status_on_client.status = &ec->status;
    ops[5].data.recv_status_on_client.status_details = &ec->details;

    rc = grpc_call_start_batch(ec->call, ops, 6, &ec->ev, NULL);
    if (rc != GRPC_CALL_OK) {
        ctld_log("etcd %s: start_batch failed: %d", ec->method, rc);
        ctld_etcd_call_free(ec);
        return -1;
    }

    return 0;
}


static void
ctld_etcd_call_done(ctld_event_t *ev, int ok)
{
    ctld_etcd_call_t  *ec = ev->data;

    char              *details;
    ProtobufCMessage  *m;
    grpc_status_code   status;

    status = ok ? ec->status : GRPC_STATUS_UNAVAILABLE;
    m = NULL;

    if (status == GRPC_STATUS_OK) {
        m = ctld_etcd_unpack(ec->resp_desc, ec->recv);
        if (m == NULL) {
            status = GRPC_STATUS_INTERNAL;
        }
    }

    details = grpc_slice_to_c_string(ec->details);
    ctld_etcd_call_free(ec);

    /*
     * A member that does not answer: the next one.  Refused everywhere:
     * fail now; a member that holds the call: again while there is time.
     */

    if (status == GRPC_STATUS_UNAVAILABLE
        || status == GRPC_STATUS_DEADLINE_EXCEEDED)
    {
        ctld_etcd_failed();

        ec->refused = (status == GRPC_STATUS_UNAVAILABLE) ? ec->refused + 1
                                                         : 0;

        if (ec->refused < ctld_etcd_conf.nendpoints && !ctld_etcd_stopping
            && gpr_time_cmp(gpr_now(GPR_CLOCK_MONOTONIC), ec->until) < 0
            && ctld_etcd_start_call(ec) == 0)
        {
            gpr_free(details);
            return;
        }
    }

    ctld_etcd_calls--;

    ec->done(ec->data, status,
             status == GRPC_STATUS_INTERNAL && details[0] == '\0'
             ? "an undecodable answer" : details, m);

    gpr_free(details);
    grpc_slice_unref(ec->req);
    free(ec);
}


/* the call's gRPC parts (ec itself may be used again) */

static void
ctld_etcd_call_free(ctld_etcd_call_t *ec)
{
    if (ec->call) {
        grpc_call_unref(ec->call);
        ec->call = NULL;
    }

    if (ec->send) {
        grpc_byte_buffer_destroy(ec->send);
        ec->send = NULL;
    }

    if (ec->recv) {
        grpc_byte_buffer_destroy(ec->recv);
        ec->recv = NULL;
    }

    grpc_slice_unref(ec->details);
    ec->details = grpc_empty_slice();
    grpc_metadata_array_destroy(&ec->initial);
    grpc_metadata_array_destroy(&ec->trailing);
}


static ProtobufCMessage *
ctld_etcd_unpack(const ProtobufCMessageDescriptor *d, grpc_byte_buffer *bb)
{
    char  err[128];

    if (bb == NULL) {
        return NULL;
    }

    return ctld_codec_unpack(d, bb, err, sizeof(err));
}


/* ---------------------------------------------------------------- streams */


ctld_etcd_stream_t *
ctld_etcd_stream(const char *method, const ProtobufCMessageDescriptor *resp,
    ctld_etcd_recv_pt recv, ctld_etcd_end_pt end, void *data)
{
    grpc_op              ops[2];
    ctld_etcd_stream_t  *s;

    if (ctld_etcd_stopping || ctld_etcd_channels == NULL) {
        return NULL;
    }

    s = calloc(1, sizeof(ctld_etcd_stream_t));
    if (s == NULL) {
        return NULL;
    }

    ctld_event_set(&s->ev_start, ctld_etcd_stream_start, s);
    ctld_event_set(&s->ev_recv, ctld_etcd_stream_recv, s);
    ctld_event_set(&s->ev_send, ctld_etcd_stream_sent, s);
    ctld_event_set(&s->ev_status, ctld_etcd_stream_status, s);
    s->resp_desc = resp;
    s->recv_handler = recv;
    s->end_handler = end;
    s->data = data;
    s->details = grpc_empty_slice();
    grpc_metadata_array_init(&s->initial);
    grpc_metadata_array_init(&s->trailing);

    s->call = grpc_channel_create_call(ctld_etcd_channels[ctld_etcd_current],
                                       NULL, GRPC_PROPAGATE_DEFAULTS,
                                       ctld_etcd_cq,
                                       grpc_slice_from_static_string(method),
                                       NULL,
                                       gpr_inf_future(GPR_CLOCK_REALTIME),
                                       NULL);
    if (s->call == NULL) {
        free(s);
        return NULL;
    }

    ctld_etcd_calls++;

    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[1].data.recv_initial_metadata.recv_initial_metadata = &s->initial;

    if (grpc_call_start_batch(s->call, ops, 2, &s->ev_start, NULL)
        == GRPC_CALL_OK)
    {
        s->refs++;
    }

    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &s->trailing;
    ops[0].data.recv_status_on_client.status = &s->status;
    ops[0].data.recv_status_on_client.status_details = &s->details;

    if (grpc_call_start_batch(s->call, ops, 1, &s->ev_status, NULL)
        == GRPC_CALL_OK)
    {
        s->refs++;
    }

    if (ctld_etcd_stream_arm(s) != 0) {
        grpc_call_cancel(s->call, NULL);
    }

    return s;
}


static int
ctld_etcd_stream_arm(ctld_etcd_stream_t *s)
{
    grpc_op  op;

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &s->recv;

    if (grpc_call_start_batch(s->call, &op, 1, &s->ev_recv, NULL)
        != GRPC_CALL_OK)
    {
        return -1;
    }

    s->refs++;

    return 0;
}


int
ctld_etcd_send(ctld_etcd_stream_t *s, const ProtobufCMessage *m)
{
    ctld_etcd_out_t  *out;

    if (s->status_seen || s->cancelled) {
        return -1;
    }

    out = calloc(1, sizeof(ctld_etcd_out_t));
    if (out == NULL) {
        return -1;
    }

    out->bb = ctld_codec_pack(m);

    if (s->out_tail) {
        s->out_tail->next = out;

    } else {
        s->out_head = out;
    }

    s->out_tail = out;

    ctld_etcd_stream_pump(s);

    return 0;
}


/* one SEND_MESSAGE in flight; the rest waits its turn */

static void
ctld_etcd_stream_pump(ctld_etcd_stream_t *s)
{
    grpc_op           op;
    ctld_etcd_out_t  *out;

    if (s->send || s->out_head == NULL || s->status_seen) {
        return;
    }

    out = s->out_head;
    s->out_head = out->next;
    if (s->out_head == NULL) {
        s->out_tail = NULL;
    }

    s->send = out->bb;
    free(out);

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = s->send;

    if (grpc_call_start_batch(s->call, &op, 1, &s->ev_send, NULL)
        != GRPC_CALL_OK)
    {
        grpc_byte_buffer_destroy(s->send);
        s->send = NULL;
        grpc_call_cancel(s->call, NULL);
        return;
    }

    s->refs++;
}


void
ctld_etcd_cancel(ctld_etcd_stream_t *s)
{
    if (!s->cancelled) {
        s->cancelled = 1;
        grpc_call_cancel(s->call, NULL);
    }
}


static void
ctld_etcd_stream_start(ctld_event_t *ev, int ok)
{
    ctld_etcd_stream_unref(ev->data);
}


static void
ctld_etcd_stream_recv(ctld_event_t *ev, int ok)
{
    ctld_etcd_stream_t  *s = ev->data;

    grpc_byte_buffer  *bb;
    ProtobufCMessage  *m;

    bb = s->recv;
    s->recv = NULL;

    if (ok && bb != NULL && !s->cancelled) {
        m = ctld_etcd_unpack(s->resp_desc, bb);

        if (m != NULL) {
            s->recv_handler(s->data, m);

        } else {
            ctld_etcd_cancel(s);
        }

        if (!s->cancelled && ctld_etcd_stream_arm(s) != 0) {
            ctld_etcd_cancel(s);
        }
    }

    if (bb) {
        grpc_byte_buffer_destroy(bb);
    }

    ctld_etcd_stream_unref(s);
}


static void
ctld_etcd_stream_sent(ctld_event_t *ev, int ok)
{
    ctld_etcd_stream_t  *s = ev->data;

    grpc_byte_buffer_destroy(s->send);
    s->send = NULL;

    if (ok) {
        ctld_etcd_stream_pump(s);
    }

    ctld_etcd_stream_unref(s);
}


static void
ctld_etcd_stream_status(ctld_event_t *ev, int ok)
{
    ctld_etcd_stream_t  *s = ev->data;

    s->status_seen = 1;

    if (!ok) {
        s->status = GRPC_STATUS_UNAVAILABLE;
    }

    /* the other batches finish now */

    grpc_call_cancel(s->call, NULL);

    ctld_etcd_stream_unref(s);
}


/* the last batch reaped: the owner hears of the end, the stream goes */

static void
ctld_etcd_stream_unref(ctld_etcd_stream_t *s)
{
    char             *details;
    ctld_etcd_out_t  *out;

    if (--s->refs) {
        return;
    }

    if (s->status == GRPC_STATUS_UNAVAILABLE && !s->cancelled) {
        ctld_etcd_failed();
    }

    details = grpc_slice_to_c_string(s->details);

    s->end_handler(s->data, s->cancelled ? GRPC_STATUS_CANCELLED : s->status,
                   details);

    gpr_free(details);

    while (s->out_head) {
        out = s->out_head;
        s->out_head = out->next;
        grpc_byte_buffer_destroy(out->bb);
        free(out);
    }

    grpc_slice_unref(s->details);
    grpc_metadata_array_destroy(&s->initial);
    grpc_metadata_array_destroy(&s->trailing);
    grpc_call_unref(s->call);
    free(s);

    ctld_etcd_calls--;
}


/* for calls whose answer does not matter (the lease ends their keys) */

void
ctld_etcd_ignore(void *data, grpc_status_code status, const char *details,
    ProtobufCMessage *resp)
{
    if (resp) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
}


/* a request of a Txn: kind the case of request, a Put, Range or Delete */

void
ctld_etcd_op(Etcdserverpb__RequestOp *op,
    Etcdserverpb__RequestOp__RequestCase kind, void *request)
{
    etcdserverpb__request_op__init(op);

    op->request_case = kind;

    switch (kind) {

    case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE:
        op->request_range = request;
        break;

    case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT:
        op->request_put = request;
        break;

    default:
        op->request_delete_range = request;
        break;
    }
}


/* m packed into a malloc()ed value; out is left alone on failure */

int
ctld_etcd_pack(const ProtobufCMessage *m, ProtobufCBinaryData *out)
{
    size_t    len;
    uint8_t  *buf;

    len = protobuf_c_message_get_packed_size(m);

    buf = malloc(len ? len : 1);
    if (buf == NULL) {
        return -1;
    }

    protobuf_c_message_pack(m, buf);

    out->data = buf;
    out->len = len;

    return 0;
}


/* the Compare "the key's TARGET is value" of a Txn */

void
ctld_etcd_compare(Etcdserverpb__Compare *cmp, const char *key,
    Etcdserverpb__Compare__CompareTarget target, int64_t value)
{
    etcdserverpb__compare__init(cmp);

    cmp->result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
    cmp->target = target;
    cmp->key.data = (uint8_t *) key;
    cmp->key.len = strlen(key);

    if (target == ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE) {
        cmp->target_union_case =
                          ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
        cmp->create_revision = value;

    } else {
        cmp->target_union_case =
                             ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
        cmp->mod_revision = value;
    }
}


void
ctld_etcd_prefix_end(const char *prefix, ProtobufCBinaryData *end)
{
    size_t  len;

    len = strlen(prefix);

    end->data = malloc(len ? len : 1);
    end->len = len;

    if (end->data == NULL) {
        end->len = 0;
        return;
    }

    memcpy(end->data, prefix, len);

    while (len > 0) {
        if (end->data[len - 1] < 0xff) {
            end->data[len - 1]++;
            end->len = len;
            return;
        }

        len--;
    }

    end->data[0] = '\0';                  /* every key from prefix on */
    end->len = 1;
}
