"""
controld: the control daemon against Python fake nodes and operators.

Each test starts its own controld ($CONTROLD) on a fresh data dir with the
dev certificates of deploy/dev-certs.sh, talks mTLS with grpcio stubs
generated from proto/ at test time, and stops it (SIGTERM, exit code 0).
"""

import signal
import subprocess
import time

import grpc
import pytest

import controlharness as h


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    h.load_stubs(tmp_path_factory.mktemp("gen"))
    return h.make_certs(tmp_path_factory.mktemp("certs"),
                       "node1", "node2", "node3")


@pytest.fixture
def ctld(tmp_path, certs):
    started = []

    def start(**kw):
        c = h.Controld(tmp_path / f"c{len(started)}", certs, **kw).start()
        started.append(c)
        return c

    yield start

    for c in started:
        rc = c.stop()
        assert rc in (0, None), c.log_text()
        assert "stopped" in c.log_text() or rc is None


@pytest.fixture
def nodes():
    made = []

    def node(*a, **kw):
        n = h.FakeNode(*a, **kw)
        made.append(n)
        return n

    yield node
    for n in made:
        n.close()


def listnodes(admin):
    r = admin.ListNodes(h.pb.ListNodesRequest())
    return r, {n.node_id: n for n in r.nodes}


def apply(admin, p, dry_run=False):
    return admin.Apply(h.pb.ApplyRequest(policy=p, dry_run=dry_run))


def rpc_error(fn, *a):
    with pytest.raises(grpc.RpcError) as e:
        fn(*a)
    return e.value


def test_hello_gets_current_policy(ctld, nodes):
    c = ctld()
    _, adm = c.admin()
    assert apply(adm, h.policy("v1")).version == 1

    n1 = nodes(c, "node1", applied=0)
    n1.wait(lambda n: n.versions() == [1], what="version 1")
    assert n1.policies[0].comment == "v1"
    assert n1.policies[0].author == "admin"
    assert n1.policies[0].routes[0].next_hops == ["[10.0.0.1]:25"]

    # already up to date: nothing is sent until the next version
    n2 = nodes(c, "node2", applied=1)
    h.wait_for(lambda: listnodes(adm)[1].get("node2"), what="node2 listed")
    time.sleep(0.3)
    assert n2.policies == []

    apply(adm, h.policy("v2"))
    n2.wait(lambda n: n.versions() == [2], what="version 2")
    n1.wait(lambda n: n.versions() == [1, 2], what="version 2")

    assert "node node1 connected" in c.log_text()
    assert "applied_version=1 current=1" in c.log_text()


def test_apply_fans_out_to_three_nodes_that_ack(ctld, nodes):
    c = ctld()
    _, adm = c.admin()
    ns = [nodes(c, f"node{i}") for i in (1, 2, 3)]
    h.wait_for(lambda: len(listnodes(adm)[0].nodes) == 3, what="3 nodes")

    for v in (1, 2, 3):
        r = apply(adm, h.policy(f"round {v}",
                                routes=[(f"d{v}.example", ["mx.example:25"])]))
        assert r.version == v and r.changed
        for n in ns:
            n.wait(lambda n: v in n.versions(), what=f"version {v}")

    def all_acked():
        r, by = listnodes(adm)
        return r.current == 3 and all(
            by[f"node{i}"].applied_version == 3 and by[f"node{i}"].connected
            for i in (1, 2, 3))

    h.wait_for(all_acked, what="3 ACKs of version 3")
    log = c.log_text()
    for i in (1, 2, 3):
        assert f"node node{i} ACK version 3" in log
    assert "version 3 (\"round 3\"), sent to 3 nodes" in log


def test_nack_is_recorded_and_listed(ctld, nodes):
    c = ctld()
    _, adm = c.admin()
    nodes(c, "node1", ack="egress address 192.0.2.9 is not local")
    nodes(c, "node2")
    h.wait_for(lambda: len(listnodes(adm)[0].nodes) == 2, what="2 nodes")

    apply(adm, h.policy("nacked"))

    def nacked():
        by = listnodes(adm)[1]
        return by["node1"].nacked_version == 1 and \
            by["node2"].applied_version == 1

    h.wait_for(nacked, what="NACK recorded")
    by = listnodes(adm)[1]
    assert by["node1"].nack_reason == "egress address 192.0.2.9 is not local"
    assert by["node1"].applied_version == 0
    assert by["node2"].nacked_version == 0
    assert "node node1 NACK version 1: egress address" in c.log_text()


