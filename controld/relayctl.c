
/*
 * Copyright (C) The relay authors
 */


/*
 * relayctl: the operator CLI over controld's Admin service.
 *
 * One synchronous unary call per command: a pluck completion queue, one
 * batch of the six client ops, a deadline of --timeout seconds.  Calls
 * fail fast (no wait-for-ready), so an unreachable controld is an
 * UNAVAILABLE status and exit code 4 rather than a wait; one whose store
 * is unreachable says so in the trailer "relay-error: store" (exit 8).
 * apply, rollback and promote wait for the nodes (controld waits, up to
 * --timeout, then answers each node's outcome), so their call's deadline
 * is --timeout plus a margin.  Tables are aligned plain text; --json
 * prints the response message as JSON, field names as in control.proto,
 * enums by name, every field present.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <stdint.h>
#include <errno.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include "relay_classify.h"
#include "relay_json.h"
#include "relay_policy.h"
#include "relay_scope.h"
#include "relayctl.h"


#define CTLD_DEFAULT_SERVER    "127.0.0.1:7443"
#define CTLD_MAX_FILE          (16 * 1024 * 1024)
#define CTLD_WAIT_MARGIN       5              /* s: the call outlives a wait */

#define CTLD_METHOD(m)         "/relay.control.v1.Admin/" m


typedef struct {
    const char     *server;
    const char     *spool;          /* queue commands on this spool */
    const char     *ca;
    const char     *cert;
    const char     *key;
    double          timeout;
    double          margin;         /* added to the deadline (waits) */
    int             json;
    int             diagnosed;      /* ctld_cli_diagnose() ran */
    grpc_channel   *channel;
} ctld_cli_t;


typedef int (*ctld_cmd_pt)(ctld_cli_t *cli, int argc, char **argv);


typedef struct {
    const char     *name;
    ctld_cmd_pt     handler;
} ctld_cmd_t;


static int ctld_cli_apply(ctld_cli_t *cli, int argc, char **argv);
static int ctld_cli_diff(ctld_cli_t *cli, int argc, char **argv);
static int ctld_cli_check(ctld_cli_t *cli, int argc, char **argv);
static int ctld_cli_fmt(ctld_cli_t *cli, int argc, char **argv);
static int ctld_cli_get(ctld_cli_t *cli, int argc, char **argv);
static int ctld_cli_history(ctld_cli_t *cli, int argc, char **argv);
static int ctld_cli_rollback(ctld_cli_t *cli, int argc, char **argv);
static int ctld_cli_promote(ctld_cli_t *cli, int argc, char **argv);
static int ctld_cli_outcomes(ctld_cli_t *cli,
    Relay__Control__V1__ApplyResponse *r);
static int ctld_cli_nodes(ctld_cli_t *cli, int argc, char **argv);
static char *ctld_cli_labels(Relay__Control__V1__NodeInfo *n);
static void ctld_cli_nodes_destinations(
    Relay__Control__V1__ListNodesResponse *r);
static int ctld_cli_queue(ctld_cli_t *cli, int argc, char **argv);
static int ctld_cli_stats(ctld_cli_t *cli, int argc, char **argv);

static int ctld_cli_call(ctld_cli_t *cli, const char *method,
    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc,
    ProtobufCMessage **resp);
static int ctld_cli_connect(ctld_cli_t *cli);
static int ctld_cli_exit_code(grpc_status_code status);
static int ctld_cli_trailer(grpc_metadata_array *md, const char *kind);
static const char *ctld_cli_status_name(grpc_status_code status);
static char *ctld_cli_read_file(const char *name, size_t *len);
static relay_policy_t *ctld_cli_load(const char *file, int strip);
static int ctld_cli_print_apply(ctld_cli_t *cli,
    Relay__Control__V1__ApplyResponse *r, int dry_run, const char *what);
static int ctld_cli_number(const char *s, uint64_t *v);
static int ctld_cli_takes_value(const char *option);
static void ctld_cli_help(FILE *f);
static void ctld_cli_log(gpr_log_func_args *args);

static void ctld_json_message(FILE *f, const ProtobufCMessage *m,
    int indent);
static void ctld_json_value(FILE *f, const ProtobufCFieldDescriptor *fd,
    const void *v, int indent);
static const char *ctld_time_ago(int64_t t, char *buf, size_t len);


static const ctld_cmd_t  ctld_commands[] = {
    { "apply", ctld_cli_apply },
    { "diff", ctld_cli_diff },
    { "check", ctld_cli_check },
    { "fmt", ctld_cli_fmt },
    { "get", ctld_cli_get },
    { "history", ctld_cli_history },
    { "rollback", ctld_cli_rollback },
    { "promote", ctld_cli_promote },
    { "nodes", ctld_cli_nodes },
    { "queue", ctld_cli_queue },
    { "stats", ctld_cli_stats },
    { NULL, NULL }
};


/* an operator's bounce rules (--bounce-rules), before the built-in ones */

static relay_classify_rules_t  *ctld_cli_rules;


int
main(int argc, char **argv)
{
    int                rc, n, i;
    char              *end, **rest, err[512];
    const char        *s, *rules;
    ctld_cli_t         cli;
    const ctld_cmd_t  *cmd;

    memset(&cli, 0, sizeof(ctld_cli_t));

    s = getenv("RELAYCTL_SERVER");
    cli.server = (s && *s) ? s : CTLD_DEFAULT_SERVER;
    cli.ca = getenv("RELAYCTL_CA");
    cli.cert = getenv("RELAYCTL_CERT");
    cli.key = getenv("RELAYCTL_KEY");
    cli.spool = getenv("RELAYCTL_SPOOL");
    cli.timeout = 10;
    rules = getenv("RELAYCTL_BOUNCE_RULES");

    rest = calloc(argc + 1, sizeof(char *));
    if (rest == NULL) {
        ctld_cli_error("out of memory");
        return CTLD_EXIT_OTHER;
    }

    /* global options anywhere; command options with a value kept whole */

    n = 0;

    for (i = 1; i < argc; i++) {

#define ctld_cli_value()                                                      \
        if (i + 1 >= argc) {                                                  \
            return ctld_cli_usage("option \"%s\" needs a value", argv[i]);    \
        }                                                                     \
        s = argv[++i]

        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            ctld_cli_help(stdout);
            return CTLD_EXIT_OK;
        }

        if (strcmp(argv[i], "-V") == 0 || strcmp(argv[i], "--version") == 0)
        {
            printf("relayctl (nginx-relay) %s\n"
                   "gRPC core %s, protobuf-c %s\n",
                   RELAY_VERSION, grpc_version_string(),
                   protobuf_c_version());
            return CTLD_EXIT_OK;
        }

        if (strcmp(argv[i], "-s") == 0 || strcmp(argv[i], "--server") == 0) {
            ctld_cli_value();
            cli.server = s;

        } else if (strcmp(argv[i], "--ca") == 0) {
            ctld_cli_value();
            cli.ca = s;

        } else if (strcmp(argv[i], "--cert") == 0) {
            ctld_cli_value();
            cli.cert = s;

        } else if (strcmp(argv[i], "--key") == 0) {
            ctld_cli_value();
            cli.key = s;

        } else if (strcmp(argv[i], "--spool") == 0) {
            ctld_cli_value();
            cli.spool = s;

        } else if (strcmp(argv[i], "--json") == 0) {
            cli.json = 1;

        } else if (strcmp(argv[i], "--bounce-rules") == 0) {
            ctld_cli_value();
            rules = s;

        } else if (strcmp(argv[i], "--timeout") == 0) {
            ctld_cli_value();
            errno = 0;
            cli.timeout = strtod(s, &end);

            if (errno || *end != '\0' || end == s || !(cli.timeout > 0)
                || cli.timeout > 86400)
            {
                return ctld_cli_usage("bad --timeout \"%s\"", s);
            }

        } else if (ctld_cli_takes_value(argv[i])) {
            rest[n++] = argv[i];

            if (i + 1 < argc) {
                rest[n++] = argv[++i];
            }

        } else {
            rest[n++] = argv[i];
        }

#undef ctld_cli_value
    }

    if (n == 0) {
        return ctld_cli_usage("missing command");
    }

    if ((cli.cert == NULL) != (cli.key == NULL)) {
        return ctld_cli_usage("--cert and --key go together");
    }

    if (rules && rules[0]) {
        ctld_cli_rules = calloc(1, sizeof(relay_classify_rules_t));

        if (ctld_cli_rules == NULL
            || relay_classify_load(ctld_cli_rules, rules, err, sizeof(err))
               != 0)
        {
            ctld_cli_error("%s", ctld_cli_rules ? err : "out of memory");
            return CTLD_EXIT_INVALID;
        }
    }

    for (cmd = ctld_commands; cmd->name; cmd++) {
        if (strcmp(cmd->name, rest[0]) == 0) {
            break;
        }
    }

    if (cmd->name == NULL) {
        return ctld_cli_usage("unknown command \"%s\"", rest[0]);
    }

    /* a spool: queue commands work on it, no controld involved */

    if (cli.spool && cli.spool[0] && cmd->handler == ctld_cli_queue) {
        rc = ctld_spool_queue(cli.spool, cli.json, n, rest);
        free(rest);
        return rc;
    }

    if (getenv("GRPC_VERBOSITY") == NULL) {
        gpr_set_log_function(ctld_cli_log);
    }

    grpc_init();

    rc = cmd->handler(&cli, n, rest);

    if (cli.channel) {
        grpc_channel_destroy(cli.channel);
    }

    grpc_shutdown();
    free(rest);

    return rc;
}


