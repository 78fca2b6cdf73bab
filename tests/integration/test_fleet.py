"""
The control plane end to end: controld and a fleet of three REAL nginx
relay nodes on loopback, driven with relayctl as an operator would.

One fleet per module (scope=module): certificates of deploy/dev-certs.sh
(node1..node3, operator:admin), controld ($CONTROLD), three nginx
(relayharness.Nginx, 2 workers each) whose stream{} holds relay_control
with mTLS, status every second, outbound delivery with a 1 s queue scan,
and Python SMTP sinks (deliveryharness.Sink) on 127.0.0.5-10:

  S0   127.0.0.5   example.org by nginx.conf (relay_route), before any policy
  S1   127.0.0.6   example.org by fleet policy "A"
  S2   127.0.0.7   example.org by fleet policy "B"
  DSN  127.0.0.9   senders.example (nginx.conf): the senders, DSNs land here
  HOLD 127.0.0.10  hold.example by every fleet policy, 451 to the RCPT of
                   a held marker (retry hold.example min=10m: stays queued)

No DNS is used: every route is an [IP]:port literal (relay_resolver points
at a port of ours where nothing answers).  Ports: TCP 25000-25499 only.
The tests run in file order and share the fleet (policy versions grow);
each one asserts on what it made itself.  Real assertions only: what the
sinks received, queue files on disk, relayctl exit codes and JSON, the
nginx error.logs and controld's log; every wait is bounded.

Two tests fail on purpose until their bug is fixed (KNOWN BUG comments
above them): test_route_change_reaches_cached_connections (an idle cached
SMTP connection outlives a fleet route change) and
test_reload_keeps_the_session (the nginx master dies of SIGSEGV reaping any
worker when relay_control is on).  Other tests wait out the first one
(Fleet.settle) so that they test what they are about.

  RELAY_MODULE=... CONTROLD=... RELAYCTL=... /usr/bin/python3 -m pytest \
      -q -p no:cacheprovider tests/integration/test_fleet.py

$CONTROLD / $RELAYCTL default to the controld/ directory of $RELAY_MODULE's
build (tests/run-all.sh BUILD_DIR), else build/controld/.
"""

import email
import email.policy
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import controlharness as ch
import deliveryharness as dh
import fleetharness as fh
import relayharness as h

RELAYCTL = ch.RELAYCTL

PORTS = h.PortRange(25000, 25499)
alloc_port = PORTS.alloc
stop_node = h.stop_node

NODES = ("node1", "node2", "node3")
SINK_IPS = {"S0": "127.0.0.5", "S1": "127.0.0.6", "S2": "127.0.0.7",
            "DSN": "127.0.0.9", "HOLD": "127.0.0.10"}
NACK_ADDR = "192.0.2.7"         # TEST-NET-1: no node can bind it


# --------------------------------------------------------------------------
# relayctl


def relayctl(fleet, *args, who="operator", certs=None, stdin=None,
             timeout=8):
    return fh.relayctl("127.0.0.1:%d" % fleet.ctld.port,
                       certs or fleet.certs, *args, who=who, stdin=stdin,
                       timeout=timeout)


# --------------------------------------------------------------------------
# policies


def policy_text(tag, example_org, extra=""):
    """A fleet policy: example.org to the sink example_org names, the
    hold.example route with its long retry, short retries for the rest."""
    return ("comment \"%s\";\n"
            "route example.org [%s]:%d;\n"
            "route hold.example [%s]:%d;\n"
            "retry * min=1s max=2s lifetime=1h;\n"
            "retry hold.example min=10m max=1h lifetime=1h;\n%s"
            % (tag, SINK_IPS[example_org], Fleet.sink_port,
               SINK_IPS["HOLD"], Fleet.sink_port, extra))


# --------------------------------------------------------------------------
# the fleet


STREAM_EXTRA = """\
    relay_control 127.0.0.1:@CPORT@ node=@NODE@;
""" + fh.NODE_CONF + """\
    relay_queue_scan_interval 1s;
    relay_connection_idle_timeout 3s;
    relay_route example.org [127.0.0.5]:@SINKPORT@;
    relay_route senders.example [127.0.0.9]:@SINKPORT@;
"""


class Fleet(fh.FleetNodes):
    sink_port = None

    def __init__(self, tmp):
        super().__init__()
        self.tmp = Path(tmp)
        self.certs = None
        self.ctld = None
        self.held = set()           # markers HOLD answers 451 to
        self.quit_rc = {}           # node -> master's exit code at a stop
        self.tls_certs = None

    # ---- views
    def nodes_json(self):
        r = relayctl(self, "nodes", "--json")
        assert r.rc == 0, r
        j = r.json()
        return j, {n["node_id"]: n for n in j["nodes"]}

    def diagnostics(self):
        return "controld log tail:\n" + "\n".join(
            self.ctld.log_text().splitlines()[-20:])

    def wait_all_applied(self, version, timeout=15):
        def ok(j, by):
            return (set(by) >= set(NODES)
                    and all(by[n]["connected"]
                            and by[n]["applied_version"] == version
                            for n in NODES))
        return self.wait_nodes(ok, timeout,
                               "every node connected, applied %d" % version)

    def apply(self, text, *extra, rc=0):
        """relayctl apply, which waits for every node: rc 0 when each
        ACKed, 10 when one NACKed."""
        r = relayctl(self, "apply", self.policy_file(text), *extra)
        return self.applied(r, rc)

    def current(self):
        r = relayctl(self, "history", "-n", "1", "--json")
        assert r.rc == 0, r
        return r.json()["current"]

    def settle(self, target):
        """Waits until no example.org sink but target holds a connection
        from a node.  Workaround for the cached-connection bug (see
        test_route_change_reaches_cached_connections): a worker's idle
        connection to the old next hop outlives a route change for up to
        relay_connection_idle_timeout (3 s here).  Tests about other things use
        it so that they test what they are about."""
        others = [n for n in ("S0", "S1", "S2") if n != target]
        h.wait_until(lambda: all(self.sinks[n].active == 0 for n in others),
                     12, what="idle connections to %s to close" % others)


