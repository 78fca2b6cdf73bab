
/*
 * Copyright (C) The relay authors
 */


/*
 * Metrics: the node's counters, gauges and histograms in a shared memory
 * zone of their own ("relay_metrics"), and their Prometheus text
 * exposition (format 0.0.4) for the http handler of
 * ngx_http_relay_metrics_module.c.  An observer: the code that decides
 * calls one function here where an event happens; nothing here decides
 * anything, and nothing of the zone is read back by deciding code.
 *
 * Lock-free on the hot path: every counter is one word in the zone,
 * incremented with an atomic add by whichever worker sees the event, so
 * a worker that dies has lost nothing it counted, and old and new workers
 * overlapping in a reload count into the same words.  The zone keeps its
 * name, size and tag across reloads, so nginx hands the new cycle the
 * same memory: counters survive "nginx -s reload" and go back to zero
 * only with a restart (relay_metrics_start_time_seconds says when).
 *
 * Gauges that belong to a process (its SMTP sessions, its schedule's
 * queue figures, its idle connections) live in a slot the process claims
 * by its pid at start and frees at exit; a reader sums the slots whose
 * process is alive, so a killed worker's sessions drop out at once and
 * its successor starts from zero.
 *
 * Label values are bounded by the configuration and the policy, never by
 * traffic: listeners (their listen address), tenants (relay_tenant),
 * destinations (the destination_limit or route pattern that matched a
 * recipient's domain, "*" for the rest: never the domain itself), egress
 * pool and address, and limit rules.  Each value is interned once in a
 * table of the zone (an append-only hash: readers probe without a lock,
 * the first sight of a value takes the zone's mutex); a full table sends
 * new values to its first entry ("" or "*") and counts the overflow.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_relay_metrics.h>


#define NGX_RELAY_METRICS_MAGIC        0x72656c61794d3031   /* relayM01 */
#define NGX_RELAY_METRICS_BUCKETS      14

#define NGX_RELAY_LABEL_LEN            128    /* a value, cut to fit */
#define NGX_RELAY_LABEL_BUF            (2 * NGX_RELAY_LABEL_LEN + 64)
#define NGX_RELAY_LABEL_MAX            512
#define NGX_RELAY_LABEL_SLOTS          1024   /* hash slots, a power of 2 */
#define NGX_RELAY_LISTENERS            64

#define NGX_RELAY_LABEL_LISTENER       0
#define NGX_RELAY_LABEL_TENANT         1
#define NGX_RELAY_LABEL_DESTINATION    2
#define NGX_RELAY_LABEL_EGRESS         3
#define NGX_RELAY_LABEL_RULE           4
#define NGX_RELAY_LABELS               5

/* per tenant: accepted ones, then the delivery outcomes */
#define NGX_RELAY_TENANT_MESSAGES      0
#define NGX_RELAY_TENANT_RCPTS         1
#define NGX_RELAY_TENANT_BYTES         2
#define NGX_RELAY_TENANT_OUTCOME       3
#define NGX_RELAY_TENANT_N             (3 + NGX_RELAY_OUTCOMES)

#define NGX_RELAY_OPERATOR_ACTIONS     6


/* why the SMTP server refused something: by its reply */

typedef enum {
    ngx_relay_reject_relay_denied = 0,
    ngx_relay_reject_policy,
    ngx_relay_reject_unknown_user,
    ngx_relay_reject_bad_address,
    ngx_relay_reject_message_size,
    ngx_relay_reject_syntax,
    ngx_relay_reject_sequence,
    ngx_relay_reject_limit,
    ngx_relay_reject_too_many_recipients,
    ngx_relay_reject_tls_required,
    ngx_relay_reject_auth_failed,
    ngx_relay_reject_bad_data,
    ngx_relay_reject_too_many_errors,
    ngx_relay_reject_timeout,
    ngx_relay_reject_shutdown,
    ngx_relay_reject_local_error,
    ngx_relay_reject_other,
    ngx_relay_reject_n
} ngx_relay_reject_e;


typedef struct {
    ngx_atomic_t                 count;
    ngx_atomic_t                 sum;          /* microseconds */
    ngx_atomic_t                 buckets[NGX_RELAY_METRICS_BUCKETS];
} ngx_relay_histogram_t;


typedef struct {
    size_t                       len;
    u_char                       name[NGX_RELAY_LABEL_LEN];
} ngx_relay_label_t;


typedef struct {
    ngx_atomic_t                 n;            /* values in use */
    ngx_atomic_t                 overflows;
    uint16_t                     slots[NGX_RELAY_LABEL_SLOTS]; /* index+1 */
    ngx_relay_label_t            values[NGX_RELAY_LABEL_MAX];
} ngx_relay_label_table_t;


/* the gauges of one process */

typedef struct {
    ngx_atomic_t                 pid;          /* 0: free */
    ngx_relay_counters_t         figures;
    ngx_atomic_t                 sessions[NGX_RELAY_LISTENERS];
    ngx_atomic_t                 idle;         /* cached connections */
} ngx_relay_metrics_proc_t;


typedef struct {
    uint64_t                     magic;
    ngx_slab_pool_t             *shpool;       /* for its mutex */
    time_t                       started;

    ngx_relay_label_table_t      labels[NGX_RELAY_LABELS];

    /* by listener */
    ngx_atomic_t                 sessions[NGX_RELAY_LISTENERS];
    ngx_atomic_t                 messages[NGX_RELAY_LISTENERS];
    ngx_atomic_t                 rcpts[NGX_RELAY_LISTENERS];
    ngx_atomic_t                 bytes[NGX_RELAY_LISTENERS];

    ngx_atomic_t                 rejections[ngx_relay_reject_n];
    ngx_atomic_t                 tenant[NGX_RELAY_LABEL_MAX]
                                       [NGX_RELAY_TENANT_N];
    ngx_atomic_t                 deliveries[2][NGX_RELAY_OUTCOMES];
    ngx_atomic_t                 delivered_bytes[2];
    ngx_atomic_t                 destination[NGX_RELAY_LABEL_MAX]
                                            [NGX_RELAY_OUTCOMES];
    ngx_atomic_t                 egress[NGX_RELAY_LABEL_MAX]
                                       [NGX_RELAY_OUTCOMES];
    ngx_atomic_t                 classified[NGX_RELAY_OUTCOMES]
                                           [RELAY_CLASS_N];
    ngx_atomic_t                 dsn[3];      /* NGX_RELAY_DSN_* */
    ngx_atomic_t                 operator[NGX_RELAY_OPERATOR_ACTIONS];
    ngx_atomic_t                 cache_hits;
    ngx_atomic_t                 cache_misses;
    ngx_atomic_t                 limits[NGX_RELAY_LABEL_MAX];
    ngx_atomic_t                 inbound_limited;
    ngx_atomic_t                 flow_delayed;    /* in-flow control */

    ngx_relay_histogram_t        eod;          /* end of data to "250" */
    ngx_relay_histogram_t        delay[2];     /* arrival to delivery */
    ngx_relay_histogram_t        sync[NGX_RELAY_METRICS_SYNC_KINDS];
    ngx_relay_histogram_t        dns;

    ngx_atomic_t                 control;      /* relay_control is on */
    ngx_atomic_t                 connected;
    ngx_atomic_t                 applied;      /* version */
    ngx_atomic_t                 applied_at;   /* unix time; 0: not here */
    ngx_atomic_t                 refused;

    ngx_atomic_t                 records;      /* accounting log */
    ngx_atomic_t                 record_errors;

    ngx_atomic_t                 off;          /* "relay_metrics off" */

    ngx_relay_metrics_proc_t     procs[NGX_RELAY_METRICS_PROCS];
} ngx_relay_metrics_shm_t;