/* command options whose value is never taken for a global option */

static int
ctld_cli_takes_value(const char *option)
{
    size_t  i;

    static const char  *options[] = {
        "-m", "-n", "--node", "--sender", "--recipient", "--domain",
        "--older-than", "--younger-than", "--state", "--canary", "--interval",
        "--count"
    };

    for (i = 0; i < sizeof(options) / sizeof(options[0]); i++) {
        if (strcmp(option, options[i]) == 0) {
            return 1;
        }
    }

    return 0;
}


static void
ctld_cli_help(FILE *f)
{
    fprintf(f,
"usage: relayctl [-s HOST:PORT] [--ca FILE --cert FILE --key FILE] [--json]\n"
"                [--timeout SEC] COMMAND ...\n"
"       relayctl --spool DIR [--json] queue ...\n"
"\n"
"commands:\n"
"  apply FILE [-m COMMENT] [--dry-run] [--canary SELECTOR] [--no-wait]\n"
"                      send the policy in FILE (\"-\": stdin) to controld;\n"
"                      prints the diff and \"applied version N\" or\n"
"                      \"no change\", then waits (--timeout) for every\n"
"                      node to ACK or NACK and prints each one's outcome;\n"
"                      --canary: only the nodes SELECTOR selects (rack=r1,\n"
"                      node=ID, ...) get it\n"
"  diff FILE           what apply would change (exit 1 when anything)\n"
"  check FILE          parse and validate FILE locally, no server\n"
"  fmt FILE            print FILE in canonical form, no server\n"
"  get [VERSION]       the current (or a given) version in canonical form\n"
"  history [-n N]      versions: VERSION AUTHOR CREATED COMMENT\n"
"  rollback VERSION [--dry-run] [--no-wait]\n"
"                      a new version with the content of VERSION\n"
"  rollback [--no-wait]\n"
"                      take the canary back: its nodes run the current\n"
"                      version again\n"
"  promote [--no-wait] the canary's version becomes the fleet's\n"
"  nodes               nodes, their applied version, NACKs, queues\n"
"  stats [--interval SEC] [--count N]\n"
"                      per node: accepted and delivered per second over\n"
"                      the last minute, queue, deferrals by category,\n"
"                      applied version; again every SEC (2) seconds, N\n"
"                      times (on a terminal: until interrupted; else 1)\n"
"  queue list|flush|delete|bounce|hold|release [--node ID] [--all]\n"
"        [QUEUE-ID ...]\n"
"                      list or act on the queues of one or every node;\n"
"                      all but list and flush need QUEUE-IDs or --all\n"
"\n"
"queue commands on this node's spool (--spool DIR or RELAYCTL_SPOOL; nginx\n"
"and controld may be running or not):\n"
"  queue list [FILTER ...]\n"
"                      ID AGE STATE SENDER RCPTS PENDING NEXT ATTEMPTS\n"
"                      CATEGORY LAST-ERROR, oldest first\n"
"  queue show QUEUE-ID [--header-only|--body-only]\n"
"                      the envelope, then the message (as postcat)\n"
"  queue summary [FILTER ...]\n"
"                      pending recipients per domain and age (as qshape)\n"
"  queue flush|hold|release|delete|bounce QUEUE-ID ... | --all [FILTER ...]\n"
"                      one line per message; flush alone takes every\n"
"                      message without QUEUE-IDs\n"
"  FILTER: --sender S, --recipient R (substrings, or \"<exact>\"),\n"
"          --domain D (\".D\" with subdomains), --older-than DUR,\n"
"          --younger-than DUR (N, Ns, Nm, Nh, Nd), --state\n"
"          new|deferred|held|active|incomplete (repeated, or a,b)\n"
"\n"
"options:\n"
"  -s, --server HOST:PORT  controld (RELAYCTL_SERVER, default "
CTLD_DEFAULT_SERVER ")\n"
"  --ca FILE           CA certificate of controld (RELAYCTL_CA); without\n"
"                      it the connection is plaintext\n"
"  --cert FILE, --key FILE\n"
"                      client certificate and key (RELAYCTL_CERT,\n"
"                      RELAYCTL_KEY); controld admits operators by the\n"
"                      certificate's CN \"operator:NAME\"\n"
"  --spool DIR         queue commands on this spool, not through controld\n"
"                      (RELAYCTL_SPOOL; --spool \"\" asks controld)\n"
"  --json              print responses as JSON\n"
"  --bounce-rules FILE an operator's bounce classification rules for the\n"
"                      CATEGORY of queue listings on a spool\n"
"                      (RELAYCTL_BOUNCE_RULES; nginx's relay_bounce_rules)\n"
"  --timeout SEC       deadline of a call, and how long apply, rollback and\n"
"                      promote wait for the nodes (default 10)\n"
"  -V, --version       print the version and exit\n"
"\n"
"exit codes:\n"
"  0  ok\n"
"  1  differences found (diff), or nothing done (apply/rollback without\n"
"     change, a queue action that touched nothing, no node answered)\n"
"  2  usage error\n"
"  3  invalid policy or argument (parse errors as FILE:LINE: ...)\n"
"  4  controld unavailable, connection failed or deadline exceeded\n"
"  5  permission denied or unauthenticated\n"
"  6  not found (version, node, message)\n"
"  7  other errors: a node answered an error; on a spool, a message in\n"
"     delivery (busy), incomplete or not changed for an error\n"
"  8  controld's store (etcd) is unreachable\n"
"  9  conflict: another apply (through another controld) got there first\n"
" 10  a node NACKed the version (apply, rollback, promote)\n"
" 11  a node did not answer in time, or went away (and none NACKed)\n");
}


int
ctld_cli_usage(const char *fmt, ...)
{
    va_list  args;

    fprintf(stderr, "relayctl: ");

    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);

    fprintf(stderr, "\n(relayctl --help for usage)\n");

    return CTLD_EXIT_USAGE;
}


void
ctld_cli_error(const char *fmt, ...)
{
    va_list  args;

    fprintf(stderr, "relayctl: ");

    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);

    fprintf(stderr, "\n");
}


static void
ctld_cli_log(gpr_log_func_args *args)
{
    /* gRPC's own log lines stay quiet: statuses say what went wrong */
}


/* ---------------------------------------------------------------- calls */


static int
ctld_cli_connect(ctld_cli_t *cli)
{
    char                      *ca, *cert, *key;
    size_t                     len;
    grpc_arg                   arg;
    grpc_channel_args          args;
    grpc_channel_credentials  *creds;
    grpc_ssl_pem_key_cert_pair kp;

    cert = NULL;
    key = NULL;

    if (cli->ca && cli->ca[0]) {
        ca = ctld_cli_read_file(cli->ca, &len);
        if (ca == NULL) {
            return CTLD_EXIT_INVALID;
        }

        if (cli->cert && cli->cert[0]) {
            cert = ctld_cli_read_file(cli->cert, &len);
            key = cert ? ctld_cli_read_file(cli->key, &len) : NULL;

            if (key == NULL) {
                free(ca);
                free(cert);
                return CTLD_EXIT_INVALID;
            }

            kp.private_key = key;
            kp.cert_chain = cert;
        }

        creds = grpc_ssl_credentials_create(ca, cert ? &kp : NULL, NULL,
                                            NULL);
        free(ca);
        free(cert);
        free(key);

    } else {
        creds = grpc_insecure_credentials_create();
    }

    if (creds == NULL) {
        ctld_cli_error("cannot create channel credentials");
        return CTLD_EXIT_OTHER;
    }

    /* no transparent retries: a failed call is reported, not repeated */

    arg.type = GRPC_ARG_INTEGER;
    arg.key = (char *) GRPC_ARG_ENABLE_RETRIES;
    arg.value.integer = 0;
    args.num_args = 1;
    args.args = &arg;

    cli->channel = grpc_channel_create(cli->server, creds, &args);
    grpc_channel_credentials_release(creds);

    if (cli->channel == NULL) {
        ctld_cli_error("cannot create a channel to %s", cli->server);
        return CTLD_EXIT_OTHER;
    }

    return CTLD_EXIT_OK;
}


