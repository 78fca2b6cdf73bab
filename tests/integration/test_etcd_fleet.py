"""
The control plane without a single point of failure: a 3-member etcd
cluster (Debian's etcd-server, etcdharness.py), two controld replicas A
and B on it (--store etcd://...), and three REAL nginx relay nodes, each
with both replicas in its relay_control line (node2 lists B first), with
labels, driven with relayctl through either replica.

  node1  A,B  region=eu,rack=r1
  node2  B,A  region=eu,rack=r2
  node3  A,B  region=us,rack=r1

Sinks (deliveryharness.Sink) on 127.0.0.30-33 receive example.org mail by
the fleet's routes (S0 is nginx.conf's); the egress pools of the racks use
127.0.0.41 (r1) and 127.0.0.42 (r2) as source addresses, which the sinks
see as their peers.  hold.example goes to a port where nothing listens,
with a 10 minute retry: its mail stays queued for the queue commands.

One fleet per module; the tests run in file order and share it (versions
grow), each asserting on what it made itself: relayctl exit codes and
output, what the sinks received, queue files, the nginx error.logs and
controld's logs; every wait is bounded.  The replica and etcd members the
tests kill are started again before the next test.  Ports: 26000-26999.

  RELAY_MODULE=... CONTROLD=... RELAYCTL=... /usr/bin/python3 -m pytest \\
      -q -p no:cacheprovider tests/integration/test_etcd_fleet.py
"""

import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

import controlharness as ch
import deliveryharness as dh
import etcdharness as eh
import fleetharness as fh
import relayharness as h

RELAYCTL = ch.RELAYCTL

NODES = ("node1", "node2", "node3")
LABELS = {"node1": "region=eu,rack=r1", "node2": "region=eu,rack=r2",
          "node3": "region=us,rack=r1"}
ORDER = {"node1": "AB", "node2": "BA", "node3": "AB"}
SINK_IPS = {"S0": "127.0.0.30", "S1": "127.0.0.31", "S2": "127.0.0.32",
            "S3": "127.0.0.33"}
RACK_IP = {"r1": "127.0.0.41", "r2": "127.0.0.42"}
NACK_ADDR = "192.0.2.7"         # TEST-NET-1: no node can bind it


STREAM_EXTRA = """\
    relay_control @TARGETS@ node=@NODE@ labels=@LABELS@;
""" + fh.NODE_CONF + """\
    relay_queue_scan_interval 1m;
    relay_connection_reuse off;
    relay_route example.org [127.0.0.30]:@SINKPORT@;
"""


# --------------------------------------------------------------------------
# relayctl


def relayctl(fleet, *args, via="A", timeout=8, stdin=None):
    return fh.relayctl("127.0.0.1:%d" % fleet.ctld[via].port, fleet.certs,
                       *args, stdin=stdin, timeout=timeout)


def policy_text(tag, example_org="S1", extra=""):
    return ("comment \"%s\";\n"
            "route example.org [%s]:%d;\n"
            "route hold.example [127.0.0.1]:%d;\n"
            "retry * min=1s max=2s lifetime=1h;\n"
            "retry hold.example min=10m max=1h lifetime=1h;\n%s"
            % (tag, SINK_IPS[example_org], Fleet.sink_port, Fleet.dead_port,
               extra))


class Fleet(fh.FleetNodes):
    sink_port = None
    dead_port = None

    def __init__(self, base):
        super().__init__()
        self.base = Path(base)
        self.tmp = self.base / "work"
        self.tmp.mkdir()
        self.etcd = None
        self.certs = None
        self.ctld = {}

    def apply(self, text, *extra, via="A", rc=0, timeout=10):
        r = relayctl(self, "apply", self.policy_file(text), *extra,
                     via=via, timeout=timeout)
        return self.applied(r, rc), r

    def nodes_json(self, via="A"):
        r = relayctl(self, "nodes", "--json", via=via)
        assert r.rc == 0, r
        j = r.json()
        return j, {n["node_id"]: n for n in j["nodes"]}

    def diagnostics(self):
        return "A:\n%s\nB:\n%s" % (self.ctld_tail("A"), self.ctld_tail("B"))

    def wait_all_applied(self, version, via="A", timeout=20):
        return self.wait_nodes(
            lambda j, by: set(by) >= set(NODES)
            and all(by[n]["connected"] and by[n]["applied_version"]
                    == version for n in NODES),
            timeout, "every node connected and at version %d" % version,
            via=via)

    def ctld_tail(self, name, n=25):
        return "\n".join(self.ctld[name].log_text().splitlines()[-n:])

    def start_ctld(self, name):
        c = self.ctld[name]
        c.start()
        h.wait_until(lambda: "store: etcd watch from" in c.log_text(), 20,
                     what="controld %s to read etcd" % name)
        return c


