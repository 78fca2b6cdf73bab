
/*
 * Copyright (C) The relay authors
 */


/*
 * The node's side of the control plane: one Node.Session stream to
 * controld per node, whatever the worker count.  Worker 0 owns it.
 *
 * A thread of its own runs gRPC (a blocking API with threads of its own):
 * it says hello, receives policy snapshots and queue commands, and sends
 * ACK/NACK, command results and periodic status.  Snapshots are validated
 * and written to disk (last-known-good) by that thread, which may block;
 * everything else goes to the event loop through a module-owned eventfd
 * (ngx_notify() belongs to the thread pool), with mutex-protected lists in
 * both directions:
 *
 *   inbox   thread -> loop: validated snapshots, commands, log lines
 *   outbox  loop -> thread: ACK/NACK and command results to send
 *
 * The loop publishes a snapshot into shared memory for every worker and
 * answers ACK; queue commands run as thread-pool tasks over the spool,
 * on lib/relay_queue.c, and leave a note in <spool>/notes/ for the
 * workers.  The thread never calls nginx functions (no pools, no log): it
 * reports through the inbox.  Every worker hears of the note through
 * inotify and reads the named queue files again (ngx_relay_sched.c).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <nginx.h>
#include <ngx_thread_pool.h>
#include <ngx_relay.h>
#include <ngx_relay_spool.h>
#include <ngx_relay_control.h>
#include <ngx_relay_dkim.h>
#include <ngx_relay_account.h>
#include <relay_queue.h>

#include <pthread.h>
#include <sys/eventfd.h>
#include <arpa/inet.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include <relay_policy.h>


#define NGX_RELAY_CONTROL_TICK          20       /* ms, thread's CQ poll */
#define NGX_RELAY_CONTROL_BACKOFF_MIN   1000     /* ms */
#define NGX_RELAY_CONTROL_BACKOFF_MAX   30000
#define NGX_RELAY_CONTROL_CONNECT       5000     /* ms, then the next one */
#define NGX_RELAY_CONTROL_MAX_ENTRIES   10000    /* queue list */
#define NGX_RELAY_CONTROL_SESSION \
    "/relay.control.v1.Node/Session"

#define NGX_RELAY_CONTROL_LOG           0
#define NGX_RELAY_CONTROL_POLICY        1
#define NGX_RELAY_CONTROL_COMMAND       2


typedef struct ngx_relay_control_msg_s  ngx_relay_control_msg_t;

struct ngx_relay_control_msg_s {
    ngx_relay_control_msg_t   *next;
    ngx_uint_t                 type;
    ngx_uint_t                 level;        /* LOG */
    uint64_t                   version;      /* POLICY */
    size_t                     len;
    u_char                     data[1];      /* malloc()ed with the rest */
};


typedef struct {
    ngx_relay_control_msg_t   *head;
    ngx_relay_control_msg_t  **tail;
} ngx_relay_control_list_t;


typedef struct {
    /* set before the thread starts, read-only after */
    char                     **targets;      /* controld replicas */
    ngx_uint_t                 ntargets;
    char                      *target;       /* all of them, for logs */
    char                      *node_id;
    relay_scope_node_t         node;         /* id, labels: conf's strings */
    char                     **own;          /* nginx.conf's pool names */
    size_t                     nown;
    uint64_t                   incarnation;  /* start, in microseconds */
    char                      *state;
    char                      *cert;
    char                      *key;
    char                      *ca;
    ngx_uint_t                 insecure;
    ngx_msec_t                 status_interval;
    ngx_uint_t                 workers;
    ngx_relay_policy_shm_t    *shm;

    pthread_t                  thread;
    pthread_mutex_t            mutex;
    int                        efd;
    ngx_connection_t          *conn;         /* the eventfd on the loop */

    /* under mutex */
    ngx_relay_control_list_t   inbox;
    ngx_relay_control_list_t   outbox;
    grpc_call                 *call;
    ngx_uint_t                 stop;
    ngx_uint_t                 running;

    ngx_relay_policy_t        *policy;
    ngx_relay_sched_t         *sched;
    ngx_log_t                 *log;
} ngx_relay_control_t;


typedef struct {
    ngx_relay_control_t                 *ctl;
    Relay__Control__V1__Command         *cmd;
    Relay__Control__V1__CommandResult    res;
    Relay__Control__V1__QueueEntry     **entries;
    size_t                               nentries;
    char                                 error[512];
    int                                  queue_fd;
    relay_queue_note_t                   note;
    ngx_err_t                            note_err;
} ngx_relay_control_task_t;


/* the thread */
static void *ngx_relay_control_thread(void *data);
static grpc_channel_credentials *ngx_relay_control_credentials(
    ngx_relay_control_t *ctl);
static void ngx_relay_control_session(ngx_relay_control_t *ctl,
    grpc_channel *ch, const char *target, grpc_completion_queue *cq);
static ngx_uint_t ngx_relay_control_recv(grpc_call *call,
    grpc_byte_buffer **recv);
static void ngx_relay_control_received(ngx_relay_control_t *ctl,
    grpc_byte_buffer *bb);
static void ngx_relay_control_snapshot(ngx_relay_control_t *ctl,
    Relay__Control__V1__Policy *pp);
static int ngx_relay_control_node_check(ngx_relay_control_t *ctl,
    Relay__Control__V1__Policy *pp, size_t len, char *err, size_t errlen);
static int ngx_relay_control_persist(ngx_relay_control_t *ctl, u_char *data,
    size_t len, char *err, size_t errlen);
static grpc_byte_buffer *ngx_relay_control_hello(ngx_relay_control_t *ctl);
static void ngx_relay_control_status(ngx_relay_control_t *ctl);
static grpc_byte_buffer *ngx_relay_control_pack(
    const ProtobufCMessage *m);
static void ngx_relay_control_say(ngx_relay_control_t *ctl,
    ngx_uint_t level, const char *fmt, ...);
static void ngx_relay_control_merge_dests(ngx_relay_dest_figure_t *top,
    ngx_relay_counters_t *c);
static void ngx_relay_control_ack(ngx_relay_control_t *ctl,
    uint64_t version, int ok, const char *reason);

/* both sides */
static void ngx_relay_control_put(ngx_relay_control_t *ctl,
    ngx_relay_control_list_t *list, ngx_relay_control_msg_t *m,
    ngx_uint_t wake);
static ngx_relay_control_msg_t *ngx_relay_control_msg(ngx_uint_t type,
    const void *data, size_t len);
static ngx_relay_control_msg_t *ngx_relay_control_take(
    ngx_relay_control_t *ctl, ngx_relay_control_list_t *list);
static void ngx_relay_control_send(ngx_relay_control_t *ctl,
    Relay__Control__V1__NodeMessage *nm);

/* the loop */
static void ngx_relay_control_wakeup(ngx_event_t *ev);
static void ngx_relay_control_apply(ngx_relay_control_t *ctl,
    ngx_relay_control_msg_t *m);
static void ngx_relay_control_command(ngx_relay_control_t *ctl,
    ngx_relay_control_msg_t *m);
static void ngx_relay_control_command_thread(void *data, ngx_log_t *log);
static void ngx_relay_control_command_done(ngx_event_t *ev);
static void ngx_relay_control_stop(ngx_relay_control_t *ctl);
static void ngx_relay_control_tick(ngx_event_t *ev);

/* queue commands, in the thread pool */
static ngx_int_t ngx_relay_control_action(
    Relay__Control__V1__QueueAction action);
static void ngx_relay_control_list(ngx_relay_control_task_t *t);
static void ngx_relay_control_entry(ngx_relay_control_task_t *t,
    relay_queue_entry_t *e);
static void ngx_relay_control_act_all(ngx_relay_control_task_t *t);
static int ngx_relay_control_act_each(relay_queue_entry_t *e, void *data);
static void ngx_relay_control_act(ngx_relay_control_task_t *t,
    const char *name, ngx_uint_t named);