static int
ctld_cli_call(ctld_cli_t *cli, const char *method,
    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc,
    ProtobufCMessage **resp)
{
    int                      rc;
    char                    *details;
    size_t                   len;
    grpc_op                  ops[6];
    grpc_call               *call;
    grpc_slice               slice, status_details, all;
    const char              *name, *error_string;
    gpr_timespec             deadline;
    grpc_event               ev;
    grpc_call_error          ce;
    grpc_byte_buffer        *send, *recv;
    grpc_status_code         status;
    grpc_metadata_array      initial, trailing;
    grpc_completion_queue   *cq;
    grpc_byte_buffer_reader  reader;

    *resp = NULL;

    if (cli->channel == NULL) {
        rc = ctld_cli_connect(cli);
        if (rc != CTLD_EXIT_OK) {
            return rc;
        }
    }

    name = strrchr(method, '/') + 1;

    len = protobuf_c_message_get_packed_size(req);
    slice = grpc_slice_malloc(len);
    protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(slice));
    send = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);

    cq = grpc_completion_queue_create_for_pluck(NULL);

    deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                            gpr_time_from_millis((int64_t)
                                                 ((cli->timeout + cli->margin)
                                                  * 1000),
                                                 GPR_TIMESPAN));

    call = grpc_channel_create_call(cli->channel, NULL,
                                    GRPC_PROPAGATE_DEFAULTS, cq,
                                    grpc_slice_from_static_string(method),
                                    NULL, deadline, NULL);

    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailing);
    recv = NULL;
    error_string = NULL;
    status = GRPC_STATUS_UNKNOWN;
    status_details = grpc_empty_slice();

    memset(ops, 0, sizeof(ops));

    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &status_details;
    ops[5].data.recv_status_on_client.error_string = &error_string;

    ce = grpc_call_start_batch(call, ops, 6, (void *) 1, NULL);

    if (ce != GRPC_CALL_OK) {
        ctld_cli_error("%s: cannot start the call (%d)", name, (int) ce);
        rc = CTLD_EXIT_OTHER;
        goto done;
    }

    ev = grpc_completion_queue_pluck(cq, (void *) 1,
                                     gpr_inf_future(GPR_CLOCK_REALTIME),
                                     NULL);

    if (ev.type != GRPC_OP_COMPLETE || !ev.success) {
        ctld_cli_error("%s: the call failed", name);
        rc = CTLD_EXIT_OTHER;
        goto done;
    }

    if (status != GRPC_STATUS_OK) {
        details = grpc_slice_to_c_string(status_details);

        if (ctld_cli_trailer(&trailing, "store")) {
            ctld_cli_error("%s: %s: %s", name, ctld_cli_status_name(status),
                           details);
            gpr_free(details);
            rc = CTLD_EXIT_STORE;
            goto done;
        }

        /* what UNAVAILABLE means here: down, plaintext, CA, certificate */

        if (status == GRPC_STATUS_UNAVAILABLE && !cli->diagnosed) {
            cli->diagnosed = 1;
            ctld_cli_diagnose(cli->server, cli->ca, cli->cert, cli->key,
                              cli->timeout);
        }

        if (status == GRPC_STATUS_UNAVAILABLE
            || status == GRPC_STATUS_DEADLINE_EXCEEDED)
        {
            ctld_cli_error("%s: %s: %s (controld at %s)", name,
                           ctld_cli_status_name(status), details,
                           cli->server);

        } else {
            ctld_cli_error("%s: %s: %s", name, ctld_cli_status_name(status),
                           details);
        }

        gpr_free(details);
        rc = ctld_cli_exit_code(status);
        goto done;
    }

    if (recv == NULL) {
        ctld_cli_error("%s: no response message", name);
        rc = CTLD_EXIT_OTHER;
        goto done;
    }

    if (grpc_byte_buffer_reader_init(&reader, recv) == 0) {
        ctld_cli_error("%s: cannot read the response", name);
        rc = CTLD_EXIT_OTHER;
        goto done;
    }

    all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);

    *resp = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(all),
                                      GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);

    if (*resp == NULL) {
        ctld_cli_error("%s: malformed response", name);
        rc = CTLD_EXIT_OTHER;
        goto done;
    }

    rc = CTLD_EXIT_OK;

done:

    grpc_byte_buffer_destroy(send);

    if (recv) {
        grpc_byte_buffer_destroy(recv);
    }

    if (error_string) {
        gpr_free((void *) error_string);
    }

    grpc_slice_unref(status_details);
    grpc_metadata_array_destroy(&initial);
    grpc_metadata_array_destroy(&trailing);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);

    return rc;
}


/* 1 when controld's trailer says "relay-error: kind" */

static int
ctld_cli_trailer(grpc_metadata_array *md, const char *kind)
{
    size_t  i;

    for (i = 0; i < md->count; i++) {
        if (grpc_slice_str_cmp(md->metadata[i].key, "relay-error") == 0
            && grpc_slice_str_cmp(md->metadata[i].value, kind) == 0)
        {
            return 1;
        }
    }

    return 0;
}


static int
ctld_cli_exit_code(grpc_status_code status)
{
    switch (status) {

    case GRPC_STATUS_ABORTED:
        return CTLD_EXIT_CONFLICT;

    case GRPC_STATUS_OK:
        return CTLD_EXIT_OK;

    case GRPC_STATUS_INVALID_ARGUMENT:
    case GRPC_STATUS_FAILED_PRECONDITION:
    case GRPC_STATUS_OUT_OF_RANGE:
        return CTLD_EXIT_INVALID;

    case GRPC_STATUS_UNAVAILABLE:
    case GRPC_STATUS_DEADLINE_EXCEEDED:
        return CTLD_EXIT_UNAVAILABLE;

    case GRPC_STATUS_PERMISSION_DENIED:
    case GRPC_STATUS_UNAUTHENTICATED:
        return CTLD_EXIT_DENIED;

    case GRPC_STATUS_NOT_FOUND:
        return CTLD_EXIT_NOT_FOUND;

    default:
        return CTLD_EXIT_OTHER;
    }
}


static const char *
ctld_cli_status_name(grpc_status_code status)
{
    static const char  *names[] = {
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
        "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
        "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"
    };

    if ((unsigned) status < sizeof(names) / sizeof(names[0])) {
        return names[status];
    }

    return "UNKNOWN_STATUS";
}


/* ---------------------------------------------------------------- files */


static char *
ctld_cli_read_file(const char *name, size_t *len)
{
    FILE    *f;
    char    *buf, *p;
    size_t   n, size;

    f = strcmp(name, "-") == 0 ? stdin : fopen(name, "r");
    if (f == NULL) {
        ctld_cli_error("%s: %s", name, strerror(errno));
        return NULL;
    }

    size = 4096;
    n = 0;
    buf = malloc(size);

    while (buf != NULL) {
        n += fread(buf + n, 1, size - n - 1, f);

        if (n < size - 1) {
            break;
        }

        if (size >= CTLD_MAX_FILE) {
            ctld_cli_error("%s: larger than %d bytes", name, CTLD_MAX_FILE);
            free(buf);
            buf = NULL;
            goto done;
        }

        size *= 2;
        p = realloc(buf, size);
        if (p == NULL) {
            free(buf);
        }

        buf = p;
    }

    if (buf == NULL) {
        ctld_cli_error("%s: out of memory", name);
        goto done;
    }

    if (ferror(f)) {
        ctld_cli_error("%s: %s", name, strerror(errno));
        free(buf);
        buf = NULL;
        goto done;
    }

    buf[n] = '\0';
    *len = n;

done:

    if (f != stdin) {
        fclose(f);
    }

    return buf;
}