stop_node = h.stop_node


@pytest.fixture(scope="module")
def fleet():
    h.require_module()
    for b in (ch.CONTROLD, RELAYCTL):
        if not os.access(b, os.X_OK):
            raise AssertionError("binary not found: %s" % b)
    base = Path(tempfile.mkdtemp(prefix="relay-etcd-"))
    ch.load_stubs(base / "gen")
    fl = Fleet(base)
    try:
        fl.etcd = eh.Cluster(base / "etcd", 3).start()
        fl.certs = ch.make_certs(base / "ctlcerts", *NODES, "node9")
        tls = h.make_certs(base / "tlscerts")

        Fleet.sink_port = eh.alloc_port(tuple(SINK_IPS.values()))
        Fleet.dead_port = eh.alloc_port()
        for name, ip in SINK_IPS.items():
            fl.sinks[name] = dh.Sink(ip, Fleet.sink_port, name=name).start()

        for name in ("A", "B"):
            fl.ctld[name] = ch.Controld(
                base / ("controld-" + name), fl.certs,
                port=eh.alloc_port(),
                extra=["--store", fl.etcd.store(), "--replica", name,
                       "--command-timeout", "5s", "--store-lease", "3s"])
            fl.start_ctld(name)

        dns_port = eh.alloc_port()
        for nid in NODES:
            fl.start_node(nid, base, tls, STREAM_EXTRA, eh.alloc_port,
                          TARGETS=",".join("127.0.0.1:%d" % fl.ctld[r].port
                                           for r in ORDER[nid]),
                          LABELS=LABELS[nid], CERTS=fl.certs,
                          DNSPORT=dns_port, SINKPORT=Fleet.sink_port)

        fl.wait_nodes(lambda j, by: set(by) >= set(NODES)
                      and all(by[n]["connected"] for n in NODES), 30,
                      "three nodes connected")
        yield fl
    finally:
        fh.teardown(fl, list(fl.ctld.values()) + [fl.etcd], base)


alerts = fh.alerts


# ==========================================================================
# one fleet, any replica


def test_every_node_listed_through_either_replica(fleet):
    for via in ("A", "B"):
        j, by = fleet.wait_nodes(
            lambda j, by: all(by.get(n, {}).get("replica") == ORDER[n][0]
                              for n in NODES), 20,
            "nodes on their first replica", via=via)
        for nid in NODES:
            n = by[nid]
            assert n["connected"], n
            labels = ",".join("%s=%s" % (l["name"], l["value"])
                              for l in n["labels"])
            assert labels == LABELS[nid], n
            assert n["software"].startswith("nginx-relay/"), n
    t = relayctl(fleet, "nodes", via="B")
    assert t.rc == 0, t
    assert re.match(r"NODE\s+CONNECTED\s+APPLIED.*PEER\s+CONTROLD\s+LABELS",
                    t.out), t.out
    row = [l for l in t.out.splitlines() if l.startswith("node2 ")][0]
    assert re.search(r"\sB\s+region=eu,rack=r2$", row), row


def test_apply_through_a_acked_by_every_node_history_through_b(fleet):
    fleet.deliver_each("S0", "pre", NODES)

    v1, r = fleet.apply(policy_text("through A", "S1"), "-m", "to S1",
                        via="A")
    for nid in NODES:
        assert "%s: ACK version %d" % (nid, v1) in r.out, r
    assert "3 of 3 nodes ACKed version %d" % v1 in r.out, r
    assert "node node2 ACK version %d" % v1 in fleet.ctld["B"].log_text()
    assert "node node1 ACK version %d" % v1 in fleet.ctld["A"].log_text()

    fleet.deliver_each("S1", "post", NODES)

    # a second version through B, then history and rollback through B
    v2, r = fleet.apply(policy_text("through B", "S2"), via="B")
    assert v2 == v1 + 1 and "3 of 3 nodes ACKed" in r.out, r
    hist = relayctl(fleet, "history", "--json", via="B")
    assert hist.rc == 0, hist
    ent = {e["version"]: e for e in hist.json()["entries"]}
    assert hist.json()["current"] == v2
    assert ent[v1]["comment"] == "to S1" and ent[v1]["author"] == "admin"

    rb = relayctl(fleet, "rollback", v1, via="B")
    assert rb.rc == 0, rb
    assert "applied version %d" % (v2 + 1) in rb.out, rb
    assert "3 of 3 nodes ACKed version %d" % (v2 + 1) in rb.out, rb
    ha = relayctl(fleet, "history", "-n", "1", "--json", via="A").json()
    assert ha["current"] == v2 + 1
    assert ha["entries"][0]["rolled_back_from"] == v1
    fleet.deliver_each("S1", "rb", NODES)