def _hold_reply(fleet):
    def rcpt(sess, txn, addr):
        if any(m in addr for m in list(fleet.held)):
            return "451 4.3.0 held by the test"
        return None
    return rcpt


@pytest.fixture(scope="module")
def fleet():
    h.require_module()
    for b in (ch.CONTROLD, RELAYCTL):
        if not os.access(b, os.X_OK):
            raise AssertionError("binary not found: %s (set CONTROLD / "
                                 "RELAYCTL)" % b)
    # a base of our own, not under /tmp/pytest-of-root: concurrent pytest
    # runs reset that to 0700 (workers run as nobody) and prune it
    base = Path(tempfile.mkdtemp(prefix="relay-fleet-"))
    ch.load_stubs(base / "gen")
    fl = Fleet(base / "fleet")
    fl.tmp.mkdir()
    fl.certs = ch.make_certs(base / "ctlcerts", *NODES)
    fl.tls_certs = h.make_certs(base / "tlscerts")
    try:
        Fleet.sink_port = alloc_port(tuple(SINK_IPS.values()))
        for name, ip in SINK_IPS.items():
            s = dh.Sink(ip, Fleet.sink_port, name=name)
            if name == "HOLD":
                s.rcpt_reply = _hold_reply(fl)
            fl.sinks[name] = s.start()

        fl.ctld = ch.Controld(fl.tmp / "controld", fl.certs,
                              port=alloc_port(),
                              extra=["--command-timeout", "5s"]).start()
        dns_port = alloc_port()             # nothing listens there
        for nid in NODES:
            fl.start_node(nid, base, fl.tls_certs, STREAM_EXTRA, alloc_port,
                          CPORT=fl.ctld.port, CERTS=fl.certs,
                          DNSPORT=dns_port, SINKPORT=Fleet.sink_port)
        fl.wait_nodes(lambda j, by: set(by) >= set(NODES)
                      and all(by[n]["connected"] for n in NODES),
                      20, "three nodes connected")
        yield fl
    finally:
        fh.teardown(fl, [fl.ctld], base)


alerts = fh.alerts


# ==========================================================================
# apply: every node ACKs and routes by it


def test_fleet_connects(fleet):
    j, by = fleet.nodes_json()
    for nid in NODES:
        n = by[nid]
        assert n["connected"], n
        assert n["peer"], n
        assert n["applied_version"] == 0, n
        log = fleet.error_log(nid)
        assert 'relay control: node "%s" subscribes to 127.0.0.1:%d' % (
            nid, fleet.ctld.port) in log
        assert "relay control: session with 127.0.0.1:%d started" % \
            fleet.ctld.port in log
    clog = fleet.ctld.log_text()
    version = (ch.TOP / "VERSION").read_text().split()[0]
    for nid in NODES:
        assert re.search(r"node %s connected peer=\S+ software=\"nginx-relay/"
                         r"%s nginx/" % (nid, re.escape(version)), clog), clog


def test_apply_acked_by_every_node_and_routes_mail(fleet):
    s0, s1 = fleet.sinks["S0"], fleet.sinks["S1"]

    # before any policy: nginx.conf's relay_route, sink S0
    for mk in fleet.deliver_each("S0", "pre", NODES).values():
        assert not s1.all_txns(mk)
    fleet.settle("S1")

    marks = fleet.marks()
    v = fleet.apply(policy_text("policy A", "S1"), "-m", "route to S1")
    j, by = fleet.wait_all_applied(v)
    assert j["current"] == v
    for nid in NODES:
        assert by[nid]["nacked_version"] == 0 and not by[nid]["nack_reason"]
        fleet.wait_log(nid, r"relay control: policy version %d applied and "
                       r"stored" % v, marks[nid])
        # every worker picks it up from the shared zone
        h.wait_until(lambda: len(re.findall(
            r"relay policy version %d in use" % v,
            fleet.error_log(nid, marks[nid]))) >= 2, 10,
            what="both workers of %s to use version %d" % (nid, v))
        # the last-known-good snapshot is on disk
        assert (fleet.node(nid).spool / "policy.pb").stat().st_size > 0
    clog = fleet.ctld.log_text()
    for nid in NODES:
        assert "node %s ACK version %d" % (nid, v) in clog

    # the sinks show the change: example.org now goes to S1, from every node
    after = {}
    for nid in NODES:
        mk = h.unique("post" + nid)
        fleet.send(nid, ["%s@example.org" % mk], marker=mk)
        after[nid] = mk
    for nid, mk in after.items():
        t = fleet.wait_at("S1", mk, nid)[0]
        assert t.rcpts == ["%s@example.org" % mk]
        assert not s0.all_txns(mk), "node %s still used nginx.conf's route" \
            % nid