def test_status_is_listed(ctld, nodes):
    c = ctld()
    _, adm = c.admin()
    n = nodes(c, "node1")
    n.send(status=h.pb.NodeStatus(uptime_s=42, queue_messages=7,
                                  delivered_total=1000))
    h.wait_for(lambda: listnodes(adm)[1].get("node1") is not None
               and listnodes(adm)[1]["node1"].status.queue_messages == 7,
               what="status")
    st = listnodes(adm)[1]["node1"].status
    assert st.uptime_s == 42 and st.delivered_total == 1000


def test_invalid_policy_refused_with_field_path(ctld, nodes):
    c = ctld()
    _, adm = c.admin()
    n = nodes(c, "node1")
    h.wait_for(lambda: listnodes(adm)[0].nodes, what="node1")

    bad = h.policy("bad", routes=[("a.example", ["[10.0.0.1]:25"]),
                                  ("b.example", ["mx.b.example"]),
                                  ("c.example", ["[10.0.0.3"])])
    e = rpc_error(apply, adm, bad)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.details().startswith("routes[2].next_hops[0]: "), e.details()

    e = rpc_error(apply, adm, bad, True)     # a dry run validates too
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT

    assert len(adm.History(h.pb.HistoryRequest()).entries) == 0
    time.sleep(0.2)
    assert n.policies == []
    assert "apply by operator:admin refused: routes[2].next_hops[0]" \
        in c.log_text()


def test_dry_run_diff_stores_nothing_and_same_policy_is_no_change(ctld):
    c = ctld()
    _, adm = c.admin()
    apply(adm, h.policy("base"))

    p = h.policy("base", routes=[("example.com", ["[10.0.0.1]:25"]),
                                 (".example.net", ["relay.example:2525"])])
    r = apply(adm, p, True)
    assert r.changed and r.version == 0
    assert "+route .example.net relay.example:2525;" in r.diff, r.diff
    assert r.diff.startswith("--- version 1\n+++ proposed\n")
    hist = adm.History(h.pb.HistoryRequest())
    assert hist.current == 1 and len(hist.entries) == 1

    r = apply(adm, h.policy("base"))
    assert not r.changed and r.version == 0 and r.diff == ""
    assert len(adm.History(h.pb.HistoryRequest()).entries) == 1

    e = rpc_error(adm.Apply, h.pb.ApplyRequest())
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_get_history_rollback(ctld, nodes):
    c = ctld()
    _, adm = c.admin()

    e = rpc_error(adm.Get, h.pb.GetRequest())
    assert e.code() == grpc.StatusCode.NOT_FOUND

    apply(adm, h.policy("first", routes=[("one.example", ["[10.0.0.1]"])]))
    apply(adm, h.policy("second", routes=[("two.example", ["[10.0.0.2]"])]))
    n = nodes(c, "node1")
    n.wait(lambda n: n.versions() == [2], what="version 2")

    assert adm.Get(h.pb.GetRequest()).version == 2
    assert adm.Get(h.pb.GetRequest(version=1)).comment == "first"
    e = rpc_error(adm.Get, h.pb.GetRequest(version=77))
    assert e.code() == grpc.StatusCode.NOT_FOUND

    r = adm.Rollback(h.pb.RollbackRequest(version=1, dry_run=True))
    assert r.changed and r.version == 0 and "+route one.example" in r.diff
    assert adm.History(h.pb.HistoryRequest()).current == 2

    r = adm.Rollback(h.pb.RollbackRequest(version=1))
    assert r.changed and r.version == 3
    n.wait(lambda n: n.versions() == [2, 3], what="version 3")
    assert n.policies[-1].routes[0].pattern == "one.example"

    got = adm.Get(h.pb.GetRequest(version=3))
    assert got.comment == "first" and got.author == "admin"

    hist = adm.History(h.pb.HistoryRequest())
    assert hist.current == 3
    assert [e.version for e in hist.entries] == [3, 2, 1]
    assert [e.rolled_back_from for e in hist.entries] == [1, 0, 0]
    assert hist.entries[0].author == "admin"
    assert [e.version for e in
            adm.History(h.pb.HistoryRequest(limit=2)).entries] == [3, 2]

    e = rpc_error(adm.Rollback, h.pb.RollbackRequest(version=99))
    assert e.code() == grpc.StatusCode.NOT_FOUND
    assert "rollback by operator:admin: version 3 copies version 1" \
        in c.log_text()