def test_queue_commands_reach_a_node_of_the_other_replica(fleet):
    mk = h.unique("qx")
    qid = fleet.send("node2", ["%s@hold.example" % mk], marker=mk)
    h.wait_until(lambda: dh.next_attempt(fleet.nodes["node2"], qid), 15,
                 what="node2's first attempt of %s" % qid)

    # node2's session is on B: ask A
    r = relayctl(fleet, "queue", "list", "--node", "node2", "--json",
                 via="A")
    assert r.rc == 0, r
    res, = r.json()["results"]
    assert res["node_id"] == "node2" and res["ok"], res
    assert [e["id"] for e in res["entries"]] == [qid], res

    # every node, through A: each answers, wherever its session is
    r = relayctl(fleet, "queue", "list", "--json", via="A")
    assert r.rc == 0, r
    assert {x["node_id"] for x in r.json()["results"]} == set(NODES), r

    d = relayctl(fleet, "queue", "delete", "--node", "node2", qid, via="A")
    assert d.rc == 0, d
    assert "node2: deleted 1 message" in d.out, d
    assert dh.queue_gone(fleet.nodes["node2"], qid)
    assert "command" in fleet.ctld["B"].log_text()

    # the keys of the command are gone once it is over
    h.wait_until(lambda: not [k for k in fleet.etcd.keys()
                              if "/commands/" in k or "/results/" in k],
                 10, what="the command's keys to go")


def test_one_session_per_node_across_replicas(fleet):
    """A node's newer process (higher incarnation) takes its session from
    another replica once; the older one, back on the first replica, is
    refused there: the replicas know each other's sessions."""
    import grpc
    made = []
    try:
        old = ch.FakeNode(fleet.ctld["A"], "node9", incarnation=1000)
        made.append(old)
        fleet.wait_nodes(lambda j, by: by.get("node9", {}).get("replica")
                         == "A" and by["node9"]["connected"], 10,
                         "node9 on A", via="B")

        new = ch.FakeNode(fleet.ctld["B"], "node9", incarnation=2000)
        made.append(new)
        err = old.wait_end()
        assert err.code() == grpc.StatusCode.ABORTED, err
        assert "replaced by a newer session of the same node on controld " \
            "B" in err.details(), err.details()
        fleet.wait_nodes(lambda j, by: by["node9"]["replica"] == "B"
                         and by["node9"]["connected"], 10, "node9 on B",
                         via="A")

        again = ch.FakeNode(fleet.ctld["A"], "node9", incarnation=1000)
        made.append(again)
        err = again.wait_end()
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
        assert "a newer session of node node9 is active" in err.details()
        time.sleep(0.5)
        assert not new.done
        _, by = fleet.nodes_json(via="A")
        assert by["node9"]["replica"] == "B" and by["node9"]["connected"]
    finally:
        for n in made:
            n.close()
    fleet.wait_nodes(lambda j, by: not by["node9"]["connected"], 10,
                     "node9 gone", via="A")