# KNOWN BUG (open, module/ngx_relay_delivery.c): a worker's idle cached
# connection outlives a fleet route change.  ngx_relay_delivery_begin()
# takes a cached connection of the destination (the recipient domain) that
# is "own" (to one of the domain's hosts when it was made) before it looks
# at the route, so after a new policy is ACKed and in use, example.org mail
# still goes to the OLD next hop over that connection until it idles out
# (relay_connection_idle_timeout, 5 s by default) or reaches its reuse
# limit (100 messages: a busy destination may never move).  With
# relay_connection_reuse off the same steps route by the new policy.

def _sent_by(fleet, nid, mk, since):
    """pid of the worker that logged the delivery of marker mk."""
    m = re.search(r"\] (\d+)#\d+: \S+: to=<%s@example\.org>, relay=\S+, "
                  r".*status=sent" % re.escape(mk),
                  fleet.error_log(nid, since))
    return int(m.group(1)) if m else None


def test_route_change_reaches_cached_connections(fleet):
    ng = fleet.node("node1")
    workers = set(ng.worker_pids())
    v0 = fleet.apply(policy_text("cached connections: before", "S1"))
    fleet.wait_all_applied(v0)
    fleet.settle("S1")

    # both workers of node1 deliver to S1 and keep the connection idle
    mark = ng.log_mark()
    used = set()
    for i in range(16):
        mk = h.unique("c1")
        fleet.send("node1", ["%s@example.org" % mk], marker=mk)
        fleet.wait_at("S1", mk, "node1")
        used.add(h.wait_until(lambda: _sent_by(fleet, "node1", mk, mark), 5,
                              what="the delivery line of %s" % mk))
        if used >= workers:
            break
    assert used >= workers, "could not get both workers to deliver"
    assert fleet.sinks["S1"].active >= 1

    # the route changes; every node ACKs it
    v = fleet.apply(policy_text("cached connections: after", "S2"))
    fleet.wait_all_applied(v)

    wrong = []
    accepted_by = set()
    mark = ng.log_mark()
    for i in range(8):
        mk = h.unique("c2")
        fleet.send("node1", ["%s@example.org" % mk], marker=mk)
        h.wait_until(lambda: fleet.sinks["S2"].accepted(mk)
                     or fleet.sinks["S1"].accepted(mk), 10,
                     what="%s delivered somewhere" % mk)
        pid = _sent_by(fleet, "node1", mk, mark)
        accepted_by.add(pid)
        if fleet.sinks["S1"].accepted(mk):
            wrong.append((mk, pid))
        if accepted_by >= workers:
            break
    try:
        assert not wrong, (
            "BUG: version %d (example.org -> S2 127.0.0.7) was ACKed by "
            "node1, yet %d of its next messages went to the OLD next hop "
            "S1 127.0.0.6 over a cached idle connection (worker pids %r)"
            % (v, len(wrong), sorted({p for _, p in wrong})))
    finally:
        fleet.settle("S2")


# ==========================================================================
# refused at apply


def test_invalid_policy_refused_at_apply(fleet):
    cur = fleet.current()
    marks = fleet.marks()

    # parses, but controld's validation refuses it: max < min
    bad = fleet.tmp / "bad.policy"
    bad.write_text(policy_text("bad", "S2").replace(
        "retry * min=1s max=2s", "retry * min=10m max=1m"))
    r = relayctl(fleet, "apply", bad)
    assert r.rc == 3, r
    assert "INVALID_ARGUMENT" in r.err, r
    assert re.search(r"retry\[0\]\.backoff_max_s", r.err), r
    assert "applied version" not in r.out

    # a parse error never reaches controld
    bad2 = fleet.tmp / "bad2.policy"
    bad2.write_text('route example.org "[127.0.0.7:25";\n')
    r2 = relayctl(fleet, "apply", bad2)
    assert r2.rc == 3, r2

    # the same policy straight over gRPC: INVALID_ARGUMENT with the field
    import grpc
    chan, adm = fleet.ctld.admin()
    try:
        p = ch.pb.Policy(comment="raw")
        p.routes.add(pattern="example.org", next_hops=["[127.0.0.7"])
        with pytest.raises(grpc.RpcError) as e:
            adm.Apply(ch.pb.ApplyRequest(policy=p))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "routes[0].next_hops[0]" in e.value.details()
    finally:
        chan.close()

    assert fleet.current() == cur
    assert "refused" in fleet.ctld.log_text()
    _, by = fleet.nodes_json()
    for nid in NODES:
        assert by[nid]["applied_version"] == cur
        assert by[nid]["nacked_version"] == 0
        assert "policy version %d" % (cur + 1) not in \
            fleet.error_log(nid, marks[nid])


# ==========================================================================
# NACK: valid for controld, not usable on the node