/* the exposition, written into a chain of buffers */

typedef struct {
    ngx_pool_t                  *pool;
    ngx_chain_t                 *first;
    ngx_chain_t                **last;
    ngx_buf_t                   *b;
    off_t                        len;
    ngx_uint_t                   failed;
} ngx_relay_metrics_out_t;


static ngx_int_t ngx_relay_metrics_init_zone(ngx_shm_zone_t *zone,
    void *data);
static ngx_relay_metrics_shm_t *ngx_relay_metrics_find(ngx_cycle_t *cycle);
static ngx_uint_t ngx_relay_metrics_alive(ngx_relay_metrics_proc_t *p);
static void ngx_relay_metrics_session_end(void *data);
static ngx_uint_t ngx_relay_metrics_label(ngx_uint_t table, u_char *data,
    size_t len);
static void ngx_relay_metrics_intern(ngx_relay_label_table_t *t,
    ngx_uint_t index, ngx_uint_t slot, u_char *data, size_t len);
static ngx_uint_t ngx_relay_metrics_reject_reason(u_char *line, size_t len);
static void ngx_relay_metrics_rule(ngx_str_t *rule);
static void ngx_relay_metrics_observe(ngx_relay_histogram_t *h,
    const uint64_t *bounds, uint64_t us);

static void ngx_relay_metrics_printf(ngx_relay_metrics_out_t *out,
    const char *fmt, ...);
static void ngx_relay_metrics_family(ngx_relay_metrics_out_t *out,
    const char *name, const char *type, const char *help);
static ngx_str_t *ngx_relay_metrics_labels(ngx_relay_metrics_shm_t *m,
    ngx_uint_t table, ngx_uint_t i, ngx_str_t *buf);
static void ngx_relay_metrics_by_outcome(ngx_relay_metrics_out_t *out,
    ngx_relay_metrics_shm_t *m, ngx_uint_t table, ngx_atomic_t *rows,
    size_t stride, const char *name);
static void ngx_relay_metrics_histogram(ngx_relay_metrics_out_t *out,
    const char *name, const char *labels, ngx_relay_histogram_t *h,
    const uint64_t *bounds);
static void ngx_relay_metrics_render_smtp(ngx_relay_metrics_out_t *out,
    ngx_relay_metrics_shm_t *m);
static void ngx_relay_metrics_render_deliveries(
    ngx_relay_metrics_out_t *out, ngx_relay_metrics_shm_t *m);
static void ngx_relay_metrics_render_queue(ngx_relay_metrics_out_t *out,
    ngx_relay_metrics_shm_t *m);
static void ngx_relay_metrics_render_rest(ngx_relay_metrics_out_t *out,
    ngx_relay_metrics_shm_t *m);


static ngx_uint_t                 ngx_relay_metrics_tag;
static ngx_relay_metrics_shm_t   *ngx_relay_metrics_zone;   /* NULL: off */
static ngx_relay_metrics_shm_t   *ngx_relay_metrics_shm;    /* figures */
static ngx_relay_metrics_proc_t  *ngx_relay_metrics_me;
static ngx_relay_counters_t       ngx_relay_metrics_no_figures;


static const ngx_uint_t  ngx_relay_label_caps[NGX_RELAY_LABELS] = {
    NGX_RELAY_LISTENERS, NGX_RELAY_LABEL_MAX, NGX_RELAY_LABEL_MAX,
    NGX_RELAY_LABEL_MAX, NGX_RELAY_LABEL_MAX
};

/* the first value of each table: where values go that have none */
static ngx_str_t  ngx_relay_label_first[NGX_RELAY_LABELS] = {
    ngx_string(""), ngx_string(""), ngx_string("*"), ngx_string(" "),
    ngx_string("")
};

static const char  *ngx_relay_label_names[NGX_RELAY_LABELS] = {
    "listener", "tenant", "destination", "egress", "rule"
};

static const char  *ngx_relay_reject_names[ngx_relay_reject_n] = {
    "relay_denied", "policy", "unknown_user", "bad_address",
    "message_size", "syntax", "sequence", "limit", "too_many_recipients",
    "tls_required", "auth_failed", "bad_data", "too_many_errors", "timeout",
    "shutdown", "local_error", "other"
};

static const char  *ngx_relay_outcome_names[NGX_RELAY_OUTCOMES] = {
    "sent", "deferred", "bounced", "expired"
};

static const char  *ngx_relay_state_names[NGX_RELAY_QUEUE_STATES] = {
    "new", "deferred", "active", "held", "parked"
};

static const char  *ngx_relay_sync_names[NGX_RELAY_METRICS_SYNC_KINDS] = {
    "journal", "syncfs", "files", "checkpoint", "retire"
};

/* relay_queue_action_name()'s words, in the order of relay_queue.h */
static const char  *ngx_relay_operator_names[NGX_RELAY_OPERATOR_ACTIONS] = {
    "flush", "hold", "release", "delete", "bounce", "other"
};

/* families of one sample, a word of the zone each */

typedef struct {
    const char                  *name;
    const char                  *type;
    const char                  *help;
    size_t                       offset;
    ngx_uint_t                   control;      /* only with relay_control */
} ngx_relay_metrics_scalar_t;

#define ngx_relay_metrics_at(field)  offsetof(ngx_relay_metrics_shm_t, field)

static const ngx_relay_metrics_scalar_t  ngx_relay_metrics_scalars[] = {
    { "relay_connection_cache_hits_total", "counter",
      "Deliveries that took a cached connection.",
      ngx_relay_metrics_at(cache_hits), 0 },
    { "relay_connection_cache_misses_total", "counter",
      "New SMTP connections to other servers.",
      ngx_relay_metrics_at(cache_misses), 0 },
    { "relay_accounting_records_total", "counter",
      "Records written to the accounting log.",
      ngx_relay_metrics_at(records), 0 },
    { "relay_accounting_errors_total", "counter",
      "Records the accounting log could not write.",
      ngx_relay_metrics_at(record_errors), 0 },
    { "relay_control_connected", "gauge",
      "1 while the node's session with controld is up.",
      ngx_relay_metrics_at(connected), 1 },
    { "relay_control_applied_version", "gauge",
      "The fleet policy version the node runs (0: none).",
      ngx_relay_metrics_at(applied), 1 },
    { "relay_control_last_apply_timestamp_seconds", "gauge",
      "When the node last applied a version (0: not since the counters "
      "started).", ngx_relay_metrics_at(applied_at), 1 },
    { "relay_control_refused_total", "counter",
      "Policy versions the node refused (NACK).",
      ngx_relay_metrics_at(refused), 1 }
};


/* microseconds: the fast ones (a sync, a lookup, "250"), then delays */

static const uint64_t  ngx_relay_fast_bounds[NGX_RELAY_METRICS_BUCKETS] = {
    500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 10000000
};

static const uint64_t  ngx_relay_slow_bounds[NGX_RELAY_METRICS_BUCKETS] = {
    1000000ULL, 5000000ULL, 15000000ULL, 60000000ULL, 300000000ULL,
    900000000ULL, 1800000000ULL, 3600000000ULL, 10800000000ULL,
    21600000000ULL, 43200000000ULL, 86400000000ULL, 259200000000ULL,
    432000000000ULL
};


/* ---------------------------------------------------------- the zone */