def test_concurrent_applies_through_both_replicas(fleet):
    made = {}
    conflicts = []
    for rnd in range(4):
        out = {}

        def run(via):
            text = policy_text("race %d %s" % (rnd, via), "S1",
                               "route r%d-%s.example [127.0.0.1]:25;\n"
                               % (rnd, via.lower()))
            f = fleet.tmp / ("race-%d-%s.policy" % (rnd, via))
            f.write_text(text)
            out[via] = (relayctl(fleet, "apply", f, "--no-wait", via=via),
                        "r%d-%s.example" % (rnd, via.lower()))
        ts = [threading.Thread(target=run, args=(v,)) for v in ("A", "B")]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        for via, (r, route) in out.items():
            assert r.rc in (0, 9), r
            if r.rc == 0:
                v = int(re.search(r"applied version (\d+)", r.out).group(1))
                assert v not in made, (v, made, r)
                made[v] = route
            else:
                assert re.search(r"ABORTED: conflict: version \d+ was "
                                 r"applied meanwhile by admin through "
                                 r"another controld", r.err), r
                conflicts.append(r.err)
    assert len(made) >= 4, (made, conflicts)

    # nothing lost: every version made is in the history, with its content
    for via in ("A", "B"):
        hist = relayctl(fleet, "history", "--json", via=via)
        versions = {e["version"] for e in hist.json()["entries"]}
        assert set(made) <= versions, (made, versions)
    for v, route in made.items():
        g = relayctl(fleet, "get", v, via="B")
        assert g.rc == 0 and "route %s " % route in g.out, g
    fleet.wait_all_applied(max(made))


def test_labels_and_scoped_statements(fleet):
    extra = ("egress_pool rackpool ehlo=r1.example.net %s nodes=rack=r1;\n"
             "egress_pool rackpool ehlo=r2.example.net %s nodes=rack=r2;\n"
             "egress_rule sender_domain senders.example rackpool;\n"
             "route example.org [%s]:%d nodes=region=us;\n"
             % (RACK_IP["r1"], RACK_IP["r2"], SINK_IPS["S2"],
                Fleet.sink_port))
    text = policy_text("scoped", "S1", "").replace(
        "route example.org", "route example.org", 1)
    text = text.replace("route example.org [%s]:%d;" % (SINK_IPS["S1"],
                                                        Fleet.sink_port),
                        "route example.org [%s]:%d nodes=region=eu;"
                        % (SINK_IPS["S1"], Fleet.sink_port))
    v, r = fleet.apply(text + extra, via="B")
    assert "3 of 3 nodes ACKed version %d" % v in r.out, r

    g = relayctl(fleet, "get", via="A")
    assert "route example.org [127.0.0.31]:%d nodes=region=eu;" \
        % Fleet.sink_port in g.out, g.out
    assert "egress_pool rackpool ehlo=r2.example.net 127.0.0.42 " \
        "nodes=rack=r2;" in g.out, g.out

    want = {"node1": ("S1", RACK_IP["r1"]), "node2": ("S1", RACK_IP["r2"]),
            "node3": ("S2", RACK_IP["r1"])}
    for nid, (sink, src) in want.items():
        mk = h.unique("sc" + nid)
        fleet.send(nid, ["%s@example.org" % mk], marker=mk)
        t = fleet.wait_at(sink, mk, nid)[0]
        assert t.peer[0] == src, (nid, t.peer, src)
        assert t.helo == ("r1.example.net" if src == RACK_IP["r1"]
                          else "r2.example.net"), t

    # what a node does with a statement meant for others: nothing
    assert "relay policy version %d in use" % v in fleet.error_log("node3")