def test_node_nacks_and_nodes_shows_why(fleet):
    good = fleet.apply(policy_text("good before the NACK", "S1"))
    fleet.wait_all_applied(good)
    fleet.settle("S1")
    marks = fleet.marks()
    v = fleet.apply(policy_text("unbindable pool", "S2",
                                "egress_pool bulk ehlo=bulk.example.net "
                                "%s;\n" % NACK_ADDR), rc=10)
    assert v == good + 1

    def nacked(j, by):
        return all(by[n]["nacked_version"] == v for n in NODES)
    j, by = fleet.wait_nodes(nacked, 15, "three NACKs of %d" % v)
    for nid in NODES:
        n = by[nid]
        assert n["connected"] and n["applied_version"] == good, n
        assert n["nack_reason"] == (
            "egress_pools[0].addresses[0]: %s is not usable on node %s: "
            "Cannot assign requested address" % (NACK_ADDR, nid)), n
        fleet.wait_log(nid, r"\[error\].*relay control: policy version %d "
                       r"refused: egress_pools\[0\]\.addresses\[0\]: %s is "
                       r"not usable on node %s" % (v, re.escape(NACK_ADDR),
                                                   nid), marks[nid])
        assert "policy version %d applied" % v not in \
            fleet.error_log(nid, marks[nid])

    # the table says it too: NACK "VERSION: reason", APPLIED behind
    t = relayctl(fleet, "nodes")
    assert t.rc == 0, t
    for nid in NODES:
        row = [l for l in t.out.splitlines() if l.split()[:1] == [nid]]
        assert row, t
        assert "%d (behind)" % good in row[0], row
        assert "%d: egress_pools[0].addresses[0]: %s" % (v, NACK_ADDR) \
            in row[0], row
    assert "node node1 NACK version %d: egress_pools[0]" % v \
        in fleet.ctld.log_text()

    # the nodes keep routing by the last version they took (S1, not S2)
    mk = h.unique("nack")
    fleet.send("node2", ["%s@example.org" % mk], marker=mk)
    fleet.wait_at("S1", mk, "node2")
    assert not fleet.sinks["S2"].all_txns(mk)

    # a good version after it is taken again; the NACK is forgotten
    v2 = fleet.apply(policy_text("policy A again", "S1"))
    _, by = fleet.wait_all_applied(v2)
    for nid in NODES:
        assert by[nid]["nacked_version"] in (0, v), by[nid]


def test_node_nacks_unreadable_dkim_key(fleet):
    """The policy names DKIM key files on the nodes: a node that cannot
    read one (worker 0's control thread checks) NACKs with the reason."""
    good = fleet.apply(policy_text("good before the dkim NACK", "S1"))
    fleet.wait_all_applied(good)
    missing = "/nonexistent/relay-dkim.pem"
    v = fleet.apply(policy_text("dkim key missing", "S1",
                                "dkim example.org selector=s key=%s;\n"
                                % missing), rc=10)

    def nacked(j, by):
        return all(by[n]["nacked_version"] == v for n in NODES)
    _, by = fleet.wait_nodes(nacked, 15, "three NACKs of %d" % v)
    for nid in NODES:
        assert by[nid]["applied_version"] == good, by[nid]
        assert by[nid]["nack_reason"] == (
            "dkim[0].key_file: cannot read \"%s\": No such file or "
            "directory" % missing), by[nid]

    # a key the workers can read is taken
    d = Path(tempfile.mkdtemp(prefix="relay-dkim-"))
    try:
        os.chmod(str(d), 0o755)
        key = d / "k.pem"
        subprocess.run(["openssl", "genpkey", "-algorithm", "ED25519",
                        "-out", str(key)], check=True, capture_output=True)
        os.chmod(str(key), 0o644)
        v2 = fleet.apply(policy_text("dkim key there", "S1",
                                     "dkim example.org selector=s key=%s "
                                     "algorithm=ed25519-sha256;\n" % key))
        fleet.wait_all_applied(v2)
    finally:
        shutil.rmtree(str(d), ignore_errors=True)


# ==========================================================================
# rollback


def test_rollback(fleet):
    va = fleet.apply(policy_text("policy A, rollback target", "S1"))
    fleet.wait_all_applied(va)
    vb = fleet.apply(policy_text("policy B", "S2"))
    fleet.wait_all_applied(vb)
    fleet.settle("S2")

    mk = h.unique("polb")
    fleet.send("node3", ["%s@example.org" % mk], marker=mk)
    fleet.wait_at("S2", mk, "node3")

    r = relayctl(fleet, "rollback", va)
    assert r.rc == 0, r
    assert "applied version %d" % (vb + 1) in r.out, r
    assert "-route example.org [127.0.0.7]" in r.out
    assert "+route example.org [127.0.0.6]" in r.out
    vr = vb + 1
    fleet.wait_all_applied(vr)
    fleet.settle("S1")

    hist = relayctl(fleet, "history", "--json")
    assert hist.rc == 0, hist
    ent = {e["version"]: e for e in hist.json()["entries"]}
    assert ent[vr]["rolled_back_from"] == va
    g = relayctl(fleet, "get")
    assert g.out.startswith("# version %d\n" % vr)
    assert "route example.org [127.0.0.6]:%d;" % Fleet.sink_port in g.out

    for nid in NODES:
        mk = h.unique("rb" + nid)
        fleet.send(nid, ["%s@example.org" % mk], marker=mk)
        fleet.wait_at("S1", mk, nid)
        assert not fleet.sinks["S2"].all_txns(mk)


# ==========================================================================
# queue through controld