/*
 * Parses FILE, errors as "FILE:LINE: ...".  strip: without the version,
 * author and creation time of "#" header lines (controld sets those).
 */

static relay_policy_t *
ctld_cli_load(const char *file, int strip)
{
    char            *text, err[512];
    size_t           len;
    relay_policy_t  *p;

    text = ctld_cli_read_file(file, &len);
    if (text == NULL) {
        return NULL;
    }

    p = relay_policy_parse(strcmp(file, "-") == 0 ? "stdin" : file, text, len,
                           err, sizeof(err));
    free(text);

    if (p == NULL) {
        ctld_cli_error("%s", err);
        return NULL;
    }

    if (!strip) {
        return p;
    }

    p->version = 0;
    p->created_unix = 0;

    if (p->author != protobuf_c_empty_string) {
        free(p->author);
        p->author = (char *) protobuf_c_empty_string;
    }

    return p;
}


static int
ctld_cli_number(const char *s, uint64_t *v)
{
    char  *end;

    if (*s < '0' || *s > '9') {
        return -1;
    }

    errno = 0;
    *v = strtoull(s, &end, 10);

    return (errno || *end != '\0') ? -1 : 0;
}


/* ---------------------------------------------------------------- policy */


static int
ctld_cli_apply(ctld_cli_t *cli, int argc, char **argv)
{
    int                                  i, rc, dry_run, wait;
    char                                *comment, *c;
    const char                          *file, *canary, *why;
    relay_policy_t                      *p;
    Relay__Control__V1__ApplyRequest     req = RELAY__CONTROL__V1__APPLY_REQUEST__INIT;
    Relay__Control__V1__ApplyResponse   *r;

    file = NULL;
    comment = NULL;
    canary = NULL;
    dry_run = 0;
    wait = 1;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-m") == 0) {
            if (i + 1 >= argc) {
                return ctld_cli_usage("apply: -m needs a comment");
            }

            comment = argv[++i];

        } else if (strcmp(argv[i], "--canary") == 0) {
            if (i + 1 >= argc || argv[i + 1][0] == '\0') {
                return ctld_cli_usage("apply: --canary needs a selector "
                                      "(rack=r1, node=ID, ...)");
            }

            canary = argv[++i];
            why = relay_scope_check(canary);

            if (why) {
                return ctld_cli_usage("apply: --canary \"%s\": %s", canary,
                                      why);
            }

        } else if (strcmp(argv[i], "--dry-run") == 0) {
            dry_run = 1;

        } else if (strcmp(argv[i], "--no-wait") == 0) {
            wait = 0;

        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            return ctld_cli_usage("apply: unknown option \"%s\"", argv[i]);

        } else if (file == NULL) {
            file = argv[i];

        } else {
            return ctld_cli_usage("apply: one FILE only");
        }
    }

    if (file == NULL) {
        return ctld_cli_usage("apply: missing FILE");
    }

    p = ctld_cli_load(file, 1);
    if (p == NULL) {
        return CTLD_EXIT_INVALID;
    }

    if (comment) {
        c = strdup(comment);
        if (c == NULL) {
            relay_policy_free(p);
            ctld_cli_error("out of memory");
            return CTLD_EXIT_OTHER;
        }

        if (p->comment != protobuf_c_empty_string) {
            free(p->comment);
        }

        p->comment = c;
    }

    req.policy = p;
    req.dry_run = dry_run;
    req.canary = (char *) (canary ? canary : "");

    if (wait && !dry_run) {
        req.wait_ms = (uint32_t) (cli->timeout * 1000);
        cli->margin = CTLD_WAIT_MARGIN;
    }

    rc = ctld_cli_call(cli, CTLD_METHOD("Apply"), &req.base,
                       &relay__control__v1__apply_response__descriptor,
                       (ProtobufCMessage **) &r);
    relay_policy_free(p);

    if (rc != CTLD_EXIT_OK) {
        return rc;
    }

    rc = ctld_cli_print_apply(cli, r, dry_run, "applied");

    relay__control__v1__apply_response__free_unpacked(r, NULL);

    return rc;
}


static int
ctld_cli_print_apply(ctld_cli_t *cli, Relay__Control__V1__ApplyResponse *r,
    int dry_run, const char *what)
{
    if (cli->json) {
        ctld_json_message(stdout, &r->base, 0);
        fputc('\n', stdout);

    } else {
        fputs(r->diff, stdout);

        if (!r->changed) {
            printf("no change\n");

        } else if (dry_run) {
            printf("dry run: nothing %s\n", what);

        } else if (r->canary[0] && strcmp(what, "applied") == 0) {
            printf("%s version %llu as a canary of %s\n", what,
                   (unsigned long long) r->version, r->canary);

        } else if (r->canary[0]) {
            printf("%s version %llu (canary of %s) to the fleet\n", what,
                   (unsigned long long) r->version, r->canary);

        } else {
            printf("%s version %llu\n", what,
                   (unsigned long long) r->version);
        }
    }

    if (!r->changed) {
        return CTLD_EXIT_NOTHING;
    }

    return ctld_cli_outcomes(cli, r);
}


/*
 * Each node's outcome of a waited apply, rollback or promote, and the exit
 * code they make: a NACK (10) before a node that did not answer (11).
 */

static int
ctld_cli_outcomes(ctld_cli_t *cli, Relay__Control__V1__ApplyResponse *r)
{
    int                              rc;
    size_t                           i, acks;
    Relay__Control__V1__NodeOutcome  *o;

    if (!r->waited) {
        return CTLD_EXIT_OK;
    }

    rc = CTLD_EXIT_OK;
    acks = 0;

    for (i = 0; i < r->n_outcomes; i++) {
        o = r->outcomes[i];

        switch (o->outcome) {

        case RELAY__CONTROL__V1__NODE_OUTCOME__OUTCOME__ACK:
            acks++;

            if (!cli->json) {
                printf("%s: ACK version %llu\n", o->node_id,
                       (unsigned long long) o->version);
            }

            break;

        case RELAY__CONTROL__V1__NODE_OUTCOME__OUTCOME__NACK:
            rc = CTLD_EXIT_NACK;

            if (!cli->json) {
                printf("%s: NACK version %llu: %s\n", o->node_id,
                       (unsigned long long) o->version, o->reason);
            }

            break;

        case RELAY__CONTROL__V1__NODE_OUTCOME__OUTCOME__DISCONNECTED:
            if (rc == CTLD_EXIT_OK) {
                rc = CTLD_EXIT_NO_ANSWER;
            }

            if (!cli->json) {
                printf("%s: disconnected before it answered\n", o->node_id);
            }

            break;

        default:
            if (rc == CTLD_EXIT_OK) {
                rc = CTLD_EXIT_NO_ANSWER;
            }

            if (!cli->json) {
                printf("%s: no answer within %gs\n", o->node_id,
                       cli->timeout);
            }

            break;
        }
    }

    if (!cli->json && r->n_outcomes == 0) {
        printf("no node to wait for\n");

    } else if (!cli->json) {
        printf("%zu of %zu node%s ACKed version %llu\n", acks, r->n_outcomes,
               r->n_outcomes == 1 ? "" : "s",
               (unsigned long long) r->version);
    }

    return rc;
}


static int
ctld_cli_diff(ctld_cli_t *cli, int argc, char **argv)
{
    int                                  rc;
    relay_policy_t                      *p;
    Relay__Control__V1__ApplyRequest     req = RELAY__CONTROL__V1__APPLY_REQUEST__INIT;
    Relay__Control__V1__ApplyResponse   *r;

    if (argc != 2 || (argv[1][0] == '-' && argv[1][1] != '\0')) {
        return ctld_cli_usage("usage: diff FILE");
    }

    p = ctld_cli_load(argv[1], 1);
    if (p == NULL) {
        return CTLD_EXIT_INVALID;
    }

    req.policy = p;
    req.dry_run = 1;

    rc = ctld_cli_call(cli, CTLD_METHOD("Apply"), &req.base,
                       &relay__control__v1__apply_response__descriptor,
                       (ProtobufCMessage **) &r);
    relay_policy_free(p);

    if (rc != CTLD_EXIT_OK) {
        return rc;
    }

    if (cli->json) {
        ctld_json_message(stdout, &r->base, 0);
        fputc('\n', stdout);

    } else {
        fputs(r->diff, stdout);
    }

    rc = (r->changed || r->diff[0]) ? CTLD_EXIT_NOTHING : CTLD_EXIT_OK;

    relay__control__v1__apply_response__free_unpacked(r, NULL);

    return rc;
}