def test_restart_keeps_history_and_numbers(ctld, nodes):
    c = ctld()
    _, adm = c.admin()
    apply(adm, h.policy("a", routes=[("a.example", ["[10.0.0.1]"])]))
    apply(adm, h.policy("b", routes=[("b.example", ["[10.0.0.2]"])]))
    adm.Rollback(h.pb.RollbackRequest(version=1))
    before = adm.History(h.pb.HistoryRequest())

    c.restart()
    _, adm = c.admin()
    after = adm.History(h.pb.HistoryRequest())
    assert after == before
    assert after.current == 3 and after.entries[0].rolled_back_from == 1
    assert "3 versions, current 3" in c.log_text()

    n = nodes(c, "node1", applied=2)
    n.wait(lambda n: n.versions() == [3], what="version 3 after restart")

    r = apply(adm, h.policy("c", routes=[("c.example", ["[10.0.0.3]"])]))
    assert r.version == 4
    n.wait(lambda n: n.versions() == [3, 4], what="version 4")

    files = sorted(p.name for p in (c.dir / "data" / "versions").iterdir())
    assert files == [f"{v:020d}.{ext}" for v in (1, 2, 3, 4)
                     for ext in ("meta", "policy")]


def test_queue_command_reaches_the_right_node(tmp_path, certs, ctld, nodes):
    c = ctld(extra=["--command-timeout", "1s"])
    _, adm = c.admin()
    assert len(adm.Queue(h.pb.QueueRequest()).results) == 0   # no node yet

    def answer(node):
        def on_command(cmd):
            entries = [h.pb.QueueEntry(id=f"{node}-Q1", sender="a@b.example",
                                       pending=["x@y.example"],
                                       recipients=1)]
            return h.pb.CommandResult(id=cmd.id, ok=True,
                                      affected=len(cmd.queue_ids),
                                      entries=entries)
        return on_command

    n1 = nodes(c, "node1", on_command=answer("node1"))
    n2 = nodes(c, "node2", on_command=answer("node2"))
    n3 = nodes(c, "node3", on_command=lambda cmd: None)   # never answers
    h.wait_for(lambda: len(listnodes(adm)[0].nodes) == 3, what="3 nodes")

    r = adm.Queue(h.pb.QueueRequest(node_id="node2",
                                    action=h.pb.QUEUE_FLUSH,
                                    queue_ids=["A1", "B2"]))
    assert len(r.results) == 1
    res = r.results[0]
    assert res.node_id == "node2" and res.ok and res.affected == 2
    assert res.entries[0].id == "node2-Q1"
    assert len(n2.commands) == 1 and n2.commands[0].action == h.pb.QUEUE_FLUSH
    assert list(n2.commands[0].queue_ids) == ["A1", "B2"]
    assert n1.commands == [] and n3.commands == []

    t0 = time.monotonic()
    r = adm.Queue(h.pb.QueueRequest(action=h.pb.QUEUE_LIST))
    assert time.monotonic() - t0 < 5
    by = {x.node_id: x for x in r.results}
    assert sorted(by) == ["node1", "node2", "node3"]
    assert by["node1"].ok and by["node1"].entries[0].id == "node1-Q1"
    assert not by["node3"].ok and by["node3"].error == "timeout"
    ids = {n1.commands[0].id, n2.commands[1].id, n3.commands[0].id}
    assert len(ids) == 3, "command ids are unique"

    e = rpc_error(adm.Queue, h.pb.QueueRequest(node_id="nodeX"))
    assert e.code() == grpc.StatusCode.NOT_FOUND and "nodeX" in e.details()

    n1.close()
    h.wait_for(lambda: not listnodes(adm)[1]["node1"].connected,
               what="node1 disconnected")
    e = rpc_error(adm.Queue, h.pb.QueueRequest(node_id="node1"))
    assert e.code() == grpc.StatusCode.UNAVAILABLE
    assert "not connected" in e.details()