ngx_int_t
ngx_relay_metrics_add_zone(ngx_conf_t *cf)
{
    size_t           size;
    ngx_str_t        name;
    ngx_shm_zone_t  *zone;

    /* the same size every time, or a reload would start from zero */

    size = ngx_align(sizeof(ngx_relay_metrics_shm_t), 4096) + 16 * 4096;

    ngx_str_set(&name, "relay_metrics");

    zone = ngx_shared_memory_add(cf, &name, size, &ngx_relay_metrics_tag);
    if (zone == NULL) {
        return NGX_ERROR;
    }

    zone->init = ngx_relay_metrics_init_zone;
    zone->data = &ngx_relay_metrics_tag;

    return NGX_OK;
}


static ngx_int_t
ngx_relay_metrics_init_zone(ngx_shm_zone_t *zone, void *data)
{
    ngx_uint_t                i;
    ngx_slab_pool_t          *shpool;
    ngx_relay_metrics_shm_t  *m;

    if (data && data != &ngx_relay_metrics_tag) {
        zone->data = data;               /* a reload: the same counters */
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    m = ngx_slab_calloc(shpool, sizeof(ngx_relay_metrics_shm_t));
    if (m == NULL) {
        return NGX_ERROR;
    }

    m->magic = NGX_RELAY_METRICS_MAGIC;
    m->shpool = shpool;
    m->started = ngx_time();

    for (i = 0; i < NGX_RELAY_LABELS; i++) {
        ngx_relay_metrics_intern(&m->labels[i], 0,
                                 ngx_crc32_short(ngx_relay_label_first[i].data,
                                         ngx_relay_label_first[i].len)
                                 & (NGX_RELAY_LABEL_SLOTS - 1),
                                 ngx_relay_label_first[i].data,
                                 ngx_relay_label_first[i].len);
    }

    shpool->data = m;
    zone->data = m;

    return NGX_OK;
}


static ngx_relay_metrics_shm_t *
ngx_relay_metrics_find(ngx_cycle_t *cycle)
{
    ngx_uint_t                i;
    ngx_list_part_t          *part;
    ngx_shm_zone_t           *zone;
    ngx_relay_metrics_shm_t  *m;

    part = &cycle->shared_memory.part;
    zone = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            zone = part->elts;
            i = 0;
        }

        if (zone[i].tag != &ngx_relay_metrics_tag) {
            continue;
        }

        m = zone[i].data;

        if (m == NULL || (void *) m == &ngx_relay_metrics_tag
            || m->magic != NGX_RELAY_METRICS_MAGIC)
        {
            return NULL;
        }

        return m;
    }
}


/*
 * A worker (or the single process) takes a slot for its gauges; with
 * "relay_metrics off" it counts nothing, but its schedule's figures still
 * go to its slot, for the node's status.
 */

ngx_int_t
ngx_relay_metrics_init_process(ngx_cycle_t *cycle, ngx_uint_t on)
{
    ngx_uint_t                 i;
    ngx_atomic_uint_t          pid;
    ngx_relay_metrics_shm_t   *m;
    ngx_relay_metrics_proc_t  *p;

    m = ngx_relay_metrics_find(cycle);
    if (m == NULL) {
        return NGX_OK;
    }

    ngx_relay_metrics_shm = m;
    ngx_relay_metrics_zone = on ? m : NULL;
    m->off = !on;

    for (i = 0; i < NGX_RELAY_METRICS_PROCS; i++) {
        p = &m->procs[i];
        pid = p->pid;

        if (pid != 0 && ngx_relay_metrics_alive(p)) {
            continue;
        }

        if (!ngx_atomic_cmp_set(&p->pid, pid, (ngx_atomic_uint_t) ngx_pid)) {
            continue;
        }

        ngx_memzero(&p->figures, sizeof(ngx_relay_counters_t));
        ngx_memzero((void *) p->sessions, sizeof(p->sessions));
        p->idle = 0;

        ngx_relay_metrics_me = p;

        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                  "relay metrics: no free process slot, this process's "
                  "gauges are not counted");

    return NGX_OK;
}


void
ngx_relay_metrics_exit_process(void)
{
    ngx_relay_metrics_proc_t  *p;

    p = ngx_relay_metrics_me;

    if (p == NULL) {
        return;
    }

    ngx_relay_metrics_me = NULL;

    ngx_memzero(&p->figures, sizeof(ngx_relay_counters_t));
    ngx_memzero((void *) p->sessions, sizeof(p->sessions));
    p->idle = 0;

    ngx_memory_barrier();
    p->pid = 0;
}


/* where the schedule publishes its live figures */

ngx_relay_counters_t *
ngx_relay_metrics_figures(void)
{
    return ngx_relay_metrics_me ? &ngx_relay_metrics_me->figures
                                : &ngx_relay_metrics_no_figures;
}


static ngx_uint_t
ngx_relay_metrics_alive(ngx_relay_metrics_proc_t *p)
{
    ngx_pid_t  pid;

    pid = (ngx_pid_t) p->pid;

    if (pid == 0) {
        return 0;
    }

    return kill(pid, 0) == 0 || errno == EPERM;
}


/* ------------------------------------------------------------ counting */


