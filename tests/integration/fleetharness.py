"""
What the fleet tests (test_fleet.py: one controld; test_etcd_fleet.py:
replicas on etcd) share about their nginx nodes and SMTP sinks: FleetNodes
holds them by name, sends marked mail through a node, reads a node's
error.log and waits at a sink for a marker (saying, on a timeout, where it
went instead); alerts() and teardown() close a fleet.
"""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import controlharness as ch
import relayharness as h


# the stream{} lines of a fleet node after its relay_control line: mTLS
# with the certificates of CERTS, status every second, delivery to the
# sinks' port with short timeouts and retries, no DNS (a port of DNSPORT
# where nothing answers)
NODE_CONF = """\
    relay_control_certificate @CERTS@/node-@NODE@.pem;
    relay_control_certificate_key @CERTS@/node-@NODE@.key;
    relay_control_trusted_certificate @CERTS@/ca.pem;
    relay_control_status_interval 1s;
    relay_delivery on;
    relay_resolver 127.0.0.1:@DNSPORT@;
    relay_resolver_timeout 1s;
    relay_smtp_port @SINKPORT@;
    relay_connect_timeout 1s;
    relay_smtp_timeout 3s;
    relay_retry_backoff 1s 2s;
    relay_queue_lifetime 1h;
"""


def relayctl(server, certs, *args, who="operator", stdin=None, timeout=8):
    """relayctl --timeout TIMEOUT ARGS against server (host:port) with the
    certificate of who from the directory certs."""
    certs = Path(certs)
    env = dict(os.environ)
    env["RELAYCTL_SERVER"] = server
    env["RELAYCTL_CA"] = str(certs / "ca.pem")
    env["RELAYCTL_CERT"] = str(certs / ("%s.pem" % who))
    env["RELAYCTL_KEY"] = str(certs / ("%s.key" % who))
    env.pop("GRPC_VERBOSITY", None)
    p = subprocess.run([ch.RELAYCTL, "--timeout", str(timeout),
                        *map(str, args)], env=env, input=stdin,
                       capture_output=True, text=True, timeout=timeout + 30)
    return ch.Run(p)


class FleetNodes:
    """nodes: name -> relayharness.Nginx; sinks: name ->
    deliveryharness.Sink."""

    def __init__(self):
        self.nodes = {}
        self.sinks = {}

    def node(self, nid):
        return self.nodes[nid]

    def wait_nodes(self, pred, timeout=15, what="nodes", **kw):
        """(json, {node: info}) of `relayctl nodes --json` once pred of
        them holds: self.nodes_json(**kw) lists, self.diagnostics() says
        what controld said on a timeout."""
        last = [None]

        def look():
            try:
                j, by = self.nodes_json(**kw)
            except AssertionError as e:
                last[0] = e
                return None
            last[0] = j
            return (j, by) if pred(j, by) else None
        try:
            return h.wait_until(look, timeout, interval=0.2, what=what)
        except AssertionError as e:
            raise AssertionError("%s; last `relayctl nodes --json`:\n%s\n%s"
                                 % (e, last[0], self.diagnostics()))

    def policy_file(self, text):
        """text in a new file of self.tmp, for relayctl apply"""
        f = self.tmp / ("p%d.policy" % time.monotonic_ns())
        f.write_text(text)
        return f

    @staticmethod
    def applied(r, rc=0):
        """The version relayctl apply run r made, its exit code rc."""
        assert r.rc == rc, r
        m = re.search(r"applied version (\d+)", r.out)
        assert m, r
        return int(m.group(1))

    def start_node(self, nid, base, tls, template, alloc, **subst):
        """nginx of node nid on a prefix under base, 2 workers, ports from
        alloc(), its stream{} lines template with @NODE@ and @KEY@ of
        subst filled in."""
        prefix = h.make_prefix(Path(base) / nid, tls)
        ports = {name: alloc() for name in h.PORT_NAMES}
        extra = template
        for k, v in dict(subst, NODE=nid).items():
            extra = extra.replace("@%s@" % k, str(v))
        ng = h.Nginx(prefix, ports, workers=2, stream_extra=extra)
        self.nodes[nid] = ng
        return ng.start()

    def marks(self):
        return {n: ng.log_mark() for n, ng in self.nodes.items()}

    def send(self, nid, rcpts, sender=None, marker=None):
        marker = marker or h.unique("m")
        sender = sender or "from-%s@senders.example" % marker
        with h.SMTPConn(self.node(nid).port("main")) as c:
            qid = c.message(sender, rcpts, h.simple_body(marker),
                            ehlo="client.test")
            c.cmd("QUIT")
        return qid

    def deliver_each(self, sink, tag, nids):
        """A message to example.org through each node of nids, each
        received at the sink named sink: {node: marker}."""
        sent = {}
        for nid in nids:
            mk = h.unique(tag + nid)
            self.send(nid, ["%s@example.org" % mk], marker=mk)
            sent[nid] = mk
        for nid, mk in sent.items():
            self.wait_at(sink, mk, nid)
        return sent

    def error_log(self, nid, since=0):
        f = self.node(nid).prefix / "logs" / "error.log"
        with open(f, "rb") as fh:
            fh.seek(since)
            return fh.read().decode("utf-8", "replace")

    def wait_log(self, nid, pattern, since=0, timeout=10):
        rx = re.compile(pattern)
        try:
            return h.wait_until(lambda: rx.search(self.error_log(nid, since)),
                                timeout, what="/%s/ in %s's error.log"
                                % (pattern, nid))
        except AssertionError as e:
            raise AssertionError("%s; tail:\n%s" % (e, "\n".join(
                self.error_log(nid, since).splitlines()[-15:])))

    def wait_at(self, sink, mk, nid, timeout=15):
        """The transaction of marker mk at the sink named sink (sent via
        node nid); on a timeout, where it went instead."""
        try:
            return self.sinks[sink].wait_accepted(mk, timeout=timeout)
        except AssertionError as e:
            elsewhere = {n: s.all_txns(mk) for n, s in self.sinks.items()
                         if s.all_txns(mk)}
            lines = [l for l in self.error_log(nid).splitlines()
                     if mk in l or "relay policy" in l
                     or "relay control" in l]
            raise AssertionError("%s\nat other sinks: %r\n%s's log:\n%s"
                                 % (e, elsewhere, nid,
                                    "\n".join(lines[-25:])))


def alerts(ng):
    return [l for l in ng.logs_text().splitlines()
            if "[alert]" in l or "[emerg]" in l]


def teardown(fleet, others, base):
    """Stops every node of fleet, then each of others (whatever has a
    stop()), then the sinks; removes base unless RELAY_KEEP_FLEET."""
    for ng in fleet.nodes.values():
        try:
            h.stop_node(ng)
        except Exception:
            pass
    for o in others:
        if o is None:
            continue
        try:
            o.stop()
        except Exception:
            pass
    for s in fleet.sinks.values():
        s.stop()
    if not os.environ.get("RELAY_KEEP_FLEET"):
        shutil.rmtree(base, ignore_errors=True)