static int
ctld_cli_check(ctld_cli_t *cli, int argc, char **argv)
{
    char             err[512];
    relay_policy_t  *p;

    if (argc != 2 || (argv[1][0] == '-' && argv[1][1] != '\0')) {
        return ctld_cli_usage("usage: check FILE");
    }

    p = ctld_cli_load(argv[1], 1);
    if (p == NULL) {
        return CTLD_EXIT_INVALID;
    }

    if (relay_policy_validate(p, err, sizeof(err)) != 0) {
        ctld_cli_error("%s: invalid policy: %s", argv[1], err);
        relay_policy_free(p);
        return CTLD_EXIT_INVALID;
    }

    relay_policy_free(p);

    printf("%s: ok\n", argv[1]);

    return CTLD_EXIT_OK;
}


static int
ctld_cli_fmt(ctld_cli_t *cli, int argc, char **argv)
{
    char            *text;
    relay_policy_t  *p;

    if (argc != 2 || (argv[1][0] == '-' && argv[1][1] != '\0')) {
        return ctld_cli_usage("usage: fmt FILE");
    }

    p = ctld_cli_load(argv[1], 0);
    if (p == NULL) {
        return CTLD_EXIT_INVALID;
    }

    if (cli->json) {
        ctld_json_message(stdout, &p->base, 0);
        fputc('\n', stdout);
        relay_policy_free(p);
        return CTLD_EXIT_OK;
    }

    text = relay_policy_render(p);
    relay_policy_free(p);

    if (text == NULL) {
        ctld_cli_error("out of memory");
        return CTLD_EXIT_OTHER;
    }

    fputs(text, stdout);
    free(text);

    return CTLD_EXIT_OK;
}


static int
ctld_cli_get(ctld_cli_t *cli, int argc, char **argv)
{
    int                               rc;
    char                             *text;
    uint64_t                          v;
    relay_policy_t                   *p;
    Relay__Control__V1__GetRequest    req = RELAY__CONTROL__V1__GET_REQUEST__INIT;

    if (argc > 2) {
        return ctld_cli_usage("usage: get [VERSION]");
    }

    if (argc == 2) {
        if (ctld_cli_number(argv[1], &v) != 0 || v == 0) {
            return ctld_cli_usage("get: bad version \"%s\"", argv[1]);
        }

        req.version = v;
    }

    rc = ctld_cli_call(cli, CTLD_METHOD("Get"), &req.base,
                       &relay__control__v1__policy__descriptor,
                       (ProtobufCMessage **) &p);
    if (rc != CTLD_EXIT_OK) {
        return rc;
    }

    if (cli->json) {
        ctld_json_message(stdout, &p->base, 0);
        fputc('\n', stdout);

    } else {
        text = relay_policy_render(p);
        if (text == NULL) {
            relay_policy_free(p);
            ctld_cli_error("out of memory");
            return CTLD_EXIT_OTHER;
        }

        fputs(text, stdout);
        free(text);
    }

    relay_policy_free(p);

    return CTLD_EXIT_OK;
}


static int
ctld_cli_history(ctld_cli_t *cli, int argc, char **argv)
{
    int                                   i, rc;
    char                                  date[32];
    size_t                                k;
    uint64_t                              v;
    ctld_table_t                          t;
    Relay__Control__V1__HistoryEntry     *e;
    Relay__Control__V1__HistoryRequest    req = RELAY__CONTROL__V1__HISTORY_REQUEST__INIT;
    Relay__Control__V1__HistoryResponse  *r;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
            if (ctld_cli_number(argv[++i], &v) != 0 || v > UINT32_MAX) {
                return ctld_cli_usage("history: bad -n \"%s\"", argv[i]);
            }

            req.limit = (uint32_t) v;

        } else {
            return ctld_cli_usage("usage: history [-n N]");
        }
    }

    rc = ctld_cli_call(cli, CTLD_METHOD("History"), &req.base,
                       &relay__control__v1__history_response__descriptor,
                       (ProtobufCMessage **) &r);
    if (rc != CTLD_EXIT_OK) {
        return rc;
    }

    if (cli->json) {
        ctld_json_message(stdout, &r->base, 0);
        fputc('\n', stdout);
        relay__control__v1__history_response__free_unpacked(r, NULL);
        return CTLD_EXIT_OK;
    }

    ctld_table_init(&t, 4);
    ctld_table_row(&t, "VERSION", "AUTHOR", "CREATED", "COMMENT");

    for (k = 0; k < r->n_entries; k++) {
        e = r->entries[k];

        ctld_table_row(&t,
            ctld_fmt("%llu%s", (unsigned long long) e->version,
                     e->version == r->current ? " *"
                     : e->state == RELAY__CONTROL__V1__VERSION_STATE__VERSION_CANARY
                       ? " canary"
                     : e->state == RELAY__CONTROL__V1__VERSION_STATE__VERSION_ABORTED
                       ? " taken back" : ""),
            ctld_fmt("%s", e->author[0] ? e->author : "-"),
            ctld_fmt("%s", ctld_time_iso(e->created_unix, date,
                                         sizeof(date))),
            e->rolled_back_from
                ? ctld_fmt("rollback to %llu%s%s",
                           (unsigned long long) e->rolled_back_from,
                           e->comment[0] ? ": " : "", e->comment)
                : ctld_fmt("%s", e->comment));
    }

    ctld_table_print(&t, stdout);
    ctld_table_free(&t);

    if (r->n_entries) {
        printf("(* current)\n");
    }

    if (r->canary) {
        printf("canary in progress: version %llu on %s (relayctl promote, "
               "or relayctl rollback)\n", (unsigned long long) r->canary,
               r->canary_selector);
    }

    relay__control__v1__history_response__free_unpacked(r, NULL);

    return CTLD_EXIT_OK;
}


static int
ctld_cli_rollback(ctld_cli_t *cli, int argc, char **argv)
{
    int                                   i, rc, dry_run, wait;
    uint64_t                              v;
    Relay__Control__V1__RollbackRequest   req = RELAY__CONTROL__V1__ROLLBACK_REQUEST__INIT;
    Relay__Control__V1__ApplyResponse    *r;

    dry_run = 0;
    wait = 1;
    v = 0;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dry-run") == 0) {
            dry_run = 1;

        } else if (strcmp(argv[i], "--no-wait") == 0) {
            wait = 0;

        } else if (v == 0 && ctld_cli_number(argv[i], &v) == 0 && v > 0) {
            continue;

        } else {
            return ctld_cli_usage("usage: rollback [VERSION] [--dry-run] "
                                  "[--no-wait]");
        }
    }

    /* no VERSION: the canary taken back */

    req.version = v;
    req.dry_run = dry_run;

    if (wait && !dry_run) {
        req.wait_ms = (uint32_t) (cli->timeout * 1000);
        cli->margin = CTLD_WAIT_MARGIN;
    }

    rc = ctld_cli_call(cli, CTLD_METHOD("Rollback"), &req.base,
                       &relay__control__v1__apply_response__descriptor,
                       (ProtobufCMessage **) &r);
    if (rc != CTLD_EXIT_OK) {
        return rc;
    }

    if (v == 0 && !cli->json && r->changed) {
        printf("%s canary of %s: its nodes %s version %llu\n",
               dry_run ? "dry run: would take back the" : "took back the",
               r->canary, dry_run ? "would run" : "run",
               (unsigned long long) r->version);
        rc = dry_run ? CTLD_EXIT_OK : ctld_cli_outcomes(cli, r);

        relay__control__v1__apply_response__free_unpacked(r, NULL);
        return rc;
    }

    rc = ctld_cli_print_apply(cli, r, dry_run, "applied");

    relay__control__v1__apply_response__free_unpacked(r, NULL);

    return rc;
}


static int
ctld_cli_promote(ctld_cli_t *cli, int argc, char **argv)
{
    int                                   i, rc, wait;
    Relay__Control__V1__PromoteRequest    req =
                                      RELAY__CONTROL__V1__PROMOTE_REQUEST__INIT;
    Relay__Control__V1__ApplyResponse    *r;

    wait = 1;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--no-wait") == 0) {
            wait = 0;

        } else {
            return ctld_cli_usage("usage: promote [--no-wait]");
        }
    }

    if (wait) {
        req.wait_ms = (uint32_t) (cli->timeout * 1000);
        cli->margin = CTLD_WAIT_MARGIN;
    }

    rc = ctld_cli_call(cli, CTLD_METHOD("Promote"), &req.base,
                       &relay__control__v1__apply_response__descriptor,
                       (ProtobufCMessage **) &r);
    if (rc != CTLD_EXIT_OK) {
        return rc;
    }

    rc = ctld_cli_print_apply(cli, r, 0, "promoted");

    relay__control__v1__apply_response__free_unpacked(r, NULL);

    return rc;
}