uint64_t
ngx_relay_metrics_clock(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


/* a new SMTP session: counted now, and again when its pool goes */

void
ngx_relay_metrics_session(ngx_connection_t *c)
{
    ngx_uint_t                 l;
    ngx_pool_cleanup_t        *cln;
    ngx_relay_metrics_shm_t   *m;

    m = ngx_relay_metrics_zone;

    if (m == NULL || c->listening == NULL) {
        return;
    }

    l = ngx_relay_metrics_label(NGX_RELAY_LABEL_LISTENER,
                                c->listening->addr_text.data,
                                c->listening->addr_text.len);

    (void) ngx_atomic_fetch_add(&m->sessions[l], 1);

    if (ngx_relay_metrics_me == NULL) {
        return;
    }

    cln = ngx_pool_cleanup_add(c->pool, 0);
    if (cln == NULL) {
        return;
    }

    (void) ngx_atomic_fetch_add(&ngx_relay_metrics_me->sessions[l], 1);

    cln->handler = ngx_relay_metrics_session_end;
    cln->data = (void *) &ngx_relay_metrics_me->sessions[l];
}


static void
ngx_relay_metrics_session_end(void *data)
{
    ngx_atomic_t  *n = data;

    if (ngx_relay_metrics_me) {
        (void) ngx_atomic_fetch_add(n, (ngx_atomic_int_t) -1);
    }
}


/* a reply of the SMTP server: a 4xx or 5xx is a refusal, by its reason */

void
ngx_relay_metrics_reply(u_char *line, size_t len)
{
    if (ngx_relay_metrics_zone == NULL || len < 3
        || (line[0] != '4' && line[0] != '5'))
    {
        return;
    }

    (void) ngx_atomic_fetch_add(
        &ngx_relay_metrics_zone->rejections[
                              ngx_relay_metrics_reject_reason(line, len)], 1);
}


static ngx_uint_t
ngx_relay_metrics_reject_reason(u_char *line, size_t len)
{
    u_char       *last, enh[8];
    ngx_uint_t    code, n;

    last = line + len;
    code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');

    /* the enhanced code after the reply code: "c.s.d" */

    n = 0;

    if (len > 4) {
        for (line += 4; line < last && *line != ' ' && n < sizeof(enh) - 1;
             line++)
        {
            enh[n++] = *line;
        }
    }

    enh[n] = '\0';

    if (ngx_strcmp(enh, "5.7.1") == 0) {
        return code == 554 ? ngx_relay_reject_relay_denied
                           : ngx_relay_reject_policy;
    }

    if (ngx_strcmp(enh, "5.1.1") == 0) {
        return ngx_relay_reject_unknown_user;
    }

    if (ngx_strcmp(enh, "5.1.3") == 0 || ngx_strcmp(enh, "5.1.7") == 0
        || ngx_strcmp(enh, "5.6.7") == 0)
    {
        return ngx_relay_reject_bad_address;
    }

    if (ngx_strcmp(enh, "5.3.4") == 0) {
        return ngx_relay_reject_message_size;
    }

    if (ngx_strcmp(enh, "5.5.1") == 0) {
        return ngx_relay_reject_sequence;
    }

    if (ngx_strncmp(enh, "5.5.", 4) == 0) {
        return ngx_relay_reject_syntax;
    }

    if (ngx_strcmp(enh, "4.7.1") == 0
        || (ngx_strcmp(enh, "4.5.3") == 0
            && ngx_strlcasestrn(line, last, (u_char *) "try again later", 14)
               != NULL))
    {
        return ngx_relay_reject_limit;
    }

    if (ngx_strcmp(enh, "4.5.3") == 0) {
        return ngx_relay_reject_too_many_recipients;
    }

    if (code == 530 || ngx_strcmp(enh, "5.7.0") == 0) {
        return code == 530 ? ngx_relay_reject_tls_required
                           : ngx_relay_reject_auth_failed;
    }

    if (ngx_strcmp(enh, "5.7.8") == 0
        || (code == 454 && ngx_strcmp(enh, "4.7.0") == 0))
    {
        return ngx_relay_reject_auth_failed;
    }

    if (ngx_strcmp(enh, "5.6.0") == 0) {
        return ngx_relay_reject_bad_data;
    }

    if (code == 421) {
        if (ngx_strcmp(enh, "4.7.0") == 0) {
            return ngx_relay_reject_too_many_errors;
        }

        if (ngx_strcmp(enh, "4.4.2") == 0) {
            return ngx_relay_reject_timeout;
        }

        if (ngx_strcmp(enh, "4.3.2") == 0) {
            return ngx_relay_reject_shutdown;
        }
    }

    if (ngx_strncmp(enh, "4.3.", 4) == 0) {
        return ngx_relay_reject_local_error;
    }

    return ngx_relay_reject_other;
}


/* a message the spool made durable ("250"), with its listener and tenant */

void
ngx_relay_metrics_accepted(ngx_str_t *listener, ngx_str_t *tenant,
    ngx_uint_t rcpts, off_t size, uint64_t eod)
{
    ngx_uint_t                l, t;
    ngx_relay_metrics_shm_t  *m;

    m = ngx_relay_metrics_zone;

    if (m == NULL) {
        return;
    }

    l = ngx_relay_metrics_label(NGX_RELAY_LABEL_LISTENER, listener->data,
                                listener->len);
    t = ngx_relay_metrics_label(NGX_RELAY_LABEL_TENANT, tenant->data,
                                tenant->len);

    (void) ngx_atomic_fetch_add(&m->messages[l], 1);
    (void) ngx_atomic_fetch_add(&m->rcpts[l], rcpts);
    (void) ngx_atomic_fetch_add(&m->bytes[l], size);

    (void) ngx_atomic_fetch_add(&m->tenant[t][NGX_RELAY_TENANT_MESSAGES], 1);
    (void) ngx_atomic_fetch_add(&m->tenant[t][NGX_RELAY_TENANT_RCPTS],
                                rcpts);
    (void) ngx_atomic_fetch_add(&m->tenant[t][NGX_RELAY_TENANT_BYTES], size);

    if (eod) {
        ngx_relay_metrics_observe(&m->eod, ngx_relay_fast_bounds,
                                  ngx_relay_metrics_clock() - eod);
    }
}


/* a MAIL command held back by in-flow control */

void
ngx_relay_metrics_flow_delayed(void)
{
    if (ngx_relay_metrics_zone) {
        (void) ngx_atomic_fetch_add(&ngx_relay_metrics_zone->flow_delayed, 1);
    }
}


/*
 * An inbound limit refused: the rule is in the words the limits gave for
 * the log, "... (inbound_limit client_ip 10.0.0.0/8), 12 s to wait".
 */

void
ngx_relay_metrics_limited(u_char *why)
{
    u_char     *p, *q;
    ngx_str_t   rule;

    if (ngx_relay_metrics_zone == NULL) {
        return;
    }

    (void) ngx_atomic_fetch_add(&ngx_relay_metrics_zone->inbound_limited, 1);

    ngx_str_null(&rule);

    p = (u_char *) ngx_strstr(why, "(inbound_limit ");

    if (p) {
        q = (u_char *) ngx_strchr(p, ')');

        if (q) {
            rule.data = p + 1;
            rule.len = q - p - 1;
        }
    }

    ngx_relay_metrics_rule(&rule);
}


static void
ngx_relay_metrics_rule(ngx_str_t *rule)
{
    ngx_uint_t  r;

    r = ngx_relay_metrics_label(NGX_RELAY_LABEL_RULE, rule->data, rule->len);

    (void) ngx_atomic_fetch_add(&ngx_relay_metrics_zone->limits[r], 1);
}


/* one recipient's attempt: local or remote, its outcome and category */

void
ngx_relay_metrics_delivery(ngx_relay_metrics_delivery_t *md)
{
    u_char                    buf[NGX_RELAY_LABEL_LEN + 32];
    time_t                    delay;
    ngx_str_t                 rule;
    ngx_uint_t                o, t, d, e, local;
    ngx_relay_metrics_shm_t  *m;

    m = ngx_relay_metrics_zone;

    if (m == NULL || md->outcome >= NGX_RELAY_OUTCOMES) {
        return;
    }

    o = md->outcome;
    local = md->local;

    (void) ngx_atomic_fetch_add(&m->deliveries[local][o], 1);

    t = ngx_relay_metrics_label(NGX_RELAY_LABEL_TENANT, md->tenant.data,
                                md->tenant.len);
    (void) ngx_atomic_fetch_add(&m->tenant[t][NGX_RELAY_TENANT_OUTCOME + o],
                                1);

    if (o == NGX_RELAY_OUTCOME_SENT) {
        (void) ngx_atomic_fetch_add(&m->delivered_bytes[local], md->size);

        delay = ngx_time() - md->arrival;
        ngx_relay_metrics_observe(&m->delay[local], ngx_relay_slow_bounds,
                                  delay > 0 ? (uint64_t) delay * 1000000 : 0);

    } else {
        (void) ngx_atomic_fetch_add(
                          &m->classified[o][md->category % RELAY_CLASS_N], 1);
    }

    if (local) {
        return;
    }

    d = ngx_relay_metrics_label(NGX_RELAY_LABEL_DESTINATION,
                                md->destination.data, md->destination.len);
    (void) ngx_atomic_fetch_add(&m->destination[d][o], 1);

    if (md->pool.len) {
        e = ngx_relay_metrics_label(NGX_RELAY_LABEL_EGRESS, buf,
                                    ngx_snprintf(buf, sizeof(buf), "%V %V",
                                                 &md->pool, &md->address)
                                    - buf);
        (void) ngx_atomic_fetch_add(&m->egress[e][o], 1);

    } else {
        (void) ngx_atomic_fetch_add(&m->egress[0][o], 1);
    }

    if (md->throttled) {
        rule.data = buf;
        rule.len = ngx_snprintf(buf, sizeof(buf), "destination_limit %V",
                                &md->destination)
                   - buf;
        ngx_relay_metrics_rule(&rule);
    }
}


void
ngx_relay_metrics_dsn(ngx_uint_t kind)
{
    if (ngx_relay_metrics_zone && kind < 3) {
        (void) ngx_atomic_fetch_add(&ngx_relay_metrics_zone->dsn[kind], 1);
    }
}


void
ngx_relay_metrics_operator(const char *action, ngx_uint_t n)
{
    ngx_uint_t  i;

    if (ngx_relay_metrics_zone == NULL) {
        return;
    }

    for (i = 0; i < NGX_RELAY_OPERATOR_ACTIONS - 1; i++) {
        if (ngx_strcmp(action, ngx_relay_operator_names[i]) == 0) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&ngx_relay_metrics_zone->operator[i], n);
}


/* a commit group's or a checkpoint's sync, from started until now */

void
ngx_relay_metrics_sync(ngx_uint_t kind, uint64_t started)
{
    if (ngx_relay_metrics_zone && kind < NGX_RELAY_METRICS_SYNC_KINDS
        && started)
    {
        ngx_relay_metrics_observe(&ngx_relay_metrics_zone->sync[kind],
                                  ngx_relay_fast_bounds,
                                  ngx_relay_metrics_clock() - started);
    }
}


void
ngx_relay_metrics_dns(uint64_t started)
{
    if (ngx_relay_metrics_zone && started) {
        ngx_relay_metrics_observe(&ngx_relay_metrics_zone->dns,
                                  ngx_relay_fast_bounds,
                                  ngx_relay_metrics_clock() - started);
    }
}


/* a delivery took a cached connection (hit), or made a new one (miss) */

void
ngx_relay_metrics_cache(ngx_uint_t hit)
{
    if (ngx_relay_metrics_zone) {
        (void) ngx_atomic_fetch_add(hit ? &ngx_relay_metrics_zone->cache_hits
                                        : &ngx_relay_metrics_zone->cache_misses,
                                    1);
    }
}


/* a connection went into (1) or out of (-1) this process's idle cache */

void
ngx_relay_metrics_idle(ngx_int_t n)
{
    if (ngx_relay_metrics_me) {
        (void) ngx_atomic_fetch_add(&ngx_relay_metrics_me->idle,
                                    (ngx_atomic_int_t) n);
    }
}


/* the control client; its thread may call this (atomic stores only) */

void
ngx_relay_metrics_control(ngx_uint_t event, uint64_t version)
{
    ngx_relay_metrics_shm_t  *m;

    m = ngx_relay_metrics_zone;

    if (m == NULL) {
        return;
    }

    switch (event) {

    case NGX_RELAY_METRICS_CONTROL_ON:
        m->control = 1;
        m->applied = version;
        m->connected = 0;
        break;

    case NGX_RELAY_METRICS_CONTROL_UP:
        m->connected = 1;
        break;

    case NGX_RELAY_METRICS_CONTROL_DOWN:
        m->connected = 0;
        break;

    case NGX_RELAY_METRICS_CONTROL_ACK:
        m->applied = version;
        m->applied_at = time(NULL);
        break;

    default: /* NGX_RELAY_METRICS_CONTROL_NACK */
        (void) ngx_atomic_fetch_add(&m->refused, 1);
        break;
    }
}


void
ngx_relay_metrics_account(ngx_uint_t records, ngx_uint_t errors)
{
    if (ngx_relay_metrics_zone) {
        (void) ngx_atomic_fetch_add(&ngx_relay_metrics_zone->records,
                                    records);
        (void) ngx_atomic_fetch_add(&ngx_relay_metrics_zone->record_errors,
                                    errors);
    }
}


static void
ngx_relay_metrics_observe(ngx_relay_histogram_t *h, const uint64_t *bounds,
    uint64_t us)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_RELAY_METRICS_BUCKETS && us > bounds[i]; i++) {
        /* void */
    }

    if (i < NGX_RELAY_METRICS_BUCKETS) {
        (void) ngx_atomic_fetch_add(&h->buckets[i], 1);
    }

    (void) ngx_atomic_fetch_add(&h->sum, us);
    (void) ngx_atomic_fetch_add(&h->count, 1);
}