static void ngx_relay_control_note(ngx_relay_control_task_t *t);
static void ngx_relay_control_fail(ngx_relay_control_task_t *t,
    const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ngx_relay_control_say_why(ngx_relay_control_task_t *t,
    const char *name, const char *why);


static ngx_relay_control_t  *ngx_relay_control;
static ngx_event_t           ngx_relay_control_tick_event;
static ngx_relay_sched_t    *ngx_relay_control_sched;
static ngx_relay_policy_t   *ngx_relay_control_policy;


/* ------------------------------------------------------------ config */


/*
 * Every zone starts with nginx's slab pool, whose mutex the master unlocks
 * for a worker that exits: the snapshot lives in one large slab
 * allocation, pointed to by the pool's data.
 */

static ngx_int_t
ngx_relay_control_init_zone(ngx_shm_zone_t *zone, void *data)
{
    ngx_relay_control_conf_t  *ccf = zone->data;

    size_t                   size;
    ngx_slab_pool_t         *shpool;
    ngx_relay_policy_shm_t  *shm;

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (data) {
        zone->data = data;              /* a reload: keep what is there */
        return NGX_OK;
    }

    zone->data = ccf;

    if (zone->shm.exists) {
        return NGX_OK;
    }

    /* as much as the slab allocator can give in one piece */

    shm = NULL;

    for (size = zone->shm.size - 4 * ngx_pagesize;
         size > 16 * ngx_pagesize;
         size -= ngx_pagesize)
    {
        shm = ngx_slab_alloc(shpool, size);
        if (shm) {
            break;
        }
    }

    if (shm == NULL) {
        ngx_log_error(NGX_LOG_EMERG, zone->shm.log, 0,
                      "relay control zone too small");
        return NGX_ERROR;
    }

    ngx_memzero(shm, offsetof(ngx_relay_policy_shm_t, data));
    shm->size = size - offsetof(ngx_relay_policy_shm_t, data);
    shm->started = ngx_time();
    shpool->data = shm;

    (void) ngx_relay_policy_load_file(shm, &ccf->state, ccf->policy,
                                      &ccf->node, zone->shm.log);

    return NGX_OK;
}


u_char *
ngx_relay_control_read_pem(ngx_conf_t *cf, ngx_str_t *path)
{
    u_char           *buf;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_file_info_t   fi;

    fd = ngx_open_file(path->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", path);
        return NULL;
    }

    buf = NULL;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
        || ngx_file_size(&fi) > 1024 * 1024)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"%V\" is not a certificate or key file", path);
        goto done;
    }

    buf = ngx_pnalloc(cf->pool, ngx_file_size(&fi) + 1);
    if (buf == NULL) {
        goto done;
    }

    n = ngx_read_fd(fd, buf, ngx_file_size(&fi));
    if (n != (ssize_t) ngx_file_size(&fi)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "cannot read \"%V\"", path);
        buf = NULL;
        goto done;
    }

    buf[n] = '\0';

done:

    (void) ngx_close_file(fd);

    return buf;
}


ngx_int_t
ngx_relay_control_add_zone(ngx_conf_t *cf, ngx_relay_control_conf_t *ccf,
    ngx_relay_policy_t *p, void *tag)
{
    ngx_str_t        name = ngx_string("relay_control");
    ngx_shm_zone_t  *zone;

    zone = ngx_shared_memory_add(cf, &name, ccf->zone_size, tag);
    if (zone == NULL) {
        return NGX_ERROR;
    }

    zone->init = ngx_relay_control_init_zone;
    zone->data = ccf;

    p->zone = zone;
    ccf->policy = p;

    return NGX_OK;
}


/* ------------------------------------------------------------ process */


static char *
ngx_relay_control_cstr(ngx_str_t *s)
{
    char  *p;

    if (s->len == 0) {
        return NULL;
    }

    p = malloc(s->len + 1);
    if (p) {
        ngx_memcpy(p, s->data, s->len);
        p[s->len] = '\0';
    }

    return p;
}


ngx_int_t
ngx_relay_control_init_process(ngx_relay_control_conf_t *ccf,
    ngx_relay_policy_t *p, ngx_relay_sched_t *sc, ngx_cycle_t *cycle)
{
    int                   err;
    char                 *q;
    size_t                len;
    sigset_t              all, old;
    ngx_str_t            *t;
    ngx_uint_t            i;
    ngx_event_t          *rev;
    ngx_core_conf_t      *cocf;
    ngx_connection_t     *c;
    struct timeval        tv;
    ngx_relay_control_t  *ctl;

    if (p->zone == NULL) {
        return NGX_OK;
    }

    /* every worker: an early look at the snapshot, then one a second */

    ngx_relay_control_sched = sc;
    ngx_relay_control_policy = p;

    ngx_relay_control_tick_event.handler = ngx_relay_control_tick;
    ngx_relay_control_tick_event.log = cycle->log;
    ngx_relay_control_tick_event.cancelable = 1;
    ngx_add_timer(&ngx_relay_control_tick_event, 1000);

    (void) ngx_relay_policy_version(p);

    if (ngx_process == NGX_PROCESS_WORKER && ngx_worker != 0) {
        return NGX_OK;
    }

    cocf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);

    ctl = calloc(1, sizeof(ngx_relay_control_t));
    if (ctl == NULL) {
        return NGX_ERROR;
    }

    t = ccf->targets->elts;
    ctl->ntargets = ccf->targets->nelts;
    ctl->targets = calloc(ctl->ntargets, sizeof(char *));

    for (i = 0, len = 1; i < ctl->ntargets; i++) {
        len += t[i].len + 1;
    }

    ctl->target = malloc(len);

    if (ctl->targets == NULL || ctl->target == NULL) {
        return NGX_ERROR;
    }

    for (i = 0, q = ctl->target; i < ctl->ntargets; i++) {
        ctl->targets[i] = (char *) t[i].data;       /* the cycle's pool */
        q = (char *) ngx_sprintf((u_char *) q, "%s%V", i ? "," : "", &t[i]);
    }

    *q = '\0';

    ctl->node = ccf->node;
    ctl->own = ngx_relay_policy_pool_names(p, &ctl->nown);
    if (ctl->own == NULL) {
        return NGX_ERROR;
    }

    ngx_gettimeofday(&tv);
    ctl->incarnation = (uint64_t) tv.tv_sec * 1000000 + tv.tv_usec;

    ctl->node_id = ngx_relay_control_cstr(&ccf->node_id);
    ctl->state = ngx_relay_control_cstr(&ccf->state);
    ctl->cert = (char *) ccf->certificate_pem;
    ctl->key = (char *) ccf->certificate_key_pem;
    ctl->ca = (char *) ccf->trusted_certificate_pem;
    ctl->insecure = ccf->insecure;
    ctl->status_interval = ccf->status_interval;
    ctl->workers = ngx_process == NGX_PROCESS_SINGLE
                   ? 1 : (ngx_uint_t) cocf->worker_processes;
    ctl->shm = ngx_relay_policy_shm(p);
    ctl->policy = p;
    ctl->sched = sc;
    ctl->log = cycle->log;
    ctl->inbox.tail = &ctl->inbox.head;
    ctl->outbox.tail = &ctl->outbox.head;

    if (ctl->target == NULL || ctl->node_id == NULL || ctl->state == NULL) {
        return NGX_ERROR;
    }

    if (pthread_mutex_init(&ctl->mutex, NULL) != 0) {
        return NGX_ERROR;
    }

    ctl->efd = eventfd(0, EFD_NONBLOCK|EFD_CLOEXEC);
    if (ctl->efd == -1) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                      "relay control: eventfd() failed");
        return NGX_ERROR;
    }

    c = ngx_get_connection(ctl->efd, cycle->log);
    if (c == NULL) {
        (void) close(ctl->efd);
        return NGX_ERROR;
    }

    /* idle: a graceful shutdown tells us through c->close, at once */

    c->idle = 1;
    c->data = ctl;
    ctl->conn = c;

    rev = c->read;
    rev->handler = ngx_relay_control_wakeup;
    rev->log = cycle->log;

    if (ngx_add_event(rev, NGX_READ_EVENT, 0) != NGX_OK) {
        ngx_free_connection(c);
        (void) close(ctl->efd);
        return NGX_ERROR;
    }

    ngx_reusable_connection(c, 1);

    /* gRPC's threads must never take nginx's signals */

    sigfillset(&all);
    (void) pthread_sigmask(SIG_BLOCK, &all, &old);

    grpc_init();
    err = pthread_create(&ctl->thread, NULL, ngx_relay_control_thread, ctl);

    (void) pthread_sigmask(SIG_SETMASK, &old, NULL);

    if (err != 0) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, err,
                      "relay control: pthread_create() failed");
        grpc_shutdown();
        return NGX_ERROR;
    }

    ctl->running = 1;
    ngx_relay_control = ctl;

    ngx_relay_metrics_control(NGX_RELAY_METRICS_CONTROL_ON,
                              ctl->shm->version);

    ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                  "relay control: node \"%s\" subscribes to %s",
                  ctl->node_id, ctl->target);

    return NGX_OK;
}