def test_canary_promote_and_rollback(fleet):
    base, _ = fleet.apply(policy_text("before the canary", "S1"))
    fleet.wait_all_applied(base)

    v, r = fleet.apply(policy_text("canary to S2", "S2"), "--canary",
                       "rack=r2", via="A")
    assert "applied version %d as a canary of rack=r2" % v in r.out, r
    assert "node2: ACK version %d" % v in r.out, r
    assert "node1:" not in r.out and "node3:" not in r.out, r
    assert "1 of 1 node ACKed version %d" % v in r.out, r

    j, by = fleet.nodes_json(via="B")
    assert j["canary"] == v and j["canary_selector"] == "rack=r2"
    assert by["node2"]["applied_version"] == v
    assert by["node1"]["applied_version"] == base
    assert by["node3"]["applied_version"] == base
    t = relayctl(fleet, "nodes", via="B")
    assert re.search(r"^node2\s+yes\s+%d \(canary\)" % v, t.out, re.M), t
    assert "canary: version %d on rack=r2" % v in t.out, t

    # another apply meanwhile is refused: one canary at a time
    f = fleet.tmp / "busy.policy"
    f.write_text(policy_text("while the canary", "S1"))
    busy = relayctl(fleet, "apply", f, via="B")
    assert busy.rc == 3, busy
    assert "version %d is a canary of \"rack=r2\": promote it or roll it " \
        "back first" % v in busy.err, busy
    mk1, mk2 = h.unique("cn1"), h.unique("cn2")
    fleet.send("node1", ["%s@example.org" % mk1], marker=mk1)
    fleet.send("node2", ["%s@example.org" % mk2], marker=mk2)
    fleet.wait_at("S1", mk1, "node1")
    fleet.wait_at("S2", mk2, "node2")

    p = relayctl(fleet, "promote", via="B")
    assert p.rc == 0, p
    assert "promoted version %d (canary of rack=r2) to the fleet" % v \
        in p.out, p
    assert "3 of 3 nodes ACKed version %d" % v in p.out, p
    mk = h.unique("pr")
    fleet.send("node1", ["%s@example.org" % mk], marker=mk)
    fleet.wait_at("S2", mk, "node1")

    # a canary taken back: its nodes run the current version again
    c2, r = fleet.apply(policy_text("canary of rack r1", "S1"), "--canary",
                        "rack=r1", via="B")
    assert "node1: ACK version %d" % c2 in r.out
    assert "node3: ACK version %d" % c2 in r.out, r
    mk = h.unique("c2")
    fleet.send("node3", ["%s@example.org" % mk], marker=mk)
    fleet.wait_at("S1", mk, "node3")
    rb = relayctl(fleet, "rollback", via="A")
    assert rb.rc == 0, rb
    assert "took back the canary of rack=r1: its nodes run version %d" % v \
        in rb.out, rb
    fleet.wait_all_applied(v)
    mk = h.unique("back")
    fleet.send("node3", ["%s@example.org" % mk], marker=mk)
    fleet.wait_at("S2", mk, "node3")
    hist = relayctl(fleet, "history", "-n", "3", via="B")
    assert re.search(r"^%d taken back\s" % c2, hist.out, re.M), hist
    assert re.search(r"^%d \*\s" % v, hist.out, re.M), hist


def _worker0(fleet, nid):
    """The pid of the worker that holds the node's control session."""
    log = fleet.error_log(nid)
    pids = re.findall(r"\] (\d+)#\d+: relay control: node \"%s\" subscribes"
                      % nid, log)
    return int(pids[-1])


def test_apply_exit_codes_ack_nack_timeout(fleet):
    good, r = fleet.apply(policy_text("exit codes: ack", "S1"))
    assert r.rc == 0

    # node3 cannot bind the address of the pool meant for it only
    bad = policy_text("exit codes: nack", "S1",
                      "egress_pool only3 ehlo=x.example.net %s "
                      "nodes=node=node3;\n" % NACK_ADDR)
    v, r = fleet.apply(bad, rc=10)
    assert re.search(r"^node3: NACK version %d: egress_pools\[0\]"
                     r"\.addresses\[0\]: %s is not usable on node node3"
                     % (v, re.escape(NACK_ADDR)), r.out, re.M), r
    assert "node1: ACK version %d" % v in r.out
    assert "2 of 3 nodes ACKed" in r.out, r

    # a node that does not answer: its control thread stopped
    good2, _ = fleet.apply(policy_text("exit codes: before timeout", "S1"))
    fleet.wait_all_applied(good2)
    pid = _worker0(fleet, "node1")
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        v, r = fleet.apply(policy_text("exit codes: timeout", "S2"), rc=11,
                           timeout=3)
        assert 2.5 < time.monotonic() - t0 < 8, r
        assert "node1: no answer within 3s" in r.out, r
        assert "node2: ACK version %d" % v in r.out, r
        j = json.loads(relayctl(fleet, "history", "--json").out)
        assert j["current"] == v            # stored all the same
    finally:
        os.kill(pid, signal.SIGCONT)
    fleet.wait_all_applied(v)

    # the same through --json: outcomes by name
    f = fleet.tmp / "json.policy"
    f.write_text(policy_text("exit codes: json", "S1"))
    r = relayctl(fleet, "apply", f, "--json")
    assert r.rc == 0, r
    out = json.loads(r.out)
    assert out["waited"] is True and out["version"] > v
    assert sorted((o["node_id"], o["outcome"]) for o in out["outcomes"]) \
        == [(n, "ACK") for n in NODES]