/* --------------------------------------------- the node's status */


/* the live figures of the process in slot i, NULL: free, or it is gone */

ngx_relay_counters_t *
ngx_relay_metrics_process(ngx_uint_t i)
{
    ngx_relay_metrics_proc_t  *p;

    if (ngx_relay_metrics_shm == NULL || i >= NGX_RELAY_METRICS_PROCS) {
        return NULL;
    }

    p = &ngx_relay_metrics_shm->procs[i];

    return ngx_relay_metrics_alive(p) ? &p->figures : NULL;
}


void
ngx_relay_metrics_totals(ngx_relay_metrics_totals_t *t)
{
    ngx_uint_t                i, j;
    ngx_relay_metrics_shm_t  *m;

    ngx_memzero(t, sizeof(ngx_relay_metrics_totals_t));

    m = ngx_relay_metrics_zone;

    if (m == NULL) {
        return;
    }

    for (i = 0; i < NGX_RELAY_LISTENERS; i++) {
        t->accepted += m->messages[i];
    }

    for (i = 0; i < 2; i++) {
        t->delivered += m->deliveries[i][NGX_RELAY_OUTCOME_SENT];
        t->deferred += m->deliveries[i][NGX_RELAY_OUTCOME_DEFERRED];
        t->bounced += m->deliveries[i][NGX_RELAY_OUTCOME_BOUNCED]
                      + m->deliveries[i][NGX_RELAY_OUTCOME_EXPIRED];
    }

    t->limited = m->inbound_limited;

    for (j = 0; j < RELAY_CLASS_N; j++) {
        t->deferred_by[j] = m->classified[NGX_RELAY_OUTCOME_DEFERRED][j];
        t->bounced_by[j] = m->classified[NGX_RELAY_OUTCOME_BOUNCED][j]
                           + m->classified[NGX_RELAY_OUTCOME_EXPIRED][j];
    }
}


/* ------------------------------------------------------------ labels */


/*
 * The index of a label value, interned at its first sight.  Readers
 * probe the slots without a lock: a slot is set only after its value is
 * written, and values are never removed.
 */

static ngx_uint_t
ngx_relay_metrics_label(ngx_uint_t table, u_char *data, size_t len)
{
    uint32_t                  hash;
    ngx_uint_t                i, idx, locked;
    ngx_shmtx_t              *mutex;
    ngx_relay_label_t        *v;
    ngx_relay_label_table_t  *t;

    t = &ngx_relay_metrics_zone->labels[table];
    mutex = &ngx_relay_metrics_zone->shpool->mutex;
    len = ngx_min(len, NGX_RELAY_LABEL_LEN);

    if (len == 0) {
        data = (u_char *) "";            /* memcmp() and memcpy() want one */
    }

    hash = ngx_crc32_short(data, len);

    for (locked = 0; /* void */; locked = 1) {

        for (i = hash & (NGX_RELAY_LABEL_SLOTS - 1);
             t->slots[i];
             i = (i + 1) & (NGX_RELAY_LABEL_SLOTS - 1))
        {
            idx = t->slots[i] - 1;
            v = &t->values[idx];

            if (v->len == len && ngx_memcmp(v->name, data, len) == 0) {
                if (locked) {
                    ngx_shmtx_unlock(mutex);
                }

                return idx;
            }
        }

        if (locked) {
            break;
        }

        /* a new value: look again under the zone's lock, then add it */

        ngx_shmtx_lock(mutex);
    }

    idx = t->n;

    if (idx < ngx_relay_label_caps[table]) {
        ngx_relay_metrics_intern(t, idx, i, data, len);

    } else {
        (void) ngx_atomic_fetch_add(&t->overflows, 1);
        idx = 0;
    }

    ngx_shmtx_unlock(mutex);

    return idx;
}


static void
ngx_relay_metrics_intern(ngx_relay_label_table_t *t, ngx_uint_t index,
    ngx_uint_t slot, u_char *data, size_t len)
{
    ngx_relay_label_t  *v;

    v = &t->values[index];
    ngx_memcpy(v->name, data, len);
    v->len = len;

    ngx_memory_barrier();

    t->slots[slot] = (uint16_t) (index + 1);
    t->n = index + 1;
}