void
ngx_relay_control_exit_process(ngx_cycle_t *cycle)
{
    ngx_relay_control_t      *ctl;
    ngx_relay_control_msg_t  *m;

    if (ngx_relay_control_tick_event.timer_set) {
        ngx_del_timer(&ngx_relay_control_tick_event);
    }

    ctl = ngx_relay_control;
    if (ctl == NULL) {
        return;
    }

    ngx_relay_control_stop(ctl);

    if (ctl->running) {
        (void) pthread_join(ctl->thread, NULL);
        ctl->running = 0;
        grpc_shutdown_blocking();
    }

    if (ctl->conn) {
        ngx_close_connection(ctl->conn);  /* closes the eventfd */
        ctl->conn = NULL;
    }

    while ((m = ngx_relay_control_take(ctl, &ctl->inbox))) {
        free(m);
    }

    while ((m = ngx_relay_control_take(ctl, &ctl->outbox))) {
        free(m);
    }

    ngx_relay_control = NULL;
}


static void
ngx_relay_control_stop(ngx_relay_control_t *ctl)
{
    (void) pthread_mutex_lock(&ctl->mutex);

    ctl->stop = 1;

    if (ctl->call) {
        grpc_call_cancel(ctl->call, NULL);
    }

    (void) pthread_mutex_unlock(&ctl->mutex);
}


/* ------------------------------------------------------------ thread */


static void *
ngx_relay_control_thread(void *data)
{
    ngx_relay_control_t  *ctl = data;

    grpc_arg                   args[5];
    ngx_uint_t                 i, stop, cur;
    ngx_msec_t                 backoff, wait;
    grpc_channel             **ch;
    grpc_event                 ev;
    grpc_channel_args          chargs;
    gpr_timespec               started;
    grpc_completion_queue     *cq;
    grpc_channel_credentials  *creds;

    creds = NULL;
    backoff = NGX_RELAY_CONTROL_BACKOFF_MIN;

    creds = ngx_relay_control_credentials(ctl);
    if (creds == NULL) {
        ngx_relay_control_say(ctl, NGX_LOG_ALERT,
                              "relay control: no channel credentials");
        return NULL;
    }

    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_KEEPALIVE_TIME_MS;
    args[0].value.integer = 30000;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_KEEPALIVE_TIMEOUT_MS;
    args[1].value.integer = 10000;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS;
    args[2].value.integer = 1;
    args[3].type = GRPC_ARG_INTEGER;
    args[3].key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[3].value.integer = 5000;
    args[4].type = GRPC_ARG_INTEGER;
    args[4].key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
    args[4].value.integer = 500;

    chargs.num_args = 5;
    chargs.args = args;

    /* a channel per controld replica; a broken stream goes to the next */

    ch = calloc(ctl->ntargets, sizeof(grpc_channel *));
    if (ch == NULL) {
        grpc_channel_credentials_release(creds);
        return NULL;
    }

    for (i = 0; i < ctl->ntargets; i++) {
        ch[i] = grpc_channel_create(ctl->targets[i], creds, &chargs);
    }

    cq = grpc_completion_queue_create_for_next(NULL);

    backoff = NGX_RELAY_CONTROL_BACKOFF_MIN;
    cur = 0;

    for ( ;; ) {
        started = gpr_now(GPR_CLOCK_MONOTONIC);

        ngx_relay_control_session(ctl, ch[cur], ctl->targets[cur], cq);

        cur = (cur + 1) % ctl->ntargets;

        (void) pthread_mutex_lock(&ctl->mutex);
        stop = ctl->stop;
        (void) pthread_mutex_unlock(&ctl->mutex);

        if (stop) {
            break;
        }

        /* a session that lasted resets the backoff; jitter spreads a fleet */

        if (gpr_time_cmp(gpr_time_sub(gpr_now(GPR_CLOCK_MONOTONIC), started),
                         gpr_time_from_seconds(30, GPR_TIMESPAN))
            > 0)
        {
            backoff = NGX_RELAY_CONTROL_BACKOFF_MIN;
        }

        wait = backoff / 2 + (ngx_msec_t) (random() % (backoff + 1));

        ngx_relay_control_say(ctl, NGX_LOG_NOTICE,
                              "relay control: reconnecting in %ums%s%s",
                              (unsigned) wait,
                              ctl->ntargets > 1 ? " to " : "",
                              ctl->ntargets > 1 ? ctl->targets[cur] : "");

        for (i = 0; i < wait; i += 50) {
            (void) pthread_mutex_lock(&ctl->mutex);
            stop = ctl->stop;
            (void) pthread_mutex_unlock(&ctl->mutex);

            if (stop) {
                break;
            }

            (void) usleep(50 * 1000);
        }

        if (stop) {
            break;
        }

        backoff = ngx_min(backoff * 2, NGX_RELAY_CONTROL_BACKOFF_MAX);
    }

    for (i = 0; i < ctl->ntargets; i++) {
        grpc_channel_destroy(ch[i]);
    }

    free(ch);

    grpc_completion_queue_shutdown(cq);

    do {
        ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME),
                                        NULL);
    } while (ev.type != GRPC_QUEUE_SHUTDOWN);

    grpc_completion_queue_destroy(cq);
    grpc_channel_credentials_release(creds);

    return NULL;
}


static grpc_channel_credentials *
ngx_relay_control_credentials(ngx_relay_control_t *ctl)
{
    grpc_ssl_pem_key_cert_pair  kp;

    if (ctl->insecure) {
        return grpc_insecure_credentials_create();
    }

    kp.private_key = ctl->key;
    kp.cert_chain = ctl->cert;

    return grpc_ssl_credentials_create(ctl->ca, &kp, NULL, NULL);
}


/* tags of the batches in flight */

#define NGX_RELAY_TAG_START    ((void *) 1)
#define NGX_RELAY_TAG_STATUS   ((void *) 2)
#define NGX_RELAY_TAG_SEND     ((void *) 3)
#define NGX_RELAY_TAG_RECV     ((void *) 4)