def _hold_msgs(fleet, plan, tag):
    """plan: {node: count}; queues that many messages to held hold.example
    recipients on each node and waits until each was tried once (451);
    returns {node: [(qid, marker)]}."""
    out = {}
    for nid, count in plan.items():
        for _ in range(count):
            mk = h.unique(tag + nid)
            fleet.held.add(mk)
            qid = fleet.send(nid, ["%s@hold.example" % mk], marker=mk)
            out.setdefault(nid, []).append((qid, mk))
    hold = fleet.sinks["HOLD"]
    for nid, msgs in out.items():
        for qid, mk in msgs:
            h.wait_until(lambda: any(a for a, _, r in sum(
                (t.rcpt_log for t in hold.all_txns(mk)), [])
                if r.startswith("451")), 10,
                what="the first (451) attempt of %s" % mk)
            # the queue file says it was tried and is due in ~10 minutes
            h.wait_until(lambda: _next_attempt(fleet, nid, qid), 10,
                         what="%s's queue file of %s rescheduled"
                         % (nid, qid))
    return out


def _next_attempt(fleet, nid, qid):
    """(next attempt, attempts) from the queue file, once rescheduled."""
    return dh.next_attempt(fleet.node(nid), qid)


def _queue(fleet, *args):
    r = relayctl(fleet, "queue", *args, "--json")
    return r, (r.json() if r.out.strip().startswith("{") else None)


def _by_node(j):
    return {res["node_id"]: res for res in j["results"]}


def test_queue_list_and_node_status(fleet):
    for nid in NODES:
        assert not h.queue_files(fleet.node(nid)), \
            "%s's queue is not empty at the start" % nid
    msgs = _hold_msgs(fleet, {"node1": 1, "node2": 2, "node3": 1}, "ql")

    r, j = _queue(fleet, "list")
    assert r.rc == 0, r
    by = _by_node(j)
    assert set(by) == set(NODES), j
    now = time.time()
    for nid in NODES:
        res = by[nid]
        assert res["ok"], res
        on_disk = {p.name for p in h.queue_files(fleet.node(nid))}
        listed = {e["id"]: e for e in res["entries"]}
        assert set(listed) == on_disk == {q for q, _ in msgs[nid]}, \
            (nid, listed, on_disk)
        for qid, mk in msgs[nid]:
            e = listed[qid]
            assert e["sender"] == "from-%s@senders.example" % mk
            assert e["pending"] == ["%s@hold.example" % mk]
            assert e["recipients"] == 1
            assert e["attempts"] >= 1
            assert e["next_attempt_unix"] > now + 300, e
            assert e["size"] > 0

    # --node: that node only
    r2, j2 = _queue(fleet, "list", "--node", "node2")
    assert r2.rc == 0, r2
    assert [res["node_id"] for res in j2["results"]] == ["node2"]
    assert {e["id"] for e in j2["results"][0]["entries"]} == \
        {q for q, _ in msgs["node2"]}

    # the text form
    t = relayctl(fleet, "queue", "list", "--node", "node2")
    assert t.rc == 0, t
    assert "node2: 2 messages" in t.out
    for qid, mk in msgs["node2"]:
        assert re.search(r"%s .*<from-%s@senders\.example>\s+1/1\s+%s@hold"
                         r"\.example\s+in " % (qid, mk, mk), t.out), t.out

    # node status: queue counts per node, from the status stream
    want = {"node1": 1, "node2": 2, "node3": 1}

    def counted(j, by):
        return all(by[n]["status"]["queue_messages"] == want[n]
                   and by[n]["status"]["queue_deferred"] == want[n]
                   and by[n]["status"]["queue_pending_recipients"] == want[n]
                   for n in NODES)
    _, byn = fleet.wait_nodes(counted, 15, "queue counts in node status")
    for nid in NODES:
        st = byn[nid]["status"]
        assert st["applied_version"] == byn[nid]["applied_version"]
        assert st["accepted_total"] >= want[nid] + 1, st
        assert st["deferred_total"] >= want[nid], st
        assert st["uptime_s"] >= 0
    t2 = relayctl(fleet, "nodes")
    row = [l for l in t2.out.splitlines() if l.startswith("node2 ")]
    assert row and re.search(r"\s2 msgs, 2 rcpts\s+2\s", row[0]), t2.out

    # live figures from the schedules: by destination, the oldest's age
    def by_destination(j, by):
        return all([(d["domain"], d["messages"]) for d in
                    by[n]["status"]["queue_destinations"]]
                   == [("hold.example", want[n])]
                   and int(by[n]["status"]["queue_oldest_age_s"]) >= 1
                   for n in NODES)
    _, byn = fleet.wait_nodes(by_destination, 15,
                              "queue by destination in node status")
    for nid in NODES:
        st = byn[nid]["status"]
        assert st["queue_held"] == 0 and st["queue_parked"] == 0, st
        assert st["queue_active"] == 0, st
        assert int(st["queue_oldest_age_s"]) < 120, st
    t3 = relayctl(fleet, "nodes")
    assert "node2 queue by destination: hold.example 2" in t3.out, t3.out

    # clean up through controld: delete --all on every node
    r3, j3 = _queue(fleet, "delete", "--all")
    assert r3.rc == 0, r3
    assert {n: res["affected"] for n, res in _by_node(j3).items()} == want
    for nid in NODES:
        h.wait_until(lambda: not h.queue_files(fleet.node(nid)), 5,
                     what="%s's queue to be empty" % nid)