/* ---------------------------------------------------------- exposition */


/*
 * The Prometheus text format, version 0.0.4: every family once, with its
 * HELP and TYPE lines, then its samples; label values escaped ("\\", "\"",
 * "\n").  Gauges of processes are the sums over the live ones.
 */

ngx_int_t
ngx_relay_metrics_render(ngx_cycle_t *cycle, ngx_pool_t *pool,
    ngx_chain_t **chain, off_t *len)
{
    ngx_relay_metrics_out_t   out;
    ngx_relay_metrics_shm_t  *m;

    m = ngx_relay_metrics_find(cycle);
    if (m == NULL || m->off) {
        return NGX_DECLINED;
    }

    ngx_memzero(&out, sizeof(ngx_relay_metrics_out_t));
    out.pool = pool;
    out.last = &out.first;

    ngx_relay_metrics_render_smtp(&out, m);
    ngx_relay_metrics_render_deliveries(&out, m);
    ngx_relay_metrics_render_queue(&out, m);
    ngx_relay_metrics_render_rest(&out, m);

    if (out.failed || out.first == NULL) {
        return NGX_ERROR;
    }

    out.b->last_buf = 1;
    out.b->last_in_chain = 1;

    *chain = out.first;
    *len = out.len;

    return NGX_OK;
}


static void
ngx_relay_metrics_render_smtp(ngx_relay_metrics_out_t *out,
    ngx_relay_metrics_shm_t *m)
{
    u_char                     buf[NGX_RELAY_LABEL_BUF];
    ngx_str_t                  v, *l;
    ngx_uint_t                 i, j, n;
    ngx_atomic_uint_t          active;
    ngx_relay_metrics_proc_t  *p;

    static const char  *names[] = {
        "relay_accepted_messages_total",
        "relay_accepted_recipients_total",
        "relay_accepted_bytes_total"
    };

    static const char  *helps[] = {
        "Messages accepted (\"250\" after the end of data), by listener.",
        "Recipients of the messages accepted, by listener.",
        "Octets of the messages accepted, by listener."
    };

    v.data = buf;
    n = m->labels[NGX_RELAY_LABEL_LISTENER].n;

    ngx_relay_metrics_family(out, "relay_smtp_sessions_active", "gauge",
                             "SMTP sessions open now, by listener.");

    for (i = 0; i < n; i++) {
        active = 0;

        for (j = 0; j < NGX_RELAY_METRICS_PROCS; j++) {
            p = &m->procs[j];

            if (ngx_relay_metrics_alive(p)) {
                active += p->sessions[i];
            }
        }

        if (i == 0 && active == 0 && m->sessions[0] == 0) {
            continue;
        }

        l = ngx_relay_metrics_labels(m, NGX_RELAY_LABEL_LISTENER, i, &v);
        ngx_relay_metrics_printf(out, "relay_smtp_sessions_active"
                                 "{%V} %A\n", l,
                                 (ngx_atomic_int_t) active);
    }

    ngx_relay_metrics_family(out, "relay_smtp_sessions_total", "counter",
                             "SMTP sessions since the counters started, by "
                             "listener.");

    for (i = 0; i < n; i++) {
        if (i == 0 && m->sessions[0] == 0) {
            continue;
        }

        l = ngx_relay_metrics_labels(m, NGX_RELAY_LABEL_LISTENER, i, &v);
        ngx_relay_metrics_printf(out, "relay_smtp_sessions_total"
                                 "{%V} %uA\n", l,
                                 m->sessions[i]);
    }

    ngx_relay_metrics_family(out, "relay_smtp_rejections_total", "counter",
                             "4xx and 5xx replies of the SMTP server, by "
                             "reason.");

    for (i = 0; i < ngx_relay_reject_n; i++) {
        ngx_relay_metrics_printf(out, "relay_smtp_rejections_total"
                                 "{reason=\"%s\"} %uA\n",
                                 ngx_relay_reject_names[i],
                                 m->rejections[i]);
    }

    ngx_relay_metrics_family(out, "relay_smtp_flow_delays_total", "counter",
                             "MAIL commands held back by in-flow control "
                             "(relay_in_flow_memory held by messages "
                             "awaiting their first attempt).");
    ngx_relay_metrics_printf(out, "relay_smtp_flow_delays_total %uA\n",
                             m->flow_delayed);

    for (j = 0; j < 3; j++) {
        ngx_relay_metrics_family(out, names[j], "counter", helps[j]);

        for (i = 0; i < n; i++) {
            if (i == 0 && m->messages[0] == 0) {
                continue;
            }

            l = ngx_relay_metrics_labels(m, NGX_RELAY_LABEL_LISTENER, i, &v);
            ngx_relay_metrics_printf(out, "%s{%V} %uA\n",
                                     names[j], l,
                                     j == 0 ? m->messages[i]
                                     : j == 1 ? m->rcpts[i] : m->bytes[i]);
        }
    }
}