static void
ngx_relay_control_session(ngx_relay_control_t *ctl, grpc_channel *ch,
    const char *target, grpc_completion_queue *cq)
{
    int                        status_done, sending, connected;
    size_t                     i;
    char                      *details;
    grpc_op                    ops[2];
    grpc_call                 *call;
    grpc_slice                 method, status_details;
    grpc_event                 ev;
    ngx_uint_t                 pending, cancelled, stop;
    gpr_timespec               next_status, now, give_up;
    grpc_byte_buffer          *recv, *send;
    grpc_status_code           status;
    grpc_metadata_array        initial, trailing;
    ngx_relay_control_msg_t   *m;

    method = grpc_slice_from_static_string(NGX_RELAY_CONTROL_SESSION);

    call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                    method, NULL,
                                    gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (call == NULL) {
        return;
    }

    (void) pthread_mutex_lock(&ctl->mutex);
    ctl->call = call;
    stop = ctl->stop;
    (void) pthread_mutex_unlock(&ctl->mutex);

    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailing);

    recv = NULL;
    send = NULL;
    pending = 0;
    cancelled = 0;
    status_done = 0;
    sending = 0;
    connected = 0;

    if (stop) {
        grpc_call_cancel(call, NULL);
        cancelled = 1;
    }

    /* wait for ready: a node started before controld waits, not fails */

    ngx_memzero(ops, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY
                   | GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
    ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[1].data.recv_initial_metadata.recv_initial_metadata = &initial;

    if (grpc_call_start_batch(call, ops, 2, NGX_RELAY_TAG_START, NULL)
        == GRPC_CALL_OK)
    {
        pending++;
    }

    ngx_memzero(ops, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[0].data.recv_status_on_client.status = &status;
    ops[0].data.recv_status_on_client.status_details = &status_details;

    if (grpc_call_start_batch(call, ops, 1, NGX_RELAY_TAG_STATUS, NULL)
        == GRPC_CALL_OK)
    {
        pending++;

    } else {
        status_done = 1;
        status = GRPC_STATUS_INTERNAL;
        status_details = grpc_empty_slice();
    }

    send = ngx_relay_control_hello(ctl);

    ngx_memzero(ops, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_MESSAGE;
    ops[0].data.send_message.send_message = send;

    if (send
        && grpc_call_start_batch(call, ops, 1, NGX_RELAY_TAG_SEND, NULL)
           == GRPC_CALL_OK)
    {
        pending++;
        sending = 1;
    }

    pending += ngx_relay_control_recv(call, &recv);

    next_status = gpr_now(GPR_CLOCK_MONOTONIC);

    /* with other replicas to try, a silent one is not waited for */

    give_up = gpr_time_add(next_status,
                           gpr_time_from_millis(NGX_RELAY_CONTROL_CONNECT,
                                                GPR_TIMESPAN));

    while (pending) {
        ev = grpc_completion_queue_next(cq,
                 gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                              gpr_time_from_millis(NGX_RELAY_CONTROL_TICK,
                                                   GPR_TIMESPAN)),
                 NULL);

        if (ev.type == GRPC_QUEUE_TIMEOUT) {
            (void) pthread_mutex_lock(&ctl->mutex);
            stop = ctl->stop;
            (void) pthread_mutex_unlock(&ctl->mutex);

            if (stop && !cancelled) {
                grpc_call_cancel(call, NULL);
                cancelled = 1;
            }

            now = gpr_now(GPR_CLOCK_MONOTONIC);

            if (!connected && !cancelled && ctl->ntargets > 1
                && gpr_time_cmp(now, give_up) >= 0)
            {
                ngx_relay_control_say(ctl, NGX_LOG_WARN,
                                      "relay control: no session with %s "
                                      "within %ums", target,
                                      NGX_RELAY_CONTROL_CONNECT);
                grpc_call_cancel(call, NULL);
                cancelled = 1;
            }

            if (connected && !status_done
                && gpr_time_cmp(now, next_status) >= 0)
            {
                ngx_relay_control_status(ctl);
                next_status = gpr_time_add(now,
                                  gpr_time_from_millis(ctl->status_interval,
                                                       GPR_TIMESPAN));
            }

            if (sending || status_done || cancelled) {
                continue;
            }

            m = ngx_relay_control_take(ctl, &ctl->outbox);
            if (m == NULL) {
                continue;
            }

            {
                grpc_slice  s = grpc_slice_from_copied_buffer(
                                    (const char *) m->data, m->len);

                send = grpc_raw_byte_buffer_create(&s, 1);
                grpc_slice_unref(s);
            }

            free(m);

            ngx_memzero(ops, sizeof(ops));
            ops[0].op = GRPC_OP_SEND_MESSAGE;
            ops[0].data.send_message.send_message = send;

            if (grpc_call_start_batch(call, ops, 1, NGX_RELAY_TAG_SEND, NULL)
                == GRPC_CALL_OK)
            {
                pending++;
                sending = 1;

            } else {
                grpc_byte_buffer_destroy(send);
                send = NULL;
            }

            continue;
        }

        if (ev.type != GRPC_OP_COMPLETE) {
            break;                          /* the queue shut down */
        }

        pending--;

        if (ev.tag == NGX_RELAY_TAG_START) {
            if (ev.success) {
                connected = 1;
                ngx_relay_metrics_control(NGX_RELAY_METRICS_CONTROL_UP, 0);
                ngx_relay_control_say(ctl, NGX_LOG_NOTICE,
                                      "relay control: session with %s "
                                      "started", target);
            }

        } else if (ev.tag == NGX_RELAY_TAG_SEND) {
            grpc_byte_buffer_destroy(send);
            send = NULL;
            sending = 0;

            if (ev.success && !connected) {
                connected = 1;
            }

        } else if (ev.tag == NGX_RELAY_TAG_RECV) {
            if (!ev.success || recv == NULL) {
                continue;                   /* the stream ended: the status */
            }

            ngx_relay_control_received(ctl, recv);
            grpc_byte_buffer_destroy(recv);
            recv = NULL;

            pending += ngx_relay_control_recv(call, &recv);

        } else if (ev.tag == NGX_RELAY_TAG_STATUS) {
            status_done = 1;

            /* make the other batches finish */

            if (!cancelled) {
                grpc_call_cancel(call, NULL);
                cancelled = 1;
            }
        }
    }

    (void) pthread_mutex_lock(&ctl->mutex);
    ctl->call = NULL;
    (void) pthread_mutex_unlock(&ctl->mutex);

    ngx_relay_metrics_control(NGX_RELAY_METRICS_CONTROL_DOWN, 0);

    if (status_done) {
        details = grpc_slice_to_c_string(status_details);

        ngx_relay_control_say(ctl, NGX_LOG_WARN,
                              "relay control: session with %s ended: "
                              "status %d, \"%s\"", target, (int) status,
                              details ? details : "");

        gpr_free(details);
        grpc_slice_unref(status_details);
    }

    for (i = 0; i < trailing.count; i++) {
        /* nothing to read: freed with the array */
    }

    if (send) {
        grpc_byte_buffer_destroy(send);
    }

    if (recv) {
        grpc_byte_buffer_destroy(recv);
    }

    grpc_metadata_array_destroy(&initial);
    grpc_metadata_array_destroy(&trailing);
    grpc_call_unref(call);
}


/* the next message from controld: 1 when the read is under way */

static ngx_uint_t
ngx_relay_control_recv(grpc_call *call, grpc_byte_buffer **recv)
{
    grpc_op  op;

    ngx_memzero(&op, sizeof(grpc_op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = recv;

    return grpc_call_start_batch(call, &op, 1, NGX_RELAY_TAG_RECV, NULL)
           == GRPC_CALL_OK;
}


static void
ngx_relay_control_received(ngx_relay_control_t *ctl, grpc_byte_buffer *bb)
{
    size_t                               len;
    grpc_slice                           s;
    grpc_byte_buffer_reader              reader;
    Relay__Control__V1__ControlMessage  *cm;
    ngx_relay_control_msg_t             *m;
    u_char                              *packed;

    if (!grpc_byte_buffer_reader_init(&reader, bb)) {
        return;
    }

    s = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);

    cm = relay__control__v1__control_message__unpack(NULL,
                                                   GRPC_SLICE_LENGTH(s),
                                                   GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);

    if (cm == NULL) {
        ngx_relay_control_say(ctl, NGX_LOG_ERR,
                              "relay control: undecodable message from "
                              "controld ignored");
        return;
    }

    switch (cm->msg_case) {

    case RELAY__CONTROL__V1__CONTROL_MESSAGE__MSG_POLICY:
        ngx_relay_control_snapshot(ctl, cm->policy);
        break;

    case RELAY__CONTROL__V1__CONTROL_MESSAGE__MSG_COMMAND:
        len = protobuf_c_message_get_packed_size(&cm->command->base);

        m = ngx_relay_control_msg(NGX_RELAY_CONTROL_COMMAND, NULL, len);
        if (m == NULL) {
            break;
        }

        packed = m->data;
        (void) protobuf_c_message_pack(&cm->command->base, packed);

        ngx_relay_control_put(ctl, &ctl->inbox, m, 1);
        break;

    default:
        break;
    }

    relay__control__v1__control_message__free_unpacked(cm, NULL);
}


/*
 * A snapshot: checked as controld checked it (a node never trusts what
 * it did not verify itself), then against this node (its egress addresses,
 * the zone size), stored as last-known-good, and only then handed over.
 */

static void
ngx_relay_control_snapshot(ngx_relay_control_t *ctl,
    Relay__Control__V1__Policy *pp)
{
    size_t                    len, orig_len;
    char                      err[512];
    u_char                   *orig;
    ngx_relay_control_msg_t  *m;

    if (pp->version == 0) {
        ngx_relay_control_ack(ctl, 0, 0, "policy without a version");
        return;
    }

    /* kept as controld sent it: a restart filters it by the labels then */

    orig_len = protobuf_c_message_get_packed_size(&pp->base);

    orig = malloc(orig_len ? orig_len : 1);
    if (orig == NULL) {
        ngx_relay_control_ack(ctl, pp->version, 0, "out of memory");
        return;
    }

    (void) protobuf_c_message_pack(&pp->base, orig);

    if (relay_policy_for_node(pp, &ctl->node, ctl->own, ctl->nown, err,
                              sizeof(err))
        != 0
        || relay_policy_validate(pp, err, sizeof(err)) != 0
        || ngx_relay_control_node_check(ctl, pp,
                                        protobuf_c_message_get_packed_size(
                                            &pp->base),
                                        err, sizeof(err))
           != 0)
    {
        ngx_relay_control_say(ctl, NGX_LOG_ERR,
                              "relay control: policy version %llu refused: "
                              "%s", (unsigned long long) pp->version, err);
        ngx_relay_control_ack(ctl, pp->version, 0, err);
        free(orig);
        return;
    }

    len = protobuf_c_message_get_packed_size(&pp->base);

    m = ngx_relay_control_msg(NGX_RELAY_CONTROL_POLICY, NULL, len);
    if (m == NULL) {
        ngx_relay_control_ack(ctl, pp->version, 0, "out of memory");
        free(orig);
        return;
    }

    m->version = pp->version;
    (void) protobuf_c_message_pack(&pp->base, m->data);

    if (ngx_relay_control_persist(ctl, orig, orig_len, err, sizeof(err))
        != 0)
    {
        ngx_relay_control_say(ctl, NGX_LOG_ERR,
                              "relay control: policy version %llu not "
                              "stored: %s", (unsigned long long) pp->version,
                              err);
        ngx_relay_control_ack(ctl, pp->version, 0, err);
        free(orig);
        free(m);
        return;
    }

    free(orig);

    ngx_relay_control_put(ctl, &ctl->inbox, m, 1);
}


static int
ngx_relay_control_node_check(ngx_relay_control_t *ctl,
    Relay__Control__V1__Policy *pp, size_t len, char *err, size_t errlen)
{
    int                          fd, rc;
    size_t                       i, j;
    socklen_t                    slen;
    struct sockaddr_in           sin;
    struct sockaddr_in6          sin6;
    Relay__Control__V1__EgressPool  *pool;

    if (len > ctl->shm->size) {
        snprintf(err, errlen, "policy of %zu bytes does not fit the control "
                 "zone of %zu bytes (relay_control_zone_size)", len,
                 ctl->shm->size);
        return -1;
    }

    /* egress addresses must be this node's: bind() tells */

    for (i = 0; i < pp->n_egress_pools; i++) {
        pool = pp->egress_pools[i];

        for (j = 0; j < pool->n_addresses; j++) {
            const char  *a = pool->addresses[j]->address;

            ngx_memzero(&sin, sizeof(sin));
            ngx_memzero(&sin6, sizeof(sin6));

            if (inet_pton(AF_INET, a, &sin.sin_addr) == 1) {
                sin.sin_family = AF_INET;
                fd = socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC, 0);
                slen = sizeof(sin);
                rc = (fd == -1) ? -1
                     : bind(fd, (struct sockaddr *) &sin, slen);

            } else if (inet_pton(AF_INET6, a, &sin6.sin6_addr) == 1) {
                sin6.sin6_family = AF_INET6;
                fd = socket(AF_INET6, SOCK_STREAM|SOCK_CLOEXEC, 0);
                slen = sizeof(sin6);
                rc = (fd == -1) ? -1
                     : bind(fd, (struct sockaddr *) &sin6, slen);

            } else {
                snprintf(err, errlen, "egress_pools[%zu].addresses[%zu]: "
                         "\"%s\" is not an IP address", i, j, a);
                return -1;
            }

            if (rc == -1) {
                snprintf(err, errlen, "egress_pools[%zu].addresses[%zu]: "
                         "%s is not usable on node %s: %s", i, j, a,
                         ctl->node_id, strerror(errno));
                if (fd != -1) {
                    (void) close(fd);
                }

                return -1;
            }

            (void) close(fd);
        }
    }

    /* DKIM keys: the files this node signs with must be readable here */

    if (ngx_relay_dkim_check(pp, err, errlen) != 0) {
        return -1;
    }

    return 0;
}


/* atomically: a crash leaves the old snapshot or the new, never half */

static int
ngx_relay_control_persist(ngx_relay_control_t *ctl, u_char *data, size_t len,
    char *err, size_t errlen)
{
    int      fd, dfd;
    char     tmp[NGX_MAX_PATH], dir[NGX_MAX_PATH], *slash;
    ssize_t  n;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", ctl->state) >= (int) sizeof(tmp))
    {
        snprintf(err, errlen, "state path too long");
        return -1;
    }

    fd = open(tmp, O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0644);
    if (fd == -1) {
        snprintf(err, errlen, "open(\"%.256s\"): %s", tmp, strerror(errno));
        return -1;
    }

    n = write(fd, data, len);

    if (n != (ssize_t) len || fsync(fd) == -1) {
        snprintf(err, errlen, "write(\"%.256s\"): %s", tmp,
                 n == -1 || n == (ssize_t) len ? strerror(errno)
                                               : "short write");
        (void) close(fd);
        (void) unlink(tmp);
        return -1;
    }

    (void) close(fd);

    if (rename(tmp, ctl->state) == -1) {
        snprintf(err, errlen, "rename(\"%.256s\"): %s", tmp, strerror(errno));
        (void) unlink(tmp);
        return -1;
    }

    (void) snprintf(dir, sizeof(dir), "%s", ctl->state);
    slash = strrchr(dir, '/');

    if (slash) {
        *(slash == dir ? slash + 1 : slash) = '\0';

        dfd = open(dir, O_RDONLY|O_DIRECTORY|O_CLOEXEC);
        if (dfd != -1) {
            (void) fsync(dfd);
            (void) close(dfd);
        }
    }

    return 0;
}


static grpc_byte_buffer *
ngx_relay_control_hello(ngx_relay_control_t *ctl)
{
    size_t                           i;
    grpc_byte_buffer                *bb;
    Relay__Control__V1__Label       *l, **lp;
    Relay__Control__V1__Hello        hello = RELAY__CONTROL__V1__HELLO__INIT;
    Relay__Control__V1__NodeMessage  nm = RELAY__CONTROL__V1__NODE_MESSAGE__INIT;

    l = calloc(ctl->node.nlabels + 1, sizeof(Relay__Control__V1__Label));
    lp = calloc(ctl->node.nlabels + 1, sizeof(Relay__Control__V1__Label *));

    if (l == NULL || lp == NULL) {
        free(l);
        free(lp);
        return NULL;
    }

    for (i = 0; i < ctl->node.nlabels; i++) {
        relay__control__v1__label__init(&l[i]);
        l[i].name = (char *) ctl->node.labels[i].name;
        l[i].value = (char *) ctl->node.labels[i].value;
        lp[i] = &l[i];
    }

    hello.node_id = ctl->node_id;
    hello.applied_version = ctl->shm->version;
    hello.software = "nginx-relay/" NGX_RELAY_VERSION " nginx/" NGINX_VERSION;
    hello.n_labels = ctl->node.nlabels;
    hello.labels = lp;
    hello.incarnation = ctl->incarnation;

    nm.msg_case = RELAY__CONTROL__V1__NODE_MESSAGE__MSG_HELLO;
    nm.hello = &hello;

    bb = ngx_relay_control_pack(&nm.base);

    free(l);
    free(lp);

    return bb;
}


/*
 * The node's figures: the live ones of every process's schedule and the
 * totals, from the metrics zone (ngx_relay_metrics.c).
 */

static void
ngx_relay_control_status(ngx_relay_control_t *ctl)
{
    time_t                                now, oldest;
    ngx_uint_t                            i, n;
    ngx_relay_counters_t                 *c;
    ngx_relay_dest_figure_t               top[NGX_RELAY_TOP_DESTS];
    ngx_relay_metrics_totals_t            t;
    Relay__Control__V1__QueueDestination  qd[NGX_RELAY_TOP_DESTS];
    Relay__Control__V1__QueueDestination *qdp[NGX_RELAY_TOP_DESTS];
    Relay__Control__V1__CategoryCount     cc[2 * RELAY_CLASS_N];
    Relay__Control__V1__CategoryCount    *ccp[2 * RELAY_CLASS_N];
    Relay__Control__V1__NodeStatus        st =
                                      RELAY__CONTROL__V1__NODE_STATUS__INIT;
    Relay__Control__V1__NodeMessage       nm =
                                      RELAY__CONTROL__V1__NODE_MESSAGE__INIT;

    now = time(NULL);
    oldest = 0;

    st.uptime_s = now - ctl->shm->started;
    st.applied_version = ctl->shm->version;

    ngx_memzero(top, sizeof(top));

    for (i = 0; i < NGX_RELAY_METRICS_PROCS; i++) {
        c = ngx_relay_metrics_process(i);

        if (c == NULL) {
            continue;                       /* free, or its process gone */
        }

        if (c->oldest && (oldest == 0 || (time_t) c->oldest < oldest)) {
            oldest = c->oldest;
        }

        ngx_relay_control_merge_dests(top, c);

        st.queue_messages += c->messages;
        st.queue_pending_recipients += c->pending;
        st.queue_deferred += c->deferred;
        st.queue_held += c->held;
        st.queue_active += c->active;
        st.queue_parked += c->parked;
    }

    ngx_relay_metrics_totals(&t);

    st.accepted_total = t.accepted;
    st.delivered_total = t.delivered;
    st.deferred_total = t.deferred;
    st.bounced_total = t.bounced;
    st.limited_total = t.limited;

    st.deferred_by_category = ccp;
    st.bounced_by_category = ccp + RELAY_CLASS_N;

    for (i = 0; i < RELAY_CLASS_N; i++) {
        if (t.deferred_by[i]) {
            n = st.n_deferred_by_category++;
            relay__control__v1__category_count__init(&cc[n]);
            cc[n].category = (char *) relay_classify_name(i);
            cc[n].count = t.deferred_by[i];
            ccp[n] = &cc[n];
        }

        if (t.bounced_by[i]) {
            n = RELAY_CLASS_N + st.n_bounced_by_category++;
            relay__control__v1__category_count__init(&cc[n]);
            cc[n].category = (char *) relay_classify_name(i);
            cc[n].count = t.bounced_by[i];
            ccp[n] = &cc[n];
        }
    }

    st.queue_oldest_age_s = (oldest && oldest < now) ? now - oldest : 0;

    for (n = 0; n < NGX_RELAY_TOP_DESTS && top[n].messages; n++) {
        relay__control__v1__queue_destination__init(&qd[n]);
        qd[n].domain = (char *) top[n].name;
        qd[n].messages = top[n].messages;
        qd[n].unreachable = top[n].unreachable;
        qdp[n] = &qd[n];
    }

    st.n_queue_destinations = n;
    st.queue_destinations = qdp;

    nm.msg_case = RELAY__CONTROL__V1__NODE_MESSAGE__MSG_STATUS;
    nm.status = &st;

    ngx_relay_control_send(ctl, &nm);
}


/*
 * A worker's top destinations into the node's: the same domain in two
 * workers adds up; a copy torn by a concurrent update is skipped (the
 * next status has it).
 */

static void
ngx_relay_control_merge_dests(ngx_relay_dest_figure_t *top,
    ngx_relay_counters_t *c)
{
    ngx_uint_t               i, j, k;
    ngx_atomic_uint_t        seq;
    ngx_relay_dest_figure_t  copy[NGX_RELAY_TOP_DESTS], d;

    seq = c->dests_seq;
    ngx_memory_barrier();
    ngx_memcpy(copy, c->dests, sizeof(copy));
    ngx_memory_barrier();

    if ((seq & 1) || seq != c->dests_seq) {
        return;
    }

    for (i = 0; i < NGX_RELAY_TOP_DESTS && copy[i].messages; i++) {
        copy[i].name[sizeof(copy[i].name) - 1] = '\0';

        for (j = 0; j < NGX_RELAY_TOP_DESTS && top[j].messages; j++) {
            if (ngx_strcmp(top[j].name, copy[i].name) == 0) {
                break;
            }
        }

        if (j < NGX_RELAY_TOP_DESTS && top[j].messages) {
            top[j].messages += copy[i].messages;
            top[j].unreachable |= copy[i].unreachable;

        } else if (j < NGX_RELAY_TOP_DESTS) {
            top[j] = copy[i];

        } else if (copy[i].messages > top[j - 1].messages) {
            top[j - 1] = copy[i];
            j--;

        } else {
            continue;
        }

        /* keep the list sorted, most mail first */

        for (k = j; k > 0 && top[k - 1].messages < top[k].messages; k--) {
            d = top[k];
            top[k] = top[k - 1];
            top[k - 1] = d;
        }
    }
}


static void
ngx_relay_control_ack(ngx_relay_control_t *ctl, uint64_t version, int ok,
    const char *reason)
{
    Relay__Control__V1__Ack          ack = RELAY__CONTROL__V1__ACK__INIT;
    Relay__Control__V1__NodeMessage  nm = RELAY__CONTROL__V1__NODE_MESSAGE__INIT;

    ack.version = version;
    ack.ok = ok;
    ack.reason = (char *) (reason ? reason : "");

    ngx_relay_metrics_control(ok ? NGX_RELAY_METRICS_CONTROL_ACK
                                 : NGX_RELAY_METRICS_CONTROL_NACK, version);

    nm.msg_case = RELAY__CONTROL__V1__NODE_MESSAGE__MSG_ACK;
    nm.ack = &ack;

    ngx_relay_control_send(ctl, &nm);
}


static grpc_byte_buffer *
ngx_relay_control_pack(const ProtobufCMessage *m)
{
    grpc_slice         s;
    grpc_byte_buffer  *bb;

    s = grpc_slice_malloc(protobuf_c_message_get_packed_size(m));
    (void) protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));

    bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);

    return bb;
}