def test_queue_delete_reaches_the_right_node(fleet):
    msgs = _hold_msgs(fleet, {"node1": 1, "node2": 2}, "qd")
    (d1, m1), = msgs["node1"]
    (d2a, m2a), (d2b, m2b) = msgs["node2"]

    # an id of node1's asked of node2: no such message there; node1's stays
    r, j = _queue(fleet, "delete", "--node", "node2", d1)
    assert r.rc == 7, r
    res, = j["results"]
    assert res["node_id"] == "node2" and not res["ok"]
    assert "no such message: %s" % d1 in res["error"]
    assert h.queue_file_for(fleet.node("node1"), d1)

    r, j = _queue(fleet, "delete", "--node", "node2", d2a)
    assert r.rc == 0, r
    res, = j["results"]
    assert res["ok"] and res["affected"] == 1, res
    assert dh.queue_gone(fleet.node("node2"), d2a)
    assert h.queue_file_for(fleet.node("node2"), d2b)
    assert h.queue_file_for(fleet.node("node1"), d1)

    # without --node: every node is asked, the one that has it deletes it
    t = relayctl(fleet, "queue", "delete", d1)
    assert t.rc == 7, t            # node2 and node3 have no such message
    assert re.search(r"^node1: deleted 1 message$", t.out, re.M), t
    assert dh.queue_gone(fleet.node("node1"), d1)

    # deleted means no delivery and no DSN, even once the sink accepts
    fleet.held.difference_update({m1, m2a})
    r, j = _queue(fleet, "delete", "--node", "node2", d2b)
    assert r.rc == 0 and _by_node(j)["node2"]["affected"] == 1, r
    fleet.held.discard(m2b)
    for mk in (m1, m2a, m2b):
        assert not fleet.sinks["HOLD"].accepted(mk)
        assert not fleet.sinks["DSN"].all_txns(mk)


def test_queue_flush_reaches_the_right_node(fleet):
    msgs = _hold_msgs(fleet, {"node1": 1, "node3": 1}, "qf")
    (q1, m1), = msgs["node1"]
    (q3, m3), = msgs["node3"]
    before3 = _next_attempt(fleet, "node3", q3)
    fleet.held.difference_update({m1, m3})      # the sink takes them now

    r, j = _queue(fleet, "flush", "--node", "node1")
    assert r.rc == 0, r
    res, = j["results"]
    assert res["node_id"] == "node1" and res["ok"] and \
        res["affected"] == 1, (res, q1, [p.name for p in
                                         h.raw_queue_files(fleet.node("node1"))],
                               fleet.error_log("node1")[-3000:])
    t = fleet.sinks["HOLD"].wait_accepted(m1, timeout=10)[0]
    assert t.sender == "from-%s@senders.example" % m1
    dh.wait_queue_gone(fleet.node("node1"), q1, 10)

    # node3 was not flushed: still queued, same schedule, not delivered
    assert _next_attempt(fleet, "node3", q3) == before3
    assert not fleet.sinks["HOLD"].accepted(m3)

    # flush by id without --node: node3 delivers it
    tx = relayctl(fleet, "queue", "flush", q3)
    assert re.search(r"^node3: flushed 1 message$", tx.out, re.M), tx
    fleet.sinks["HOLD"].wait_accepted(m3, timeout=10)
    dh.wait_queue_gone(fleet.node("node3"), q3, 10)


def test_queue_bounce_sends_a_dsn(fleet):
    msgs = _hold_msgs(fleet, {"node3": 1, "node2": 1}, "qb")
    (q3, m3), = msgs["node3"]
    (q2, m2), = msgs["node2"]
    rcpt = "%s@hold.example" % m3
    sender = "from-%s@senders.example" % m3

    r, j = _queue(fleet, "bounce", "--node", "node3", q3)
    assert r.rc == 0, r
    res, = j["results"]
    assert res["ok"] and res["affected"] == 1, res

    dsn_sink = fleet.sinks["DSN"]
    t = h.wait_until(lambda: [x for x in dsn_sink.accepted()
                              if sender in x.rcpts], 15,
                     what="a DSN to %s" % sender)[0]
    assert t.sender == "", t
    msg = email.message_from_bytes(t.data, policy=email.policy.compat32)
    human, blocks, returned = dh.dsn_parts(msg)
    blk = dh.recipient_block(blocks, rcpt)
    assert dh.field(blk, "Action").lower() == "failed"
    assert dh.field(blk, "Status") == "5.0.0"
    assert "bounced by the operator" in (dh.field(blk, "Diagnostic-Code")
                                         + str(human.get_payload())), \
        t.data.decode("utf-8", "replace")
    dh.wait_queue_gone(fleet.node("node3"), q3, 10)
    assert not fleet.sinks["HOLD"].accepted(m3)
    fleet.wait_log("node3", r"%s: to=<%s>, relay=none, .*dsn=5\.0\.0, "
                   r"status=bounced \(message bounced by the operator\)"
                   % (q3, re.escape(rcpt)))

    # node2's message was not touched
    assert h.queue_file_for(fleet.node("node2"), q2)
    assert not [x for x in dsn_sink.all_txns()
                if "from-%s@senders.example" % m2 in x.rcpts]
    r, j = _queue(fleet, "delete", "--node", "node2", q2)
    assert r.rc == 0, r
    fleet.held.discard(m2)