static void
ngx_relay_metrics_render_deliveries(ngx_relay_metrics_out_t *out,
    ngx_relay_metrics_shm_t *m)
{
    u_char             buf[NGX_RELAY_LABEL_BUF];
    ngx_str_t          v, *l;
    ngx_uint_t         i, j, k, n;

    static const char  *tenant_names[] = {
        "relay_tenant_accepted_messages_total",
        "relay_tenant_accepted_recipients_total",
        "relay_tenant_accepted_bytes_total"
    };

    static const char  *tenant_helps[] = {
        "Messages accepted, by tenant (relay_tenant of the listener).",
        "Recipients accepted, by tenant.",
        "Octets accepted, by tenant."
    };

    v.data = buf;

    ngx_relay_metrics_family(out, "relay_deliveries_total", "counter",
                             "Delivery attempts of recipients, by class "
                             "(local: Maildir, remote: SMTP) and outcome.");

    for (i = 0; i < 2; i++) {
        for (j = 0; j < NGX_RELAY_OUTCOMES; j++) {
            ngx_relay_metrics_printf(out, "relay_deliveries_total"
                                     "{class=\"%s\",outcome=\"%s\"} %uA\n",
                                     i ? "local" : "remote",
                                     ngx_relay_outcome_names[j],
                                     m->deliveries[i][j]);
        }
    }

    ngx_relay_metrics_family(out, "relay_delivered_bytes_total", "counter",
                             "Octets delivered: the message size for each "
                             "recipient sent, by class.");

    for (i = 0; i < 2; i++) {
        ngx_relay_metrics_printf(out, "relay_delivered_bytes_total"
                                 "{class=\"%s\"} %uA\n",
                                 i ? "local" : "remote",
                                 m->delivered_bytes[i]);
    }

    ngx_relay_metrics_family(out, "relay_deliveries_classified_total",
                             "counter",
                             "Deferrals, bounces and expiries, by outcome "
                             "and bounce category.");

    for (j = NGX_RELAY_OUTCOME_DEFERRED; j < NGX_RELAY_OUTCOMES; j++) {
        for (k = 0; k < RELAY_CLASS_N; k++) {
            ngx_relay_metrics_printf(out, "relay_deliveries_classified_total"
                                     "{outcome=\"%s\",category=\"%s\"} "
                                     "%uA\n", ngx_relay_outcome_names[j],
                                     relay_classify_name(k),
                                     m->classified[j][k]);
        }
    }

    /* per destination pattern, per egress address, per tenant */

    ngx_relay_metrics_family(out, "relay_destination_deliveries_total",
                             "counter",
                             "Remote delivery attempts of recipients, by "
                             "the policy's destination pattern that "
                             "matched their domain (\"*\": none) and "
                             "outcome.");
    ngx_relay_metrics_by_outcome(out, m, NGX_RELAY_LABEL_DESTINATION,
                                 m->destination[0], NGX_RELAY_OUTCOMES,
                                 "relay_destination_deliveries_total");

    ngx_relay_metrics_family(out, "relay_egress_deliveries_total", "counter",
                             "Remote delivery attempts of recipients, by "
                             "egress pool and source address (both \"\": "
                             "no pool) and outcome.");
    ngx_relay_metrics_by_outcome(out, m, NGX_RELAY_LABEL_EGRESS,
                                 m->egress[0], NGX_RELAY_OUTCOMES,
                                 "relay_egress_deliveries_total");

    n = m->labels[NGX_RELAY_LABEL_TENANT].n;

    for (k = 0; k < 3; k++) {
        ngx_relay_metrics_family(out, tenant_names[k], "counter",
                                 tenant_helps[k]);

        for (i = 0; i < n; i++) {
            l = ngx_relay_metrics_labels(m, NGX_RELAY_LABEL_TENANT, i, &v);
            ngx_relay_metrics_printf(out, "%s{%V} %uA\n", tenant_names[k],
                                     l, m->tenant[i][k]);
        }
    }

    ngx_relay_metrics_family(out, "relay_tenant_deliveries_total", "counter",
                             "Delivery attempts of recipients, by tenant and "
                             "outcome.");
    ngx_relay_metrics_by_outcome(out, m, NGX_RELAY_LABEL_TENANT,
                                 &m->tenant[0][NGX_RELAY_TENANT_OUTCOME],
                                 NGX_RELAY_TENANT_N,
                                 "relay_tenant_deliveries_total");

    ngx_relay_metrics_family(out, "relay_dsn_total", "counter",
                             "Delivery status notifications queued, by "
                             "type.");
    ngx_relay_metrics_printf(out, "relay_dsn_total{type=\"failure\"} %uA\n"
                             "relay_dsn_total{type=\"delay\"} %uA\n"
                             "relay_dsn_total{type=\"success\"} %uA\n",
                             m->dsn[0], m->dsn[1], m->dsn[2]);

    ngx_relay_metrics_family(out, "relay_operator_actions_total", "counter",
                             "Messages an operator's queue command changed, "
                             "by action.");

    for (i = 0; i < NGX_RELAY_OPERATOR_ACTIONS; i++) {
        ngx_relay_metrics_printf(out, "relay_operator_actions_total"
                                 "{action=\"%s\"} %uA\n",
                                 ngx_relay_operator_names[i],
                                 m->operator[i]);
    }
}


static void
ngx_relay_metrics_render_queue(ngx_relay_metrics_out_t *out,
    ngx_relay_metrics_shm_t *m)
{
    time_t                     now, oldest;
    ngx_uint_t                 i, j;
    ngx_atomic_uint_t          states[NGX_RELAY_QUEUE_STATES];
    ngx_atomic_uint_t          rcpts[NGX_RELAY_QUEUE_STATES], idle;
    ngx_relay_counters_t      *c;
    ngx_relay_metrics_proc_t  *p;

    ngx_memzero(states, sizeof(states));
    ngx_memzero(rcpts, sizeof(rcpts));
    oldest = 0;
    idle = 0;

    for (i = 0; i < NGX_RELAY_METRICS_PROCS; i++) {
        p = &m->procs[i];

        if (!ngx_relay_metrics_alive(p)) {
            continue;
        }

        c = &p->figures;

        for (j = 0; j < NGX_RELAY_QUEUE_STATES; j++) {
            states[j] += c->states[j];
            rcpts[j] += c->state_rcpts[j];
        }

        if (c->oldest && (oldest == 0 || (time_t) c->oldest < oldest)) {
            oldest = c->oldest;
        }

        idle += p->idle;
    }

    ngx_relay_metrics_family(out, "relay_queue_messages", "gauge",
                             "Messages in the queue now, by state (new, "
                             "deferred, active, held, parked: waiting for "
                             "an unreachable destination).");

    for (j = 0; j < NGX_RELAY_QUEUE_STATES; j++) {
        ngx_relay_metrics_printf(out, "relay_queue_messages{state=\"%s\"} "
                                 "%A\n", ngx_relay_state_names[j],
                                 (ngx_atomic_int_t) states[j]);
    }

    ngx_relay_metrics_family(out, "relay_queue_recipients", "gauge",
                             "Pending recipients in the queue now, by the "
                             "state of their message.");

    for (j = 0; j < NGX_RELAY_QUEUE_STATES; j++) {
        ngx_relay_metrics_printf(out, "relay_queue_recipients"
                                 "{state=\"%s\"} %A\n",
                                 ngx_relay_state_names[j],
                                 (ngx_atomic_int_t) rcpts[j]);
    }

    now = ngx_time();

    ngx_relay_metrics_family(out, "relay_queue_oldest_message_age_seconds",
                             "gauge",
                             "Age of the oldest message in the queue (0: "
                             "empty).");
    ngx_relay_metrics_printf(out, "relay_queue_oldest_message_age_seconds "
                             "%T\n",
                             (oldest && oldest < now) ? now - oldest : 0);

    ngx_relay_metrics_family(out, "relay_connection_cache_idle", "gauge",
                             "Idle SMTP connections to other servers in "
                             "the connection cache now.");
    ngx_relay_metrics_printf(out, "relay_connection_cache_idle %A\n",
                             (ngx_atomic_int_t) idle);
}