/* ---------------------------------------------------------------- nodes */


static int
ctld_cli_nodes(ctld_cli_t *cli, int argc, char **argv)
{
    int                                    rc;
    char                                   ago[32], up[32], old[32];
    size_t                                 k;
    ctld_table_t                           t;
    Relay__Control__V1__NodeInfo          *n;
    Relay__Control__V1__NodeStatus        *st;
    Relay__Control__V1__ListNodesRequest   req = RELAY__CONTROL__V1__LIST_NODES_REQUEST__INIT;
    Relay__Control__V1__ListNodesResponse *r;

    if (argc != 1) {
        return ctld_cli_usage("usage: nodes");
    }

    rc = ctld_cli_call(cli, CTLD_METHOD("ListNodes"), &req.base,
                       &relay__control__v1__list_nodes_response__descriptor,
                       (ProtobufCMessage **) &r);
    if (rc != CTLD_EXIT_OK) {
        return rc;
    }

    if (cli->json) {
        ctld_json_message(stdout, &r->base, 0);
        fputc('\n', stdout);
        relay__control__v1__list_nodes_response__free_unpacked(r, NULL);
        return CTLD_EXIT_OK;
    }

    ctld_table_init(&t, 13);
    ctld_table_row(&t, "NODE", "CONNECTED", "APPLIED", "NACK", "LAST-SEEN",
                   "QUEUE", "DEFERRED", "HELD", "OLDEST", "UPTIME", "PEER",
                   "CONTROLD", "LABELS");

    for (k = 0; k < r->n_nodes; k++) {
        n = r->nodes[k];
        st = n->status;

        ctld_table_row(&t,
            ctld_fmt("%s", n->node_id),
            ctld_fmt("%s", n->connected ? "yes" : "no"),
            n->applied_version == 0
                ? ctld_fmt("none")
                : ctld_fmt("%llu%s", (unsigned long long) n->applied_version,
                           r->canary && n->applied_version == r->canary
                           ? " (canary)"
                           : n->applied_version != n->target_version
                             && n->target_version
                           ? " (behind)" : ""),
            n->nacked_version
                ? ctld_fmt("%llu: %s", (unsigned long long) n->nacked_version,
                           n->nack_reason)
                : ctld_fmt("-"),
            ctld_fmt("%s", ctld_time_ago(n->last_seen_unix, ago,
                                         sizeof(ago))),
            st ? ctld_fmt("%u msgs, %u rcpts", st->queue_messages,
                          st->queue_pending_recipients)
               : ctld_fmt("-"),
            st ? ctld_fmt("%u", st->queue_deferred) : ctld_fmt("-"),
            st ? ctld_fmt("%u", st->queue_held) : ctld_fmt("-"),
            st && st->queue_oldest_age_s
               ? ctld_fmt("%s", ctld_duration(st->queue_oldest_age_s, old,
                                              sizeof(old)))
               : ctld_fmt("-"),
            st ? ctld_fmt("%s", ctld_duration(st->uptime_s, up, sizeof(up)))
               : ctld_fmt("-"),
            ctld_fmt("%s", n->peer[0] ? n->peer : "-"),
            ctld_fmt("%s", n->replica[0] ? n->replica : "-"),
            ctld_cli_labels(n));
    }

    if (r->n_nodes) {
        ctld_table_print(&t, stdout);
        printf("current version: %llu\n", (unsigned long long) r->current);

        if (r->canary) {
            printf("canary: version %llu on %s\n",
                   (unsigned long long) r->canary, r->canary_selector);
        }

        ctld_cli_nodes_destinations(r);

    } else {
        printf("no nodes (current version: %llu)\n",
               (unsigned long long) r->current);
    }

    ctld_table_free(&t);
    relay__control__v1__list_nodes_response__free_unpacked(r, NULL);

    return CTLD_EXIT_OK;
}


/* "region=eu,rack=r12", or "-" */

static char *
ctld_cli_labels(Relay__Control__V1__NodeInfo *n)
{
    char    *s, *p;
    size_t   i, len;

    if (n->n_labels == 0) {
        return ctld_fmt("-");
    }

    for (i = 0, len = 1; i < n->n_labels; i++) {
        len += strlen(n->labels[i]->name) + strlen(n->labels[i]->value) + 2;
    }

    s = malloc(len);
    if (s == NULL) {
        return NULL;
    }

    for (i = 0, p = s; i < n->n_labels; i++) {
        p += sprintf(p, "%s%s=%s", i ? "," : "", n->labels[i]->name,
                     n->labels[i]->value);
    }

    return s;
}


/* under the table: where each node's queued mail waits to go */

/*
 * relayctl stats: ListNodes every --interval seconds, --count times; the
 * rates come from controld (the statuses of the last minute), the table
 * or JSON from relayctl_stats.c.
 */

static int
ctld_cli_stats(ctld_cli_t *cli, int argc, char **argv)
{
    int                                    i, rc, tty;
    char                                  *end;
    long                                   count, n;
    double                                 interval;
    struct timespec                        ts;
    Relay__Control__V1__ListNodesRequest   req = RELAY__CONTROL__V1__LIST_NODES_REQUEST__INIT;
    Relay__Control__V1__ListNodesResponse *r;

    tty = isatty(STDOUT_FILENO);
    interval = 2;
    count = (tty && !cli->json) ? 0 : 1;

    for (i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--interval") == 0) {
            interval = strtod(argv[++i], &end);

            if (*end != '\0' || !(interval >= 0.1) || interval > 3600) {
                return ctld_cli_usage("stats: bad --interval \"%s\"",
                                      argv[i]);
            }

        } else if (i + 1 < argc && strcmp(argv[i], "--count") == 0) {
            count = strtol(argv[++i], &end, 10);

            if (*end != '\0' || count < 0) {
                return ctld_cli_usage("stats: bad --count \"%s\"", argv[i]);
            }

        } else {
            return ctld_cli_usage("usage: stats [--interval SEC] "
                                  "[--count N]");
        }
    }

    for (n = 0; count == 0 || n < count; n++) {

        if (n) {
            ts.tv_sec = (time_t) interval;
            ts.tv_nsec = (long) ((interval - ts.tv_sec) * 1e9);
            (void) nanosleep(&ts, NULL);
        }

        rc = ctld_cli_call(cli, CTLD_METHOD("ListNodes"), &req.base,
                           &relay__control__v1__list_nodes_response__descriptor,
                           (ProtobufCMessage **) &r);
        if (rc != CTLD_EXIT_OK) {
            return rc;
        }

        ctld_stats_show(stdout, r, cli->json, tty && count != 1);
        fflush(stdout);

        relay__control__v1__list_nodes_response__free_unpacked(r, NULL);
    }

    return CTLD_EXIT_OK;
}


/*
 * The CATEGORY of a queue listing: the node's (it classified with its own
 * relay_bounce_rules), or the last error's by --bounce-rules and the
 * built-in rules; "-" without an error.
 */

const char *
ctld_category(const char *last_error, size_t len, const char *category)
{
    if (category && category[0]) {
        return category;
    }

    if (len == 0) {
        return "-";
    }

    return relay_classify_name(relay_classify_text(ctld_cli_rules,
                                       (const unsigned char *) last_error,
                                       len));
}


static void
ctld_cli_nodes_destinations(Relay__Control__V1__ListNodesResponse *r)
{
    size_t                                 k, i;
    Relay__Control__V1__NodeStatus        *st;
    Relay__Control__V1__QueueDestination  *d;

    for (k = 0; k < r->n_nodes; k++) {
        st = r->nodes[k]->status;

        if (st == NULL || st->n_queue_destinations == 0) {
            continue;
        }

        printf("%s queue by destination:", r->nodes[k]->node_id);

        for (i = 0; i < st->n_queue_destinations; i++) {
            d = st->queue_destinations[i];
            printf("%s %s %u%s", i ? "," : "", d->domain, d->messages,
                   d->unreachable ? " (unreachable)" : "");
        }

        printf("\n");
    }
}


