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
 * store (ctld_store.c, over the data directory of ctld_store_dir.c) and
 * the byte buffer codec (ctld_codec.c) serve them; the log, the clock and
 * allocation are leaves.  Nothing here is thread-safe, nor needs be.
 *
 * Calls go one way, down this list:
 *
 *   controld.c    conf, store, node, admin, server: wiring only
 *   ctld_admin    node, store, server (the call API), codec, the library
 *   ctld_node     store, server (the call API), codec
 *   ctld_server   auth, codec
 *   ctld_store    its backend (ctld_store_dir), codec, the library
 *   and all       log, clock, alloc, metrics, stats: the leaves
 *
 * The metrics (ctld_metrics.c, served on --metrics-listen from the
 * server's tick) see the node table and the store through the view
 * main() gives them.
 *
 * Where a lower part reports upwards (the server to its services, the
 * node side to the admin side) it calls what main() gave it at startup.
 */


#include <grpc/grpc.h>

#include "ctld_admin.h"
#include "ctld_conf.h"
#include "ctld_log.h"
#include "ctld_metrics.h"
#include "ctld_node.h"
#include "ctld_server.h"
#include "ctld_store.h"
#include "ctld_store_dir.h"


static int ctld_run(const ctld_conf_t *conf);
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

    if (ctld_store_open(&ctld_store_dir, conf->data_dir) != 0) {
        return -1;
    }

    node.insecure = conf->insecure;
    node.status_timeout_ms = conf->status_timeout_ms;
    node.result = ctld_admin_node_result;
    node.gone = ctld_admin_node_gone;

    ctld_node_init(&node);
    ctld_admin_init(conf->command_timeout_ms);

    view.versions = ctld_node_versions;
    view.current = ctld_current_version;

    if (ctld_metrics_init(conf->metrics_listen, &view) != 0) {
        ctld_store_close();
        return -1;
    }

    version = ctld_store_current() ? ctld_store_current()->version : 0;

    grpc_init();

    rc = ctld_server_run(conf, version, &ctld_node_service,
                         &ctld_admin_service);

    ctld_metrics_close();
    ctld_node_free_all();
    ctld_store_close();
    grpc_shutdown();

    if (rc == 0) {
        ctld_log("stopped");
    }

    return rc;
}


static uint64_t
ctld_current_version(void)
{
    return ctld_store_current() ? ctld_store_current()->version : 0;
}