def test_queue_hold_and_release_through_controld(fleet):
    msgs = _hold_msgs(fleet, {"node2": 2}, "qh")
    (qa, ma), (qb, mb) = msgs["node2"]
    hold = fleet.sinks["HOLD"]

    r, j = _queue(fleet, "hold", "--node", "node2", qa)
    assert r.rc == 0, r
    res, = j["results"]
    assert res["ok"] and res["affected"] == 1, res
    # a note for the node's workers names it
    notes = fleet.node("node2").spool / "notes"
    assert [n for n in notes.iterdir() if not n.name.startswith(".")
            and n.read_text().split() == [qa]], list(notes.iterdir())

    r, j = _queue(fleet, "list", "--node", "node2")
    assert r.rc == 0, r
    listed = {e["id"]: e for e in j["results"][0]["entries"]}
    assert listed[qa]["held"] is True and listed[qa]["state"] == "held"
    assert listed[qb]["held"] is False and listed[qb]["state"] == "deferred"
    t = relayctl(fleet, "queue", "list", "--node", "node2")
    assert re.search(r"%s .*<from-%s@senders\.example>\s+1/1\s+\S+\s+held\s"
                     % (qa, ma), t.out), t.out

    # again: nothing to do, and the answer says why
    t = relayctl(fleet, "queue", "hold", "--node", "node2", qa)
    assert t.rc == 1, t
    assert "node2: held 0 messages (%s: already held)" % qa in t.out, t

    # the sink takes both now; flushing the node delivers the other one
    # (a flush keeps the hold), and a third one flushed later proves the
    # workers scanned again
    fleet.held.difference_update({ma, mb})
    r, j = _queue(fleet, "flush", "--node", "node2")
    assert r.rc == 0 and j["results"][0]["affected"] == 2, r
    hold.wait_accepted(mb, timeout=10)
    dh.wait_queue_gone(fleet.node("node2"), qb, 10)
    (qc, mc), = _hold_msgs(fleet, {"node2": 1}, "qh")["node2"]
    fleet.held.discard(mc)
    r, j = _queue(fleet, "flush", "--node", "node2", qc)
    assert r.rc == 0, r
    hold.wait_accepted(mc, timeout=10)
    assert not hold.accepted(ma), "a held message was delivered"
    assert h.queue_file_for(fleet.node("node2"), qa)

    r, j = _queue(fleet, "release", "--node", "node2", qa)
    assert r.rc == 0 and j["results"][0]["affected"] == 1, r
    hold.wait_accepted(ma, timeout=10)
    dh.wait_queue_gone(fleet.node("node2"), qa, 10)

    t = relayctl(fleet, "queue", "release", "--node", "node2", qa)
    assert t.rc == 7 and "no such message: %s" % qa in t.out, t


# ==========================================================================
# controld down: last-known-good, persisted snapshot


def test_controld_killed_nodes_keep_delivering(fleet):
    cur = fleet.apply(policy_text("before the kill", "S1"))
    fleet.wait_all_applied(cur)
    fleet.settle("S1")
    marks = fleet.marks()
    assert fleet.ctld.stop(signal.SIGKILL) == -signal.SIGKILL
    try:
        _controld_down(fleet, cur, marks)
    finally:
        if fleet.ctld.proc is None:
            fleet.ctld.start()
    # controld back (same data dir): every node reconnects and says hello
    # with the version it runs, so nothing is sent again
    _, by = fleet.wait_all_applied(cur, timeout=20)
    assert fleet.current() == cur
    for nid in NODES:
        assert "policy version %d applied" % cur not in \
            fleet.error_log(nid, marks[nid]), nid


def _controld_down(fleet, cur, marks):
    for nid in NODES:
        fleet.wait_log(nid, r"relay control: session with \S+ ended",
                       marks[nid])

    # every node still routes by the last version: example.org -> S1
    for nid in NODES:
        mk = h.unique("down" + nid)
        fleet.send(nid, ["%s@example.org" % mk], marker=mk)
        fleet.wait_at("S1", mk, nid)
        assert not fleet.sinks["S0"].all_txns(mk)

    # node2 restarted while controld is down: the stored snapshot
    ng = fleet.node("node2")
    fleet.quit_rc["node2"] = stop_node(ng)     # (see test_reload_...)
    mark2 = ng.log_mark()
    ng.start()
    log = fleet.error_log("node2", mark2)
    assert re.search(r'relay policy version %d loaded from "[^"]*policy\.pb"'
                     % cur, log), log
    mk = h.unique("restarted")
    fleet.send("node2", ["%s@example.org" % mk], marker=mk)
    fleet.wait_at("S1", mk, "node2")
    assert not fleet.sinks["S0"].all_txns(mk)


# ==========================================================================
# identities