/* ---------------------------------------------------------------- queue */


static int
ctld_cli_queue(ctld_cli_t *cli, int argc, char **argv)
{
    int                                   i, rc, all, failed;
    char                                  age[32], next[32], *rcpts;
    size_t                                k, j, m, len, affected;
    ctld_table_t                          t;
    const char                           *verb;
    Relay__Control__V1__QueueEntry       *e;
    Relay__Control__V1__QueueAction       action;
    Relay__Control__V1__QueueRequest      req = RELAY__CONTROL__V1__QUEUE_REQUEST__INIT;
    Relay__Control__V1__QueueResponse    *r;
    Relay__Control__V1__NodeQueueResult  *nr;
    time_t                                now;

    static const struct {
        const char                       *name;
        Relay__Control__V1__QueueAction   action;
        const char                       *verb;
    } actions[] = {
        { "list", RELAY__CONTROL__V1__QUEUE_ACTION__QUEUE_LIST, "listed" },
        { "flush", RELAY__CONTROL__V1__QUEUE_ACTION__QUEUE_FLUSH,
          "flushed" },
        { "delete", RELAY__CONTROL__V1__QUEUE_ACTION__QUEUE_DELETE,
          "deleted" },
        { "bounce", RELAY__CONTROL__V1__QUEUE_ACTION__QUEUE_BOUNCE,
          "bounced" },
        { "hold", RELAY__CONTROL__V1__QUEUE_ACTION__QUEUE_HOLD, "held" },
        { "release", RELAY__CONTROL__V1__QUEUE_ACTION__QUEUE_RELEASE,
          "released" },
        { NULL, 0, NULL }
    };

    if (argc < 2) {
        return ctld_cli_usage("usage: queue list|flush|delete|bounce|hold|"
                              "release [--node ID] [--all] [QUEUE-ID ...]");
    }

    for (k = 0; actions[k].name; k++) {
        if (strcmp(actions[k].name, argv[1]) == 0) {
            break;
        }
    }

    if (actions[k].name == NULL) {
        return ctld_cli_usage("queue: unknown action \"%s\"", argv[1]);
    }

    action = actions[k].action;
    verb = actions[k].verb;
    all = 0;

    req.action = action;
    req.queue_ids = calloc(argc, sizeof(char *));
    if (req.queue_ids == NULL) {
        ctld_cli_error("out of memory");
        return CTLD_EXIT_OTHER;
    }

    for (i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--node") == 0) {
            if (i + 1 >= argc || argv[i + 1][0] == '\0') {
                free(req.queue_ids);
                return ctld_cli_usage("queue: --node needs a node id");
            }

            req.node_id = argv[++i];

        } else if (strcmp(argv[i], "--all") == 0) {
            all = 1;

        } else if (argv[i][0] == '-') {
            free(req.queue_ids);
            return ctld_cli_usage("queue: unknown option \"%s\"", argv[i]);

        } else {
            req.queue_ids[req.n_queue_ids++] = argv[i];
        }
    }

    if (action != RELAY__CONTROL__V1__QUEUE_ACTION__QUEUE_LIST
        && action != RELAY__CONTROL__V1__QUEUE_ACTION__QUEUE_FLUSH
        && req.n_queue_ids == 0 && !all)
    {
        free(req.queue_ids);
        return ctld_cli_usage("queue %s: give QUEUE-IDs, or --all for "
                              "every message", argv[1]);
    }

    if (all && req.n_queue_ids) {
        free(req.queue_ids);
        return ctld_cli_usage("queue: --all or QUEUE-IDs, not both");
    }

    rc = ctld_cli_call(cli, CTLD_METHOD("Queue"), &req.base,
                       &relay__control__v1__queue_response__descriptor,
                       (ProtobufCMessage **) &r);
    free(req.queue_ids);

    if (rc != CTLD_EXIT_OK) {
        return rc;
    }

    failed = 0;
    affected = 0;

    for (k = 0; k < r->n_results; k++) {
        if (!r->results[k]->ok) {
            failed = 1;
        }

        affected += r->results[k]->affected
                    + r->results[k]->n_entries;
    }

    if (cli->json) {
        ctld_json_message(stdout, &r->base, 0);
        fputc('\n', stdout);
        goto done;
    }

    if (r->n_results == 0) {
        printf("no node answered\n");
        goto done;
    }

    now = time(NULL);

    for (k = 0; k < r->n_results; k++) {
        nr = r->results[k];

        if (!nr->ok) {
            printf("%s: error: %s\n", nr->node_id, nr->error);
            continue;
        }

        if (action != RELAY__CONTROL__V1__QUEUE_ACTION__QUEUE_LIST) {
            printf("%s: %s %u message%s%s%s%s\n", nr->node_id, verb,
                   nr->affected, nr->affected == 1 ? "" : "s",
                   nr->error[0] ? " (" : "", nr->error,
                   nr->error[0] ? ")" : "");
            continue;
        }

        printf("%s: %zu message%s\n", nr->node_id, nr->n_entries,
               nr->n_entries == 1 ? "" : "s");

        if (nr->n_entries == 0) {
            continue;
        }

        ctld_table_init(&t, 9);
        ctld_table_row(&t, "  ID", "AGE", "SENDER", "RCPTS", "PENDING",
                       "NEXT", "ATTEMPTS", "CATEGORY", "LAST-ERROR");

        for (j = 0; j < nr->n_entries; j++) {
            e = nr->entries[j];

            len = 1;
            for (m = 0; m < e->n_pending; m++) {
                len += strlen(e->pending[m]) + 1;
            }

            rcpts = malloc(len);
            if (rcpts != NULL) {
                rcpts[0] = '\0';

                for (m = 0; m < e->n_pending; m++) {
                    if (m) {
                        strcat(rcpts, ",");
                    }

                    strcat(rcpts, e->pending[m]);
                }
            }

            if (e->held) {
                snprintf(next, sizeof(next), "held");

            } else if (e->next_attempt_unix == 0
                       || e->next_attempt_unix <= now)
            {
                snprintf(next, sizeof(next), "now");

            } else {
                snprintf(next, sizeof(next), "in ");
                ctld_duration((uint64_t) (e->next_attempt_unix - now),
                              next + 3, sizeof(next) - 3);
            }

            ctld_table_row(&t,
                ctld_fmt("  %s", e->id),
                ctld_fmt("%s", e->arrival_unix && e->arrival_unix <= now
                               ? ctld_duration((uint64_t) (now
                                                   - e->arrival_unix),
                                               age, sizeof(age))
                               : "-"),
                ctld_fmt("<%s>", e->sender),
                ctld_fmt("%zu/%u", e->n_pending, e->recipients),
                ctld_fmt("%s", rcpts ? rcpts : "?"),
                ctld_fmt("%s", next),
                ctld_fmt("%u", e->attempts),
                ctld_fmt("%s", ctld_category(e->last_error,
                                             strlen(e->last_error),
                                             e->category)),
                ctld_fmt("%s", e->last_error[0] ? e->last_error : "-"));

            free(rcpts);
        }

        ctld_table_print(&t, stdout);
        ctld_table_free(&t);
    }

done:

    relay__control__v1__queue_response__free_unpacked(r, NULL);

    if (failed) {
        return CTLD_EXIT_OTHER;
    }

    if (action == RELAY__CONTROL__V1__QUEUE_ACTION__QUEUE_LIST) {
        return k ? CTLD_EXIT_OK : CTLD_EXIT_NOTHING;
    }

    return affected ? CTLD_EXIT_OK : CTLD_EXIT_NOTHING;
}


/* ---------------------------------------------------------------- JSON */


static void
ctld_json_indent(FILE *f, int indent)
{
    fprintf(f, "%*s", indent * 2, "");
}


/*
 * Any protobuf-c message as JSON: every field (proto3 defaults included,
 * oneof members only when set), 64-bit integers as numbers, enums by
 * their names, strings escaped by ctld_json_string().
 */