/* a log line for the loop to write: the thread has no nginx log */

static void
ngx_relay_control_say(ngx_relay_control_t *ctl, ngx_uint_t level,
    const char *fmt, ...)
{
    int                       n;
    char                      text[1024];
    va_list                   ap;
    ngx_relay_control_msg_t  *m;

    va_start(ap, fmt);
    n = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);

    if (n < 0) {
        return;
    }

    m = ngx_relay_control_msg(NGX_RELAY_CONTROL_LOG, text,
                              ngx_min((size_t) n, sizeof(text) - 1));
    if (m) {
        m->level = level;
        ngx_relay_control_put(ctl, &ctl->inbox, m, 1);
    }
}


/* ------------------------------------------------------------ lists */


static ngx_relay_control_msg_t *
ngx_relay_control_msg(ngx_uint_t type, const void *data, size_t len)
{
    ngx_relay_control_msg_t  *m;

    m = malloc(sizeof(ngx_relay_control_msg_t) + len);
    if (m == NULL) {
        return NULL;
    }

    m->next = NULL;
    m->type = type;
    m->level = 0;
    m->version = 0;
    m->len = len;

    if (data) {
        ngx_memcpy(m->data, data, len);
    }

    m->data[len] = '\0';

    return m;
}


static void
ngx_relay_control_put(ngx_relay_control_t *ctl,
    ngx_relay_control_list_t *list, ngx_relay_control_msg_t *m,
    ngx_uint_t wake)
{
    uint64_t  one = 1;

    (void) pthread_mutex_lock(&ctl->mutex);

    *list->tail = m;
    list->tail = &m->next;

    (void) pthread_mutex_unlock(&ctl->mutex);

    if (wake && write(ctl->efd, &one, sizeof(one)) != sizeof(one)) {
        /* EAGAIN: the counter is full, the loop is awake anyway */
    }
}