def test_wrong_certificates_refused(fleet):
    tmp_path = fleet.tmp
    # a node certificate on the admin service
    r = relayctl(fleet, "nodes", who="node-node1")
    assert r.rc == 5, r
    assert "PERMISSION_DENIED" in r.err, r
    r = relayctl(fleet, "queue", "list", who="node-node2")
    assert r.rc == 5, r

    # an operator certificate of another CA: the TLS handshake fails
    other = ch.make_certs(tmp_path / "other", "node1")
    env_certs = tmp_path / "mixed"
    env_certs.mkdir()
    (env_certs / "ca.pem").write_bytes((fleet.certs / "ca.pem").read_bytes())
    for f in ("operator.pem", "operator.key"):
        (env_certs / f).write_bytes((other / f).read_bytes())
    r = relayctl(fleet, "nodes", certs=env_certs)
    assert r.rc == 4, r
    assert "applied" not in r.out.lower()

    # the same over grpcio, with the node certificate
    import grpc
    chan, adm = fleet.ctld.admin("node-node3")
    try:
        with pytest.raises(grpc.RpcError) as e:
            adm.ListNodes(ch.pb.ListNodesRequest(), timeout=5)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        chan.close()
    assert re.search(r"refused caller \S+ on \S*(ListNodes|Admin)\S*",
                     fleet.ctld.log_text()), fleet.ctld.log_text()[-2000:]

    # no client certificate at all
    chan = grpc.secure_channel(
        "127.0.0.1:%d" % fleet.ctld.port, grpc.ssl_channel_credentials(
            root_certificates=(fleet.certs / "ca.pem").read_bytes()))
    try:
        with pytest.raises(grpc.RpcError) as e:
            ch.pb_grpc.AdminStub(chan).ListNodes(ch.pb.ListNodesRequest(),
                                                 timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
    finally:
        chan.close()

    # the fleet is unharmed
    fleet.wait_all_applied(fleet.current())


# ==========================================================================
# reload
#
# KNOWN BUG (open, module/ngx_relay_control.c): the nginx MASTER dies of
# SIGSEGV as soon as it reaps any worker (reload, nginx -s quit, a worker
# killed) when relay_control is configured.  nginx's master calls
# ngx_unlock_mutexes(pid) for every child it reaps, and that treats the
# start of EVERY shared memory zone as an ngx_slab_pool_t and calls
# ngx_shmtx_force_unlock(&sp->mutex, pid); ngx_relay_control_init_zone()
# uses the "relay_control" zone raw (ngx_relay_policy_shm_t from offset 0,
# zeroed), so sp->mutex.lock is NULL.  gdb on the master after SIGHUP:
#   #0 ngx_shmtx_force_unlock () #1 ?? (ngx_process_get_status)
#   #2 <signal handler called> #3 sigsuspend #4 ngx_master_process_cycle
# The new workers then run orphaned (ppid 1), nobody respawns a dead worker,
# and a later reload or stop has no master to do it.


def test_reload_keeps_the_session(fleet):
    ng = fleet.node("node1")
    v0 = fleet.apply(policy_text("before the reload", "S1"))
    fleet.wait_all_applied(v0)
    mark = ng.log_mark()
    n_before = len(re.findall(r"node node1 connected", fleet.ctld.log_text()))
    old_workers = ng.worker_pids()
    ng.reload()
    try:
        # the old workers leave, worker 0 of the new cycle opens a session
        h.wait_until(lambda: not any(h._alive(p) for p in old_workers), 15,
                     what="node1's old workers %r to exit" % old_workers)
        h.wait_until(lambda: len(re.findall(
            r"node node1 connected", fleet.ctld.log_text())) > n_before,
            10, what="node1 to connect again")
        fleet.wait_log("node1", r"relay control: session with \S+ started",
                       mark)
        _, by = fleet.wait_all_applied(v0, timeout=10)
        assert by["node1"]["connected"]

        # still routing by the fleet policy, and a new version reaches it
        mk = h.unique("reload")
        fleet.send("node1", ["%s@example.org" % mk], marker=mk)
        fleet.wait_at("S1", mk, "node1")
        v = fleet.apply(policy_text("after reload", "S2"))
        fleet.wait_all_applied(v)
        fleet.settle("S2")
        mk = h.unique("reload2")
        fleet.send("node1", ["%s@example.org" % mk], marker=mk)
        fleet.wait_at("S2", mk, "node1")

        # the node itself is whole: its master alive, two workers
        rc = ng.proc.poll()
        assert rc is None, (
            "BUG: node1's nginx master died after `nginx -s reload` (exit "
            "%s, -11 = SIGSEGV in ngx_shmtx_force_unlock() reaping the old "
            "workers: the relay_control zone is not a slab pool); its new "
            "workers run orphaned.  Master exit at `nginx -s quit` of node2 "
            "earlier: %r" % (rc, fleet.quit_rc.get("node2")))
        assert len(ng.worker_pids()) == 2, ng.worker_pids()
        assert not alerts(ng), alerts(ng)
    finally:
        if ng.proc is None or ng.proc.poll() is not None:
            stop_node(ng)                       # its orphans
            ng.start()                          # whole again for the rest
            fleet.wait_all_applied(fleet.current(), timeout=15)


# ==========================================================================
# last: no [alert] anywhere


def test_no_alert_in_any_error_log(fleet):
    for nid, ng in fleet.nodes.items():
        assert not alerts(ng), "%s:\n%s" % (nid, "\n".join(alerts(ng)[:20]))
        bad = [l for l in ng.error_log().splitlines()
               if re.search(r"exited on signal", l)]
        assert not bad, "%s: %s" % (nid, bad)