static void
ngx_relay_metrics_render_rest(ngx_relay_metrics_out_t *out,
    ngx_relay_metrics_shm_t *m)
{
    u_char                             buf[NGX_RELAY_LABEL_BUF];
    u_char                             labels[64];
    time_t                             now;
    ngx_str_t                          v, *l;
    ngx_uint_t                         i, n;
    const ngx_relay_metrics_scalar_t  *sc;

    v.data = buf;

    for (i = 0; i < sizeof(ngx_relay_metrics_scalars)
                    / sizeof(ngx_relay_metrics_scalar_t); i++)
    {
        sc = &ngx_relay_metrics_scalars[i];

        if (sc->control && !m->control) {
            continue;
        }

        ngx_relay_metrics_family(out, sc->name, sc->type, sc->help);
        ngx_relay_metrics_printf(out, "%s %uA\n", sc->name,
                                 *(ngx_atomic_t *) ((u_char *) m
                                                    + sc->offset));
    }

    ngx_relay_metrics_family(out, "relay_limit_hits_total", "counter",
                             "Refusals and delays by a limit, by the policy "
                             "statement that limited (inbound_limit KEY "
                             "MATCH, destination_limit PATTERN).");

    n = m->labels[NGX_RELAY_LABEL_RULE].n;

    for (i = 0; i < n; i++) {
        if (i == 0 && m->limits[0] == 0) {
            continue;
        }

        l = ngx_relay_metrics_labels(m, NGX_RELAY_LABEL_RULE, i, &v);
        ngx_relay_metrics_printf(out, "relay_limit_hits_total"
                                 "{%V} %uA\n", l, m->limits[i]);
    }

    ngx_relay_metrics_family(out, "relay_smtp_data_to_reply_seconds",
                             "histogram",
                             "From the end of data to the \"250\" (the "
                             "message durable).");
    ngx_relay_metrics_histogram(out, "relay_smtp_data_to_reply_seconds",
                                NULL, &m->eod, ngx_relay_fast_bounds);

    ngx_relay_metrics_family(out, "relay_delivery_delay_seconds",
                             "histogram",
                             "From arrival to delivery, of recipients "
                             "sent, by class.");
    ngx_relay_metrics_histogram(out, "relay_delivery_delay_seconds",
                                "class=\"remote\"", &m->delay[0],
                                ngx_relay_slow_bounds);
    ngx_relay_metrics_histogram(out, "relay_delivery_delay_seconds",
                                "class=\"local\"", &m->delay[1],
                                ngx_relay_slow_bounds);

    ngx_relay_metrics_family(out, "relay_spool_sync_seconds", "histogram",
                             "Syncs of the spool: a commit group through "
                             "the journal, syncfs() or per-file syncs, and "
                             "journal checkpoints (retire: one that had no "
                             "queue file to sync).");

    for (i = 0; i < NGX_RELAY_METRICS_SYNC_KINDS; i++) {
        (void) ngx_snprintf(labels, sizeof(labels), "kind=\"%s\"%Z",
                            ngx_relay_sync_names[i]);
        ngx_relay_metrics_histogram(out, "relay_spool_sync_seconds",
                                    (char *) labels, &m->sync[i],
                                    ngx_relay_fast_bounds);
    }

    ngx_relay_metrics_family(out, "relay_dns_lookup_seconds", "histogram",
                             "MX, A and AAAA lookups of deliveries.");
    ngx_relay_metrics_histogram(out, "relay_dns_lookup_seconds", NULL,
                                &m->dns, ngx_relay_fast_bounds);

    if (m->applied_at) {
        now = time(NULL);

        ngx_relay_metrics_family(out, "relay_control_last_apply_age_seconds",
                                 "gauge",
                                 "Seconds since the node last applied a "
                                 "version.");
        ngx_relay_metrics_printf(out, "relay_control_last_apply_age_seconds "
                                 "%T\n",
                                 now > (time_t) m->applied_at
                                 ? now - (time_t) m->applied_at : 0);
    }

    ngx_relay_metrics_family(out, "relay_metrics_label_overflows_total",
                             "counter",
                             "Label values that found their table full and "
                             "were counted under its first value, by "
                             "label.");

    for (i = 0; i < NGX_RELAY_LABELS; i++) {
        ngx_relay_metrics_printf(out, "relay_metrics_label_overflows_total"
                                 "{label=\"%s\"} %uA\n",
                                 ngx_relay_label_names[i],
                                 m->labels[i].overflows);
    }

    ngx_relay_metrics_family(out, "relay_metrics_start_time_seconds",
                             "gauge",
                             "When these counters started (a restart; a "
                             "reload keeps them).");
    ngx_relay_metrics_printf(out, "relay_metrics_start_time_seconds %T\n",
                             m->started);
}


/*
 * A family by a label and the outcome: rows[i * stride + outcome] for
 * value i of the table; the table's first value only when it was used.
 */

static void
ngx_relay_metrics_by_outcome(ngx_relay_metrics_out_t *out,
    ngx_relay_metrics_shm_t *m, ngx_uint_t table, ngx_atomic_t *rows,
    size_t stride, const char *name)
{
    u_char         buf[NGX_RELAY_LABEL_BUF];
    ngx_str_t      v, *l;
    ngx_uint_t     i, j, n;
    ngx_atomic_t  *row;

    v.data = buf;
    n = m->labels[table].n;

    for (i = 0; i < n; i++) {
        row = rows + i * stride;

        if (i == 0 && (row[0] | row[1] | row[2] | row[3]) == 0) {
            continue;
        }

        l = ngx_relay_metrics_labels(m, table, i, &v);

        for (j = 0; j < NGX_RELAY_OUTCOMES; j++) {
            ngx_relay_metrics_printf(out, "%s{%V,outcome=\"%s\"} %uA\n", name,
                                     l, ngx_relay_outcome_names[j], row[j]);
        }
    }
}


static void
ngx_relay_metrics_histogram(ngx_relay_metrics_out_t *out, const char *name,
    const char *labels, ngx_relay_histogram_t *h, const uint64_t *bounds)
{
    u_char            *p, le[32];
    uint64_t           sum;
    ngx_uint_t         i;
    const char        *comma;
    ngx_atomic_uint_t  count, cumulative;

    count = h->count;
    sum = h->sum;
    cumulative = 0;
    comma = labels ? "," : "";
    labels = labels ? labels : "";

    for (i = 0; i < NGX_RELAY_METRICS_BUCKETS; i++) {
        cumulative += h->buckets[i];

        /* "0.0005", "1", "2.5": the bound in seconds, no trailing zeros */

        p = ngx_sprintf(le, "%uL.%06uL", bounds[i] / 1000000,
                        bounds[i] % 1000000);

        while (p[-1] == '0') {
            p--;
        }

        if (p[-1] == '.') {
            p--;
        }

        ngx_relay_metrics_printf(out, "%s_bucket{%s%sle=\"%*s\"} %uA\n",
                                 name, labels, comma, p - le, le,
                                 ngx_min(cumulative, count));
    }

    ngx_relay_metrics_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %uA\n"
                             "%s_sum%s%s%s %uL.%06uL\n"
                             "%s_count%s%s%s %uA\n",
                             name, labels, comma, count,
                             name, labels[0] ? "{" : "", labels,
                             labels[0] ? "}" : "",
                             sum / 1000000, sum % 1000000,
                             name, labels[0] ? "{" : "", labels,
                             labels[0] ? "}" : "", count);
}


static void
ngx_relay_metrics_family(ngx_relay_metrics_out_t *out, const char *name,
    const char *type, const char *help)
{
    ngx_relay_metrics_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help,
                             name, type);
}


/*
 * The labels of value i of a table as the exposition writes them, into
 * buf: listener="...", ...; an egress value "pool address" becomes
 * pool="...",address="...".  Values are escaped ("\\", "\"", "\n").
 */

static ngx_str_t *
ngx_relay_metrics_labels(ngx_relay_metrics_shm_t *m, ngx_uint_t table,
    ngx_uint_t i, ngx_str_t *buf)
{
    u_char             *p, *s, *last;
    ngx_relay_label_t  *v;

    v = &m->labels[table].values[i];
    last = v->name + ngx_min(v->len, NGX_RELAY_LABEL_LEN);

    p = ngx_sprintf(buf->data, "%s=\"", table == NGX_RELAY_LABEL_EGRESS
                                        ? "pool"
                                        : ngx_relay_label_names[table]);

    for (s = v->name; s < last; s++) {
        if (*s == ' ' && table == NGX_RELAY_LABEL_EGRESS) {
            p = ngx_cpymem(p, "\",address=\"", 11);
            continue;
        }

        if (*s == '\\' || *s == '"' || *s == '\n') {
            *p++ = '\\';
            *p++ = (*s == '\n') ? 'n' : *s;
            continue;
        }

        *p++ = *s;
    }

    *p++ = '"';
    buf->len = p - buf->data;

    return buf;
}


static void
ngx_relay_metrics_printf(ngx_relay_metrics_out_t *out, const char *fmt, ...)
{
    u_char       *p;
    va_list       args;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (out->failed) {
        return;
    }

    b = out->b;

    if (b == NULL || b->end - b->last < 4096) {
        b = ngx_create_temp_buf(out->pool, 64 * 1024);
        cl = ngx_alloc_chain_link(out->pool);

        if (b == NULL || cl == NULL) {
            out->failed = 1;
            return;
        }

        cl->buf = b;
        cl->next = NULL;
        *out->last = cl;
        out->last = &cl->next;
        out->b = b;
    }

    va_start(args, fmt);
    p = ngx_vslprintf(b->last, b->end, fmt, args);
    va_end(args);

    out->len += p - b->last;
    b->last = p;
}
