/*
 * Copyright (C) The relay authors
 */


/*
 * controld: main() wires the parts together and does nothing else.
 *
 * One thread runs everything: the completion queue loop (ctld_server.c)
 * hands every event to the call it belongs to, and a call, once its caller
 * is identified (ctld_auth.c), to its service: node sessions and the node
 * table (ctld_node.c) or the Admin methods (ctld_admin.c).  The version
 * store (ctld_store.c, over the data directory of ctld_store_dir.c or
 * etcd, ctld_store_etcd.c) and the byte buffer codec (ctld_codec.c) serve
 * them; with etcd, the fleet (ctld_fleet.c) shares the nodes, sessions and
 * queue commands of every replica, and the etcd client (ctld_etcd.c) runs
 * its calls on the server's completion queue.  The log, the clock and
 * allocation are leaves.  Nothing here is thread-safe, nor needs be.
 *
 * Calls go one way, down this list:
 *
 *   controld.c       conf, store, fleet, node, admin, server: wiring only
 *   ctld_admin       node, store, fleet, server (the call API), codec, lib
 *   ctld_node        store, fleet, server (the call API), codec
 *   ctld_fleet       ctld_store_etcd, etcd
 *   ctld_store       its backend (ctld_store_dir, ctld_store_etcd), codec
 *   ctld_store_etcd  etcd, the store's found() and changed()
 *   ctld_etcd        server (events on the queue), codec
 *   ctld_server      auth, codec
 *   and all          log, clock, alloc, metrics, stats: the leaves
 *
 * The metrics (ctld_metrics.c, served on --metrics-listen from the
 * server's tick) see the node table and the store through the view
 * main() gives them.
 *
 * Where a lower part reports upwards (the server to its services, the
 * node side to the admin side, the store and the fleet to the node side)
 * it calls what main() gave it at startup.
 */


#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <grpc/grpc.h>
#include <grpc/support/log.h>

#include "ctld_admin.h"
#include "ctld_conf.h"
#include "ctld_fleet.h"
#include "ctld_log.h"
#include "ctld_metrics.h"
#include "ctld_node.h"
#include "ctld_server.h"
#include "ctld_store.h"
#include "ctld_store_dir.h"
#include "ctld_store_etcd.h"


static int ctld_run(const ctld_conf_t *conf);
static int ctld_open_store(const ctld_conf_t *conf);
static uint64_t ctld_current_version(void);


int
main(int argc, char **argv)
{
    int          rc;
    ctld_conf_t  conf;

    rc = ctld_conf_read(&conf, argc, argv);

    if (rc == CTLD_CONF_DONE) {
        return 0;
    }

    if (rc != CTLD_CONF_OK) {
        return 2;
    }

    return ctld_run(&conf) == 0 ? 0 : 1;
}


static int
ctld_run(const ctld_conf_t *conf)
{
    int                  rc;
    uint64_t             version;
    ctld_node_conf_t     node;
    ctld_metrics_view_t  view;

    if (ctld_open_store(conf) != 0) {
        return -1;
    }

    node.insecure = conf->insecure;
    node.status_timeout_ms = conf->status_timeout_ms;
    node.result = ctld_admin_node_result;
    node.gone = ctld_admin_node_gone;
    node.changed = ctld_admin_node_changed;

    ctld_node_init(&node);
    ctld_admin_init(conf->command_timeout_ms);

    view.versions = ctld_node_versions;
    view.current = ctld_current_version;

    if (ctld_metrics_init(conf->metrics_listen, &view) != 0) {
        ctld_store_close();
        return -1;
    }

    version = ctld_store_current() ? ctld_store_current()->version : 0;

    gpr_set_log_function(ctld_log_grpc);
    grpc_init();

    rc = ctld_server_run(conf, version, &ctld_node_service,
                         &ctld_admin_service, ctld_store_client());

    ctld_metrics_close();
    ctld_node_free_all();
    ctld_store_close();
    grpc_shutdown();

    if (rc == 0) {
        ctld_log("stopped");
    }

    return rc;
}


/* the data directory, or etcd and the fleet of replicas over it */

static int
ctld_open_store(const ctld_conf_t *conf)
{
    char                     host[256], name[512];
    const char              *port;
    ctld_fleet_conf_t        fleet;
    ctld_store_etcd_conf_t   ec;

    if (conf->store == NULL) {
        return ctld_store_open(&ctld_store_dir, conf->data_dir,
                               ctld_node_retarget);
    }

    if (conf->replica) {
        snprintf(name, sizeof(name), "%s", conf->replica);

    } else {
        if (gethostname(host, sizeof(host)) != 0) {
            snprintf(host, sizeof(host), "controld");
        }

        host[sizeof(host) - 1] = '\0';
        port = strrchr(conf->listen, ':');
        snprintf(name, sizeof(name), "%s:%s", host, port ? port + 1 : "0");
    }

    ec.prefix = conf->store_prefix;
    ec.ca = conf->store_ca;
    ec.cert = conf->store_cert;
    ec.key = conf->store_key;
    ec.lease_ms = conf->store_lease_ms;
    ec.timeout_ms = conf->store_timeout_ms;
    ec.replica = strdup(name);
    ec.listen = conf->listen;

    fleet.node = ctld_node_remote_record;
    fleet.session = ctld_node_remote_session;
    fleet.command = ctld_node_remote_command;
    fleet.result = ctld_admin_node_result;

    ctld_store_etcd_configure(&ec);

    if (ctld_fleet_init(&fleet, ec.replica, conf->listen) != 0) {
        return -1;
    }

    return ctld_store_open(&ctld_store_etcd, conf->store, ctld_node_retarget);
}


static uint64_t
ctld_current_version(void)
{
    return ctld_store_current() ? ctld_store_current()->version : 0;
}