static void
ctld_json_message(FILE *f, const ProtobufCMessage *m, int indent)
{
    size_t                            i, j, n, size;
    const char                       *arr;
    const ProtobufCFieldDescriptor   *fd;
    const ProtobufCMessageDescriptor *desc;
    int                               first;

    static const size_t  sizes[] = {
        sizeof(int32_t), sizeof(int32_t), sizeof(int32_t), sizeof(int64_t),
        sizeof(int64_t), sizeof(int64_t), sizeof(uint32_t),
        sizeof(uint32_t), sizeof(uint64_t), sizeof(uint64_t), sizeof(float),
        sizeof(double), sizeof(protobuf_c_boolean), sizeof(int),
        sizeof(char *), sizeof(ProtobufCBinaryData), sizeof(void *)
    };

    if (m == NULL) {
        fputs("null", f);
        return;
    }

    desc = m->descriptor;

    fputs("{", f);
    first = 1;

    for (i = 0; i < desc->n_fields; i++) {
        fd = &desc->fields[i];

        if ((fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
            && *(const uint32_t *) ((const char *) m + fd->quantifier_offset)
               != fd->id)
        {
            continue;
        }

        fputs(first ? "\n" : ",\n", f);
        first = 0;

        ctld_json_indent(f, indent + 1);
        ctld_json_string(f, fd->name);
        fputs(": ", f);

        if (fd->label != PROTOBUF_C_LABEL_REPEATED) {
            ctld_json_value(f, fd, (const char *) m + fd->offset, indent + 1);
            continue;
        }

        n = *(const size_t *) ((const char *) m + fd->quantifier_offset);
        arr = *(char *const *) ((const char *) m + fd->offset);
        size = (unsigned) fd->type < sizeof(sizes) / sizeof(sizes[0])
               ? sizes[fd->type] : sizeof(void *);

        if (n == 0) {
            fputs("[]", f);
            continue;
        }

        fputs("[\n", f);

        for (j = 0; j < n; j++) {
            ctld_json_indent(f, indent + 2);
            ctld_json_value(f, fd, arr + j * size, indent + 2);
            fputs(j + 1 < n ? ",\n" : "\n", f);
        }

        ctld_json_indent(f, indent + 1);
        fputs("]", f);
    }

    if (!first) {
        fputs("\n", f);
        ctld_json_indent(f, indent);
    }

    fputs("}", f);
}


static void
ctld_json_value(FILE *f, const ProtobufCFieldDescriptor *fd, const void *v,
    int indent)
{
    const ProtobufCEnumValue  *ev;

    switch (fd->type) {

    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        fprintf(f, "%d", (int) *(const int32_t *) v);
        break;

    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        fprintf(f, "%u", (unsigned) *(const uint32_t *) v);
        break;

    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        fprintf(f, "%lld", (long long) *(const int64_t *) v);
        break;

    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        fprintf(f, "%llu", (unsigned long long) *(const uint64_t *) v);
        break;

    case PROTOBUF_C_TYPE_FLOAT:
        fprintf(f, "%.9g", (double) *(const float *) v);
        break;

    case PROTOBUF_C_TYPE_DOUBLE:
        fprintf(f, "%.17g", *(const double *) v);
        break;

    case PROTOBUF_C_TYPE_BOOL:
        fputs(*(const protobuf_c_boolean *) v ? "true" : "false", f);
        break;

    case PROTOBUF_C_TYPE_ENUM:
        ev = protobuf_c_enum_descriptor_get_value(fd->descriptor,
                                                  *(const int *) v);
        if (ev) {
            ctld_json_string(f, ev->name);

        } else {
            fprintf(f, "%d", *(const int *) v);
        }

        break;

    case PROTOBUF_C_TYPE_STRING:
        ctld_json_string(f, *(char *const *) v ? *(char *const *) v : "");
        break;

    case PROTOBUF_C_TYPE_MESSAGE:
        ctld_json_message(f, *(ProtobufCMessage *const *) v, indent);
        break;

    default:
        fputs("null", f);
        break;
    }
}


/* a JSON string, escaped by the library's relay_json_escape() */

void
ctld_json_string(FILE *f, const char *s)
{
    size_t          len, n;
    unsigned char  *out;

    len = strlen(s);
    out = malloc(RELAY_JSON_ESCAPED_MAX(len) + 1);

    if (out == NULL) {
        fputs("\"\"", f);
        return;
    }

    n = relay_json_escape(out, (const unsigned char *) s, len);

    fputc('"', f);
    fwrite(out, 1, n, f);
    fputc('"', f);

    free(out);
}


/* ---------------------------------------------------------------- tables */


void
ctld_table_init(ctld_table_t *t, size_t ncols)
{
    t->ncols = ncols;
    t->nrows = 0;
    t->cells = NULL;
}


/*
 * A row of ncols cells; the header row's cells are literals, the others
 * malloc()ed by ctld_fmt() (a NULL cell prints as "?").
 */

void
ctld_table_row(ctld_table_t *t, ...)
{
    char     **cells, *s, *p;
    size_t     i;
    va_list    args;

    cells = realloc(t->cells, (t->nrows + 1) * t->ncols * sizeof(char *));
    if (cells == NULL) {
        return;
    }

    t->cells = cells;
    cells += t->nrows * t->ncols;

    va_start(args, t);

    for (i = 0; i < t->ncols; i++) {
        s = va_arg(args, char *);

        if (t->nrows == 0) {
            s = strdup(s);
        }

        /* one line per cell */

        for (p = s; p && *p; p++) {
            if ((unsigned char) *p < 0x20 || *p == 0x7f) {
                *p = ' ';
            }
        }

        cells[i] = s;
    }

    va_end(args);

    t->nrows++;
}


static size_t
ctld_table_width(const char *s)
{
    size_t  w;

    for (w = 0; *s; s++) {
        w += ((unsigned char) *s & 0xc0) != 0x80;
    }

    return w;
}


void
ctld_table_print(ctld_table_t *t, FILE *f)
{
    size_t   r, c, w, *width;
    char    *s;

    width = calloc(t->ncols, sizeof(size_t));
    if (width == NULL) {
        return;
    }

    for (r = 0; r < t->nrows; r++) {
        for (c = 0; c < t->ncols; c++) {
            s = t->cells[r * t->ncols + c];
            w = s ? ctld_table_width(s) : 1;

            if (w > width[c]) {
                width[c] = w;
            }
        }
    }

    for (r = 0; r < t->nrows; r++) {
        for (c = 0; c < t->ncols; c++) {
            s = t->cells[r * t->ncols + c];
            s = s ? s : "?";

            if (c + 1 == t->ncols) {
                fprintf(f, "%s\n", s);

            } else {
                fprintf(f, "%s%*s", s,
                        (int) (width[c] - ctld_table_width(s) + 2), "");
            }
        }
    }

    free(width);
}


void
ctld_table_free(ctld_table_t *t)
{
    size_t  i;

    for (i = 0; i < t->nrows * t->ncols; i++) {
        free(t->cells[i]);
    }

    free(t->cells);
    t->cells = NULL;
    t->nrows = 0;
}


char *
ctld_fmt(const char *fmt, ...)
{
    int       n;
    char     *s;
    va_list   args;

    va_start(args, fmt);
    n = vsnprintf(NULL, 0, fmt, args);
    va_end(args);

    if (n < 0) {
        return NULL;
    }

    s = malloc(n + 1);
    if (s == NULL) {
        return NULL;
    }

    va_start(args, fmt);
    vsnprintf(s, n + 1, fmt, args);
    va_end(args);

    return s;
}


const char *
ctld_time_iso(int64_t t, char *buf, size_t len)
{
    time_t     tt;
    struct tm  tm;

    tt = (time_t) t;

    if (t == 0 || gmtime_r(&tt, &tm) == NULL
        || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    {
        return "-";
    }

    return buf;
}


static const char *
ctld_time_ago(int64_t t, char *buf, size_t len)
{
    int64_t  now;

    if (t == 0) {
        return "never";
    }

    now = (int64_t) time(NULL);

    if (t >= now) {
        return "now";
    }

    ctld_duration((uint64_t) (now - t), buf, len);

    if (strlen(buf) + 5 < len) {
        strcat(buf, " ago");
    }

    return buf;
}


/* "45s", "3m20s", "2h5m", "4d3h" */

const char *
ctld_duration(uint64_t s, char *buf, size_t len)
{
    if (s < 60) {
        snprintf(buf, len, "%llus", (unsigned long long) s);

    } else if (s < 3600) {
        snprintf(buf, len, "%llum%llus", (unsigned long long) s / 60,
                 (unsigned long long) s % 60);

    } else if (s < 86400) {
        snprintf(buf, len, "%lluh%llum", (unsigned long long) s / 3600,
                 (unsigned long long) s % 3600 / 60);

    } else {
        snprintf(buf, len, "%llud%lluh", (unsigned long long) s / 86400,
                 (unsigned long long) s % 86400 / 3600);
    }

    return buf;
}