def test_replica_killed_nodes_move_to_the_other(fleet):
    cur, _ = fleet.apply(policy_text("before the kill", "S1"))
    fleet.wait_all_applied(cur)
    _, by = fleet.nodes_json(via="B")
    assert by["node1"]["replica"] == "A" and by["node3"]["replica"] == "A"

    fleet.ctld["A"].stop(signal.SIGKILL)
    t0 = time.monotonic()
    try:
        # node1 and node3 are back, on B; B lists them so
        fleet.wait_nodes(lambda j, by: all(by[n]["connected"]
                                           and by[n]["replica"] == "B"
                                           for n in NODES), 15,
                         "every node on B", via="B")
        moved = time.monotonic() - t0
        assert moved < 10, moved
        # A's lease went: its record is gone within the lease time (3 s)
        h.wait_until(lambda: not [k for k in fleet.etcd.keys()
                                  if k.endswith("/replicas/A")], 8,
                     what="replica A's lease to expire")

        mk = h.unique("qk")
        qid = fleet.send("node1", ["%s@hold.example" % mk], marker=mk)
        h.wait_until(lambda: dh.next_attempt(fleet.nodes["node1"], qid), 15,
                     what="node1's first attempt")
        r = relayctl(fleet, "queue", "delete", "--node", "node1", qid,
                     via="B")
        assert r.rc == 0 and "node1: deleted 1 message" in r.out, r

        v, r = fleet.apply(policy_text("after the kill", "S2"), via="B")
        assert "3 of 3 nodes ACKed version %d" % v in r.out, r
    finally:
        fleet.start_ctld("A")

    # A again: it knows every node and the versions made without it
    j, by = fleet.wait_nodes(lambda j, by: all(by[n]["connected"]
                                               for n in NODES), 15,
                             "A to list every node", via="A")
    assert j["current"] == v


def test_etcd_member_killed_applies_go_on(fleet):
    m = fleet.etcd.members[0]
    m.kill()
    try:
        v, r = fleet.apply(policy_text("one member down", "S1"), via="A")
        assert "3 of 3 nodes ACKed version %d" % v in r.out, r
        hist = relayctl(fleet, "history", "-n", "1", "--json", via="B")
        assert hist.rc == 0 and hist.json()["current"] == v, hist
    finally:
        m.start()
        fleet.etcd.wait_healthy()


def test_etcd_down_admin_fails_fast_nodes_keep_delivering(fleet):
    cur, _ = fleet.apply(policy_text("before etcd goes", "S2"))
    fleet.wait_all_applied(cur)
    marks = {n: fleet.nodes[n].log_mark() for n in NODES}

    for m in fleet.etcd.members:
        m.kill()
    try:
        # admin calls fail at once, saying which store
        def refused():
            r = relayctl(fleet, "history", via="A")
            return r if r.rc == 8 else None
        r = h.wait_until(refused, 10, what="A to say its store is down")
        assert "the store is unavailable: etcd at %s" \
            % fleet.etcd.endpoints() in r.err, r
        for via in ("A", "B"):
            t0 = time.monotonic()
            f = fleet.tmp / ("down-%s.policy" % via)
            f.write_text(policy_text("while etcd is down", "S1"))
            a = relayctl(fleet, "apply", f, via=via)
            assert a.rc == 8, a
            assert time.monotonic() - t0 < 3, a
            n = relayctl(fleet, "nodes", via=via)
            assert n.rc == 8 and "UNAVAILABLE" in n.err, n

        # the nodes keep their sessions and deliver by the last version
        fleet.deliver_each("S2", "down", NODES)
        for nid in NODES:
            assert "session with" not in fleet.error_log(nid, marks[nid]), \
                fleet.error_log(nid, marks[nid])
    finally:
        for m in fleet.etcd.members:
            m.start()
        fleet.etcd.wait_healthy()

    # back: the replicas catch up and the next apply works
    for via in ("A", "B"):
        h.wait_until(lambda: relayctl(fleet, "history", via=via).rc == 0,
                     20, what="%s to read etcd again" % via)
    v, r = fleet.apply(policy_text("etcd is back", "S1"), via="B")
    assert "3 of 3 nodes ACKed version %d" % v in r.out, r

    # the sessions are in etcd again: either replica lists every node
    for via in ("A", "B"):
        fleet.wait_nodes(lambda j, by: all(by[n]["connected"]
                                           and by[n]["applied_version"] == v
                                           for n in NODES), 10,
                         "every node listed connected", via=via)