def test_disconnect_noticed_and_newer_session_replaces(ctld, nodes):
    c = ctld()
    _, adm = c.admin()
    old = nodes(c, "node1")
    h.wait_for(lambda: listnodes(adm)[1].get("node1"), what="node1")

    new = nodes(c, "node1")
    err = old.wait_end()
    assert err.code() == grpc.StatusCode.ABORTED, err
    assert "replaced" in err.details()
    time.sleep(0.2)
    assert listnodes(adm)[1]["node1"].connected
    assert "node node1: the session from" in c.log_text()

    new.close()
    h.wait_for(lambda: not listnodes(adm)[1]["node1"].connected,
               what="node1 disconnected")
    r, by = listnodes(adm)
    assert len(r.nodes) == 1 and by["node1"].last_seen_unix > 0
    assert "node node1 disconnected" in c.log_text()


def test_older_incarnation_refused_newer_replaces_once(ctld, nodes):
    """Two processes of one node (the old and new worker 0 of a binary
    upgrade): the newer (higher incarnation) takes the session once; the
    older, trying again, is refused instead of taking it back."""
    c = ctld()
    _, adm = c.admin()
    old = nodes(c, "node1", incarnation=1000)
    h.wait_for(lambda: listnodes(adm)[1].get("node1"), what="node1")
    new = nodes(c, "node1", incarnation=2000)
    err = old.wait_end()
    assert err.code() == grpc.StatusCode.ABORTED, err

    again = nodes(c, "node1", incarnation=1000)
    err = again.wait_end()
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
    assert "a newer session of node node1 is active" in err.details()
    time.sleep(0.3)
    assert not new.done
    assert listnodes(adm)[1]["node1"].connected
    log = c.log_text()
    assert log.count("node node1: the session from") == 1, log
    assert "node node1: refused the session from" in log


def test_canary_promote_take_back_and_restart(ctld, nodes):
    """A canary with the data directory: only the nodes it selects get it,
    it outlives a restart, promote gives it to every node, and a canary
    taken back sends its nodes the current version again."""
    c = ctld()
    _, adm = c.admin()
    n1 = nodes(c, "node1", labels={"rack": "r1"})
    n2 = nodes(c, "node2", labels={"rack": "r2"})
    v1 = apply(adm, h.policy("base")).version
    for n in (n1, n2):
        n.wait(lambda n: v1 in n.versions(), what="v1")

    r = adm.Apply(h.pb.ApplyRequest(policy=h.policy(
        "canary", routes=(("example.com", ["[10.0.0.2]:25"]),)),
        canary="rack=r2", wait_ms=5000))
    v2 = r.version
    assert r.canary == "rack=r2" and r.waited
    assert [(o.node_id, o.outcome) for o in r.outcomes] == \
        [("node2", h.pb.NodeOutcome.ACK)]
    time.sleep(0.3)
    assert v2 not in n1.versions()

    e = rpc_error(adm.Apply, h.pb.ApplyRequest(policy=h.policy("busy")))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "is a canary of \"rack=r2\"" in e.details()

    n1.close()
    n2.close()
    c.restart()
    _, adm = c.admin()
    hist = adm.History(h.pb.HistoryRequest())
    assert hist.current == v1 and hist.canary == v2
    assert hist.canary_selector == "rack=r2"
    n1 = nodes(c, "node1", applied=v1, labels={"rack": "r1"})
    n2 = nodes(c, "node2", applied=v2, labels={"rack": "r2"})
    h.wait_for(lambda: all(getattr(listnodes(adm)[1].get(n), "connected",
                                   False) for n in ("node1", "node2")),
               what="both nodes back")

    p = adm.Promote(h.pb.PromoteRequest(wait_ms=5000))
    assert p.version == v2
    assert sorted((o.node_id, o.outcome) for o in p.outcomes) == \
        [("node1", h.pb.NodeOutcome.ACK), ("node2", h.pb.NodeOutcome.ACK)]
    assert v2 in n1.versions()

    r = adm.Apply(h.pb.ApplyRequest(policy=h.policy(
        "canary 2", routes=(("example.com", ["[10.0.0.3]:25"]),)),
        canary="node=node1", wait_ms=5000))
    v3 = r.version
    back = adm.Rollback(h.pb.RollbackRequest(wait_ms=5000))
    assert back.version == v2 and back.canary == "node=node1"
    n1.wait(lambda n: n.versions()[-2:] == [v3, v2], what="v3 then v2")
    hist = adm.History(h.pb.HistoryRequest())
    assert hist.current == v2 and hist.canary == 0
    assert hist.entries[0].version == v3
    assert hist.entries[0].state == h.pb.VERSION_ABORTED