static ngx_relay_control_msg_t *
ngx_relay_control_take(ngx_relay_control_t *ctl,
    ngx_relay_control_list_t *list)
{
    ngx_relay_control_msg_t  *m;

    (void) pthread_mutex_lock(&ctl->mutex);

    m = list->head;

    if (m) {
        list->head = m->next;

        if (list->head == NULL) {
            list->tail = &list->head;
        }
    }

    (void) pthread_mutex_unlock(&ctl->mutex);

    return m;
}


/* queue a message for controld; the thread sends it at its next tick */

static void
ngx_relay_control_send(ngx_relay_control_t *ctl,
    Relay__Control__V1__NodeMessage *nm)
{
    size_t                    len;
    ngx_relay_control_msg_t  *m;

    len = protobuf_c_message_get_packed_size(&nm->base);

    m = ngx_relay_control_msg(0, NULL, len);
    if (m == NULL) {
        return;
    }

    (void) protobuf_c_message_pack(&nm->base, m->data);

    ngx_relay_control_put(ctl, &ctl->outbox, m, 0);
}


/* ------------------------------------------------------------ loop */


static void
ngx_relay_control_wakeup(ngx_event_t *ev)
{
    ngx_connection_t     *c = ev->data;
    ngx_relay_control_t  *ctl = c->data;

    uint64_t                  n;
    ngx_relay_control_msg_t  *m;

    if (c->close) {

        /* a graceful shutdown: let the next worker 0 take the stream */

        ngx_relay_control_stop(ctl);
        return;
    }

    while (read(ctl->efd, &n, sizeof(n)) == sizeof(n)) {
        /* drained */
    }

    while ((m = ngx_relay_control_take(ctl, &ctl->inbox))) {

        switch (m->type) {

        case NGX_RELAY_CONTROL_LOG:
            ngx_log_error(m->level, ctl->log, 0, "%s", m->data);
            free(m);
            break;

        case NGX_RELAY_CONTROL_POLICY:
            ngx_relay_control_apply(ctl, m);
            free(m);
            break;

        default:
            ngx_relay_control_command(ctl, m);
            free(m);
            break;
        }
    }
}