def _master(ng):
    f = ng.prefix / "logs" / "nginx.pid"
    try:
        return int(f.read_text().strip())
    except (OSError, ValueError):
        return None


def test_usr2_upgrade_hands_the_session_over_once(fleet):
    """nginx's binary upgrade: USR2 starts a new master (with the same
    binary), whose worker 0 opens a session of node3 while the old worker
    0 still has one; WINCH and QUIT then retire the old generation.  nginx
    takes USR2 only from a daemon (a master whose parent changed), so
    node3 runs as one here."""
    ng = fleet.nodes["node3"]
    stop_node(ng)
    r = subprocess.run(ng._cmd(), capture_output=True, timeout=30)
    assert r.returncode == 0, r
    old_master = h.wait_until(lambda: _master(ng), 10, what="node3's master")
    h.wait_until(lambda: len(h.children_of(old_master)) == 2, 10,
                 what="node3's workers")
    old_workers = h.children_of(old_master)

    cur, _ = fleet.apply(policy_text("before the upgrade", "S1"))
    fleet.wait_all_applied(cur)
    marks = {n: len(fleet.ctld[n].log_text()) for n in ("A", "B")}
    lmark = ng.log_mark()

    os.kill(old_master, signal.SIGUSR2)
    new_master = h.wait_until(
        lambda: _master(ng) if _master(ng) not in (None, old_master)
        else None, 15, what="the new master")
    h.wait_until(lambda: len(h.children_of(new_master)) == 2, 15,
                 what="the new workers")

    # mail while both generations run, then the old one leaves
    sent = []
    for i in range(6):
        mk = h.unique("up%d" % i)
        fleet.send("node3", ["%s@example.org" % mk], marker=mk)
        sent.append(mk)
        time.sleep(0.4)
    os.kill(old_master, signal.SIGWINCH)
    h.wait_until(lambda: not any(h._alive(p) for p in old_workers), 20,
                 what="the old workers to leave")
    for i in range(2):
        mk = h.unique("after%d" % i)
        fleet.send("node3", ["%s@example.org" % mk], marker=mk)
        sent.append(mk)

    # every message delivered at once (the queue scan is a minute away)
    for mk in sent:
        fleet.wait_at("S1", mk, "node3", timeout=10)

    logs = "".join(fleet.ctld[n].log_text()[marks[n]:] for n in ("A", "B"))
    replaced = re.findall(r"node node3: the session from \S+ replaces", logs)
    assert len(replaced) == 1, logs
    connected = re.findall(r"node node3 connected", logs)
    assert len(connected) == 1, logs
    # the new worker 0 took the session once and kept it; the old one lost
    # it once, then was refused (a newer session is active), never back
    log = fleet.error_log("node3", lmark)
    new0 = int(re.findall(r"\] (\d+)#\d+: relay control: node \"node3\" "
                          r"subscribes", log)[-1])
    assert len(re.findall(r"\] %d#\d+: relay control: session with \S+ "
                          r"started" % new0, log)) == 1, log
    assert not re.search(r"\] %d#\d+: relay control: session with \S+ "
                         r"ended" % new0, log), log
    old_ended = re.findall(r"\] \d+#\d+: relay control: session with \S+ "
                           r"ended: status (\d+)", log)
    assert old_ended[:1] == ["10"] and set(old_ended[1:]) <= {"9"}, log

    # the old master goes; the new one serves and takes new versions
    os.kill(old_master, signal.SIGQUIT)
    h.wait_until(lambda: not h._alive(old_master), 15,
                 what="the old master to leave")
    v, r = fleet.apply(policy_text("after the upgrade", "S2"))
    assert "node3: ACK version %d" % v in r.out, r
    mk = h.unique("new")
    fleet.send("node3", ["%s@example.org" % mk], marker=mk)
    fleet.wait_at("S2", mk, "node3")
    assert h._alive(new_master)


def test_no_alert_in_any_log(fleet):
    for nid, ng in fleet.nodes.items():
        assert not alerts(ng), "%s:\n%s" % (nid, "\n".join(alerts(ng)[:20]))
        bad = [l for l in ng.error_log().splitlines()
               if re.search(r"exited on signal", l)]
        assert not bad, "%s: %s" % (nid, bad)