def test_wrong_ca_client_refused(ctld, tmp_path):
    c = ctld()
    other = h.make_certs(tmp_path / "other", "node1")
    ch = h.grpc.secure_channel(f"127.0.0.1:{c.port}", c.creds(
        (c.certs / "ca.pem", other / "operator.pem", other / "operator.key")))
    adm = h.pb_grpc.AdminStub(ch)
    e = rpc_error(adm.History, h.pb.HistoryRequest())
    assert e.code() == grpc.StatusCode.UNAVAILABLE
    ch.close()

    # and a client without TLS
    ch = grpc.insecure_channel(f"127.0.0.1:{c.port}")
    e = rpc_error(h.pb_grpc.AdminStub(ch).History, h.pb.HistoryRequest())
    assert e.code() == grpc.StatusCode.UNAVAILABLE
    ch.close()


def test_node_cert_on_admin_refused(ctld):
    c = ctld()
    _, adm = c.admin("node-node1")
    e = rpc_error(adm.Apply, h.pb.ApplyRequest(policy=h.policy()))
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "operator" in e.details()
    assert "refused caller" in c.log_text()
    _, adm = c.admin()
    assert len(adm.History(h.pb.HistoryRequest()).entries) == 0


def test_operator_cert_on_node_refused(ctld, nodes):
    c = ctld()
    n = nodes(c, "admin", cert="operator")
    err = n.wait_end()
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "node:<id>" in err.details()
    _, adm = c.admin()
    assert len(listnodes(adm)[0].nodes) == 0


def test_hello_with_another_node_id_refused(ctld, nodes):
    c = ctld()
    n = nodes(c, "node2", cert="node-node1")
    err = n.wait_end()
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "does not match" in err.details()
    _, adm = c.admin()
    assert len(listnodes(adm)[0].nodes) == 0
    assert "refused caller" in c.log_text()


def test_config_file_flags_win_and_port_is_exclusive(ctld, tmp_path, certs):
    c = ctld()
    conf = tmp_path / "controld.conf"
    conf.write_text(
        "# test\n"
        f"listen 127.0.0.1:{c.port};\n"
        f"data_dir {tmp_path / 'cdata'};   # versions\n"
        f"tls_ca {certs / 'ca.pem'};\n"
        f"tls_cert {certs / 'controld.pem'};\n"
        f"tls_key {certs / 'controld.key'};\n"
        "command_timeout 2s;\n")

    # the configured port is taken (no SO_REUSEPORT sharing): it fails
    p = subprocess.run([h.CONTROLD, "-c", str(conf)], capture_output=True,
                       text=True, timeout=20)
    assert p.returncode != 0
    assert "cannot listen" in p.stderr

    port = h.free_port()
    p = subprocess.Popen([h.CONTROLD, "-c", str(conf), "--listen",
                          f"127.0.0.1:{port}"], stderr=subprocess.PIPE,
                         text=True)
    try:
        h.wait_for(lambda: (tmp_path / "cdata" / "versions").is_dir(),
                   what="data dir")
        time.sleep(0.3)
        ch = grpc.secure_channel(f"127.0.0.1:{port}", c.creds("operator"))
        adm = h.pb_grpc.AdminStub(ch)
        assert apply(adm, h.policy()).version == 1
        ch.close()
    finally:
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    assert "stopped" in err

    bad = tmp_path / "bad.conf"
    bad.write_text("listen 127.0.0.1:1\nfrobnicate yes;\n")
    p = subprocess.run([h.CONTROLD, "-c", str(bad)], capture_output=True,
                       text=True, timeout=10)
    assert p.returncode == 2 and "missing \";\"" in p.stderr

    p = subprocess.run([h.CONTROLD, "--data-dir", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "--insecure" in p.stderr