static void
ngx_relay_control_apply(ngx_relay_control_t *ctl, ngx_relay_control_msg_t *m)
{
    ngx_relay_policy_publish(ctl->shm, m->version, m->data, m->len);

    ngx_log_error(NGX_LOG_NOTICE, ctl->log, 0,
                  "relay control: policy version %uL applied and stored",
                  m->version);

    (void) ngx_relay_policy_version(ctl->policy);

    ngx_relay_control_ack(ctl, m->version, 1, NULL);
}


static void
ngx_relay_control_command(ngx_relay_control_t *ctl,
    ngx_relay_control_msg_t *m)
{
    ngx_thread_task_t                 *task;
    ngx_relay_control_task_t          *t;
    Relay__Control__V1__CommandResult  res =
                                  RELAY__CONTROL__V1__COMMAND_RESULT__INIT;
    Relay__Control__V1__NodeMessage    nm =
                                  RELAY__CONTROL__V1__NODE_MESSAGE__INIT;

    task = ngx_calloc(sizeof(ngx_thread_task_t)
                      + sizeof(ngx_relay_control_task_t), ctl->log);
    if (task == NULL) {
        goto failed;
    }

    t = (ngx_relay_control_task_t *) (task + 1);
    t->ctl = ctl;
    t->queue_fd = ctl->sched->spool.queue_fd;
    relay_queue_note_init(&t->note);
    relay__control__v1__command_result__init(&t->res);

    t->cmd = relay__control__v1__command__unpack(NULL, m->len, m->data);
    if (t->cmd == NULL) {
        ngx_free(task);
        goto failed;
    }

    ngx_log_error(NGX_LOG_NOTICE, ctl->log, 0,
                  "relay control: queue command %uL (action %d, %uz ids)",
                  t->cmd->id, (int) t->cmd->action, t->cmd->n_queue_ids);

    task->ctx = t;
    task->handler = ngx_relay_control_command_thread;
    task->event.handler = ngx_relay_control_command_done;
    task->event.data = task;

    if (ngx_thread_task_post(ctl->sched->spool.thread_pool, task) != NGX_OK) {
        relay__control__v1__command__free_unpacked(t->cmd, NULL);
        ngx_free(task);
        goto failed;
    }

    return;

failed:

    res.ok = 0;
    res.error = "node could not run the command";
    nm.msg_case = RELAY__CONTROL__V1__NODE_MESSAGE__MSG_RESULT;
    nm.result = &res;

    ngx_relay_control_send(ctl, &nm);
}


/*
 * Queue commands run here, in the thread pool, on lib/relay_queue.c: each
 * action under the message's lock, then one note for the workers
 * (<spool>/notes/).  A message being
 * delivered right now is locked: flush counts it (it is being tried),
 * the other actions report it busy.
 */

static void
ngx_relay_control_command_thread(void *data, ngx_log_t *log)
{
    ngx_relay_control_task_t  *t = data;

    size_t                        i;
    Relay__Control__V1__Command  *cmd;

    cmd = t->cmd;

    t->res.id = cmd->id;
    t->res.ok = 1;

    if (cmd->action == RELAY__CONTROL__V1__QUEUE_ACTION__QUEUE_LIST) {
        ngx_relay_control_list(t);
        return;
    }

    if (ngx_relay_control_action(cmd->action) == NGX_ERROR) {
        ngx_relay_control_fail(t, "unknown action %d", (int) cmd->action);
        return;
    }

    if (cmd->n_queue_ids) {
        for (i = 0; i < cmd->n_queue_ids; i++) {
            ngx_relay_control_act(t, cmd->queue_ids[i], 1);
        }

    } else {
        ngx_relay_control_act_all(t);
    }

    ngx_relay_control_note(t);
}


static ngx_int_t
ngx_relay_control_action(Relay__Control__V1__QueueAction action)
{
    switch (action) {

    case RELAY__CONTROL__V1__QUEUE_ACTION__QUEUE_FLUSH:
        return relay_queue_flush;

    case RELAY__CONTROL__V1__QUEUE_ACTION__QUEUE_DELETE:
        return relay_queue_delete;

    case RELAY__CONTROL__V1__QUEUE_ACTION__QUEUE_BOUNCE:
        return relay_queue_bounce;

    case RELAY__CONTROL__V1__QUEUE_ACTION__QUEUE_HOLD:
        return relay_queue_hold;

    case RELAY__CONTROL__V1__QUEUE_ACTION__QUEUE_RELEASE:
        return relay_queue_release;

    default:
        return NGX_ERROR;
    }
}


/* named messages: each that is missing is reported; else every message */

static void
ngx_relay_control_list(ngx_relay_control_task_t *t)
{
    int                           err;
    size_t                        i;
    relay_queue_list_t            l;
    relay_queue_entry_t           e;
    relay_queue_filter_t          f;
    Relay__Control__V1__Command  *cmd;

    cmd = t->cmd;

    for (i = 0; i < cmd->n_queue_ids; i++) {
        switch (relay_queue_entry_read(t->queue_fd, cmd->queue_ids[i], &e,
                                       &err))
        {
        case RELAY_QUEUE_OK:
            if (e.state != RELAY_QUEUE_STATE_INCOMPLETE) {
                ngx_relay_control_entry(t, &e);
            }

            relay_queue_free(&e.msg);
            break;

        case RELAY_QUEUE_GONE:
            ngx_relay_control_fail(t, "no such message: %s",
                                   cmd->queue_ids[i]);
            break;

        default:
            break;                      /* not a message (yet) */
        }
    }

    if (cmd->n_queue_ids) {
        return;
    }

    ngx_memzero(&f, sizeof(relay_queue_filter_t));

    if (relay_queue_list(t->queue_fd, &f, time(NULL),
                         NGX_RELAY_CONTROL_MAX_ENTRIES, &l, &err)
        != RELAY_QUEUE_OK)
    {
        ngx_relay_control_fail(t, "queue directory: %s", strerror(err));
        return;
    }

    for (i = 0; i < l.n; i++) {
        ngx_relay_control_entry(t, &l.entries[i]);
    }

    if (l.truncated) {
        (void) snprintf(t->error, sizeof(t->error),
                        "listing truncated at %d messages",
                        NGX_RELAY_CONTROL_MAX_ENTRIES);
    }

    relay_queue_list_free(&l);
}


static void
ngx_relay_control_entry(ngx_relay_control_task_t *t, relay_queue_entry_t *e)
{
    size_t                           i, n;
    relay_queue_msg_t               *m;
    Relay__Control__V1__QueueEntry  *qe, **entries;

    m = &e->msg;

    qe = calloc(1, sizeof(Relay__Control__V1__QueueEntry));
    entries = realloc(t->entries, (t->nentries + 1) * sizeof(void *));

    if (qe == NULL || entries == NULL) {
        free(qe);
        if (entries) {
            t->entries = entries;
        }

        return;
    }

    t->entries = entries;

    relay__control__v1__queue_entry__init(qe);

    qe->id = strndup((char *) m->id.data, m->id.len);
    qe->sender = strndup((char *) m->sender.data, m->sender.len);
    qe->arrival_unix = m->arrival;
    qe->next_attempt_unix = m->next;
    qe->attempts = m->attempts;
    qe->size = m->message_size;
    qe->recipients = m->nrcpts;
    qe->last_error = strndup((char *) m->last_error.data, m->last_error.len);
    qe->held = m->held;
    qe->state = strdup(relay_queue_state_name(e->state));
    qe->category = strdup(m->last_error.len
                          ? relay_classify_name(relay_classify_text(
                                t->ctl->sched->bounce_rules,
                                m->last_error.data, m->last_error.len))
                          : "");

    qe->pending = calloc(m->nrcpts ? m->nrcpts : 1, sizeof(char *));

    for (i = 0, n = 0; qe->pending && i < m->nrcpts; i++) {
        if (m->rcpts[i].state == RELAY_QUEUE_RCPT_PENDING
            || m->rcpts[i].state == RELAY_QUEUE_RCPT_BOUNCE)
        {
            qe->pending[n] = strndup((char *) m->rcpts[i].addr.data,
                                     m->rcpts[i].addr.len);
            if (qe->pending[n]) {
                n++;
            }
        }
    }

    qe->n_pending = n;

    t->entries[t->nentries++] = qe;
}


/* --all: every complete message of the queue, one at a time */

static void
ngx_relay_control_act_all(ngx_relay_control_task_t *t)
{
    int                   err;
    relay_queue_filter_t  f;

    ngx_memzero(&f, sizeof(relay_queue_filter_t));

    if (relay_queue_each(t->queue_fd, &f, time(NULL),
                         ngx_relay_control_act_each, t, &err)
        != RELAY_QUEUE_OK)
    {
        ngx_relay_control_fail(t, "queue directory: %s", strerror(err));
    }
}


static int
ngx_relay_control_act_each(relay_queue_entry_t *e, void *data)
{
    ngx_relay_control_act(data, e->name, 0);

    return 0;
}


/* one message; a message gone meanwhile is an error only when named */

static void
ngx_relay_control_act(ngx_relay_control_task_t *t, const char *name,
    ngx_uint_t named)
{
    ngx_int_t              action;
    relay_queue_result_t   res;

    action = ngx_relay_control_action(t->cmd->action);

    switch (relay_queue_act(t->queue_fd, name, action, time(NULL), &res)) {

    case RELAY_QUEUE_OK:
        t->res.affected++;
        relay_queue_note_add(&t->note, name);
        break;

    case RELAY_QUEUE_BUSY:
        if (action == relay_queue_flush) {
            t->res.affected++;          /* in delivery right now */
            break;
        }

        ngx_relay_control_fail(t, "%s: in delivery now, try again", name);
        break;

    case RELAY_QUEUE_GONE:
    case RELAY_QUEUE_INCOMPLETE:
        if (named) {
            ngx_relay_control_fail(t, "no such message: %s", name);
        }

        break;

    case RELAY_QUEUE_NOT_APPLICABLE:
        ngx_relay_control_say_why(t, name, res.why);
        break;

    default:
        ngx_relay_control_fail(t, "%s: %s: %s", name, res.why,
                               strerror(res.err));
        break;
    }
}


static void
ngx_relay_control_note(ngx_relay_control_task_t *t)
{
    int          fd, err;
    char        *path;
    ngx_str_t   *root;

    root = &t->ctl->sched->spool.path;

    path = strndup((char *) root->data, root->len);
    fd = path ? open(path, O_RDONLY|O_DIRECTORY|O_CLOEXEC) : -1;
    free(path);

    if (fd == -1) {
        t->note_err = errno ? errno : ENOMEM;
        return;
    }

    if (relay_queue_note_write(fd, &t->note, time(NULL), &err)
        != RELAY_QUEUE_OK)
    {
        t->note_err = err;
    }

    (void) close(fd);
}


/* the command failed (for one message at least): say why, "; "-separated */

static void
ngx_relay_control_fail(ngx_relay_control_task_t *t, const char *fmt, ...)
{
    size_t   len;
    va_list  args;

    t->res.ok = 0;

    len = strlen(t->error);

    if (len && len + 2 < sizeof(t->error)) {
        ngx_memcpy(t->error + len, "; ", 3);
        len += 2;
    }

    va_start(args, fmt);
    (void) vsnprintf(t->error + len, sizeof(t->error) - len, fmt, args);
    va_end(args);
}


/* not applicable: not a failure, but the answer says why it did nothing */

static void
ngx_relay_control_say_why(ngx_relay_control_task_t *t, const char *name,
    const char *why)
{
    size_t  len;

    len = strlen(t->error);

    (void) snprintf(t->error + len, sizeof(t->error) - len, "%s%s: %s",
                    len ? "; " : "", name, why);
}


static void
ngx_relay_control_command_done(ngx_event_t *ev)
{
    ngx_thread_task_t  *task = ev->data;

    size_t                           i;
    ngx_relay_control_t             *ctl;
    ngx_relay_control_task_t        *t;
    Relay__Control__V1__NodeMessage  nm =
                                  RELAY__CONTROL__V1__NODE_MESSAGE__INIT;

    t = task->ctx;
    ctl = t->ctl;

    t->res.error = t->error;
    t->res.entries = t->entries;
    t->res.n_entries = t->nentries;

    ngx_log_error(NGX_LOG_NOTICE, ctl->log, 0,
                  "relay control: queue command %uL done: %s, %uD "
                  "message(s)%s%s", t->cmd->id, t->res.ok ? "ok" : "failed",
                  t->cmd->action
                  == RELAY__CONTROL__V1__QUEUE_ACTION__QUEUE_LIST
                  ? (uint32_t) t->nentries : t->res.affected,
                  t->error[0] ? ", " : "", t->error);

    if (t->note_err) {
        ngx_log_error(NGX_LOG_WARN, ctl->log, t->note_err,
                      "relay control: queue command %uL: no note for the "
                      "workers", t->cmd->id);
    }

    if (t->cmd->action != RELAY__CONTROL__V1__QUEUE_ACTION__QUEUE_LIST) {
        ngx_relay_account_operator(relay_queue_action_name(
                                       ngx_relay_control_action(
                                           t->cmd->action)),
                                   t->cmd->id, &t->note, t->res.affected);
    }

    nm.msg_case = RELAY__CONTROL__V1__NODE_MESSAGE__MSG_RESULT;
    nm.result = &t->res;

    ngx_relay_control_send(ctl, &nm);

    for (i = 0; i < t->nentries; i++) {
        relay__control__v1__queue_entry__free_unpacked(t->entries[i], NULL);
    }

    free(t->entries);
    relay_queue_note_free(&t->note);
    relay__control__v1__command__free_unpacked(t->cmd, NULL);
    ngx_free(task);
}


/* every worker, once a second: a snapshot to pick up */

static void
ngx_relay_control_tick(ngx_event_t *ev)
{
    (void) ngx_relay_policy_version(ngx_relay_control_policy);

    if (!ngx_exiting && !ngx_terminate) {
        ngx_add_timer(ev, 1000);
    }
}
