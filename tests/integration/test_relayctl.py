"""
relayctl, the operator CLI, against a real controld.

Each test starts its own controld ($CONTROLD) on a free port in 25500-25999
with a fresh data dir and the dev certificates of deploy/dev-certs.sh
(operator CN operator:admin, node CN node:node1), runs $RELAYCTL as an
operator would and checks its output and exit code.  Fake nodes (the
Python Node.Session client of controlharness) stand in for relay nodes
where nodes and queues are shown.  Missing binaries fail, never skip.

  CONTROLD=... RELAYCTL=... /usr/bin/python3 -m pytest -q \
      tests/integration/test_relayctl.py
"""

import json
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

import controlharness as h

TOP = Path(__file__).resolve().parents[2]
RELAYCTL = h.RELAYCTL
EXAMPLE = TOP / "config" / "policy.example"
PORTS = range(25500, 26000)


def free_port():
    ports = list(PORTS)
    off = (os.getpid() * 13) % len(ports)
    for p in ports[off:] + ports[:off]:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            s.close()
        return p
    raise RuntimeError("no free port in 25500-25999")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    if not os.access(RELAYCTL, os.X_OK):
        raise AssertionError(f"relayctl binary not found: {RELAYCTL} "
                             "(set RELAYCTL)")
    h.load_stubs(tmp_path_factory.mktemp("gen"))
    return h.make_certs(tmp_path_factory.mktemp("certs"), "node1")


@pytest.fixture
def ctld(tmp_path, certs):
    c = h.Controld(tmp_path / "controld", certs, port=free_port()).start()
    yield c
    rc = c.stop()
    assert rc in (0, None), c.log_text()


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


def relayctl(ctld, *args, who="operator", port=None, stdin=None):
    """relayctl with the identity's certificate, the server from the env."""
    certs = ctld.certs
    env = dict(os.environ)
    env["RELAYCTL_SERVER"] = f"127.0.0.1:{port or ctld.port}"
    env["RELAYCTL_CA"] = str(certs / "ca.pem")
    env["RELAYCTL_CERT"] = str(certs / f"{who}.pem")
    env["RELAYCTL_KEY"] = str(certs / f"{who}.key")
    env.pop("GRPC_VERBOSITY", None)
    p = subprocess.run([RELAYCTL, "--timeout", "5", *map(str, args)],
                       env=env, input=stdin, capture_output=True, text=True,
                       timeout=30)
    return h.Run(p)


def body(text):
    """The text without its "#" lines (version/author/created)."""
    return "".join(l for l in text.splitlines(True) if not l.startswith("#"))


def write(tmp_path, name, text):
    f = tmp_path / name
    f.write_text(text)
    return f


POLICY_A = """\
comment "first";
route example.com [mx.example.net]:25;
retry * min=5m max=1h lifetime=5d;
tls * optional;
"""

POLICY_B = """\
comment "second";
route example.com [mx.example.net]:25;
route partner.example [10.1.2.3]:2525;
retry * min=5m max=1h lifetime=5d;
tls * optional;
"""


# ---------------------------------------------------------------- apply, get


def test_apply_get_round_trip(ctld, tmp_path):
    r = relayctl(ctld, "apply", EXAMPLE, "-m", "the example")
    assert r.rc == 0, r
    assert "applied version 1" in r.out
    assert "+route partner.example [mx1.partner.example]:2525" in r.out

    g = relayctl(ctld, "get")
    assert g.rc == 0, g
    assert g.out.startswith("# version 1\n# author admin\n# created ")
    assert 'comment "the example";' in g.out

    # get's text is canonical: fmt leaves it alone, and applying it back
    # changes nothing
    f = write(tmp_path, "got.policy", g.out)
    fm = relayctl(ctld, "fmt", f)
    assert fm.rc == 0 and fm.out == g.out, fm

    d = relayctl(ctld, "diff", f)
    assert d.rc == 0 and d.out == "", d

    again = relayctl(ctld, "apply", f)
    assert again.rc == 1, again
    assert "no change" in again.out

    # get VERSION, and a version that does not exist
    assert relayctl(ctld, "get", 1).out == g.out
    nf = relayctl(ctld, "get", 99)
    assert nf.rc == 6, nf
    assert "NOT_FOUND" in nf.err


def test_diff_shows_changes_and_exit_codes(ctld, tmp_path):
    a = write(tmp_path, "a.policy", POLICY_A)
    b = write(tmp_path, "b.policy", POLICY_B)

    # nothing applied yet: everything is new
    d0 = relayctl(ctld, "diff", a)
    assert d0.rc == 1, d0
    assert "+route example.com [mx.example.net]:25" in d0.out

    assert relayctl(ctld, "apply", a).rc == 0

    d1 = relayctl(ctld, "diff", a)
    assert d1.rc == 0 and d1.out == "", d1

    d2 = relayctl(ctld, "diff", b)
    assert d2.rc == 1, d2
    lines = d2.out.splitlines()
    assert lines[0].startswith("--- ") and lines[1].startswith("+++ ")
    assert any(l.startswith("@@ -") for l in lines)
    assert '-comment "first";' in lines
    assert '+comment "second";' in lines
    assert "+route partner.example [10.1.2.3]:2525;" in lines
    assert " route example.com [mx.example.net]:25;" in lines

    # a dry run shows the same and stores nothing
    dr = relayctl(ctld, "apply", b, "--dry-run")
    assert dr.rc == 0, dr
    assert "+route partner.example [10.1.2.3]:2525;" in dr.out
    assert "dry run" in dr.out
    assert relayctl(ctld, "get").out.startswith("# version 1\n")

    # the policy from stdin
    s = relayctl(ctld, "diff", "-", stdin=POLICY_A)
    assert s.rc == 0 and s.out == "", s


def test_history_and_rollback(ctld, tmp_path):
    a = write(tmp_path, "a.policy", POLICY_A)
    b = write(tmp_path, "b.policy", POLICY_B)

    assert relayctl(ctld, "apply", a).rc == 0
    r2 = relayctl(ctld, "apply", b, "-m", "add partner")
    assert r2.rc == 0 and "applied version 2" in r2.out, r2
    v1 = relayctl(ctld, "get", 1).out

    dry = relayctl(ctld, "rollback", 1, "--dry-run")
    assert dry.rc == 0, dry
    assert "-route partner.example [10.1.2.3]:2525;" in dry.out
    assert relayctl(ctld, "get").out.startswith("# version 2\n")

    rb = relayctl(ctld, "rollback", 1)
    assert rb.rc == 0, rb
    assert "-route partner.example [10.1.2.3]:2525;" in rb.out
    assert "applied version 3" in rb.out

    now = relayctl(ctld, "get").out
    assert now.startswith("# version 3\n")
    assert body(now) == body(v1)

    # rolling back to what is current changes nothing
    same = relayctl(ctld, "rollback", 3)
    assert same.rc == 1 and "no change" in same.out, same

    hist = relayctl(ctld, "history")
    assert hist.rc == 0, hist
    rows = hist.out.splitlines()
    assert re.match(r"VERSION\s+AUTHOR\s+CREATED\s+COMMENT$", rows[0])
    by_version = {row.split()[0]: row for row in rows[1:]
                  if row and row[0].isdigit()}
    assert set(by_version) == {"1", "2", "3"}, hist
    assert "add partner" in by_version["2"]
    assert "rollback to 1" in by_version["3"]
    assert "3 *" in by_version["3"]
    assert re.search(r"\badmin\b", by_version["1"])
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", by_version["1"])

    short = relayctl(ctld, "history", "-n", 1)
    assert short.rc == 0
    assert len([r for r in short.out.splitlines()
                if r and r[0].isdigit()]) == 1, short

    nf = relayctl(ctld, "rollback", 42)
    assert nf.rc == 6, nf


# ---------------------------------------------------------------- refusals


def test_invalid_file_refused_with_file_and_line(ctld, tmp_path):
    f = write(tmp_path, "bad.policy",
              "route example.com [mx.example.net];\n\nroutes x.com y.com;\n")
    r = relayctl(ctld, "apply", f)
    assert r.rc == 3, r
    assert f"{f}:3: unknown statement \"routes\"" in r.err
    assert r.out == ""

    f2 = write(tmp_path, "bad2.policy",
               "retry * min=5m\n  max=1x lifetime=1d;\n")
    r2 = relayctl(ctld, "diff", f2)
    assert r2.rc == 3, r2
    assert f"{f2}:2: retry: bad duration \"1x\"" in r2.err

    # nothing reached controld
    assert relayctl(ctld, "get").rc == 6

    missing = relayctl(ctld, "apply", tmp_path / "nope.policy")
    assert missing.rc == 3, missing
    assert "No such file" in missing.err


def test_invalid_policy_refused_by_controld(ctld, tmp_path):
    f = write(tmp_path, "invalid.policy",
              "route example.com [mx.example.net];\n"
              "route other.example 10.0.0.1:25;\n")
    r = relayctl(ctld, "apply", f)
    assert r.rc == 3, r
    assert "INVALID_ARGUMENT" in r.err
    assert "routes[1].next_hops[0]" in r.err
    assert relayctl(ctld, "get").rc == 6

    # the same check offline
    c = relayctl(ctld, "check", f)
    assert c.rc == 3
    assert "routes[1].next_hops[0]" in c.err

    f2 = write(tmp_path, "pool.policy",
               "egress_pool p ehlo=mail.example.com 192.0.2.1;\n"
               "egress_rule tenant acme q;\n")
    r2 = relayctl(ctld, "apply", f2)
    assert r2.rc == 3, r2
    assert 'egress_rules[0].pool: no egress pool "q"' in r2.err


def test_node_certificate_refused(ctld, tmp_path):
    r = relayctl(ctld, "get", who="node-node1")
    assert r.rc == 5, r
    assert "PERMISSION_DENIED" in r.err

    a = write(tmp_path, "a.policy", POLICY_A)
    r2 = relayctl(ctld, "apply", a, who="node-node1")
    assert r2.rc == 5, r2
    assert relayctl(ctld, "get").rc == 6


def test_controld_down(certs, tmp_path):
    class Down:
        pass

    down = Down()
    down.certs = certs
    down.port = free_port()          # nothing listens there
    r = relayctl(down, "get")
    assert r.rc == 4, r
    assert "UNAVAILABLE" in r.err
    assert f"127.0.0.1:{down.port}" in r.err

    r2 = relayctl(down, "apply", EXAMPLE)
    assert r2.rc == 4, r2


def test_usage_errors(ctld, tmp_path):
    assert relayctl(ctld).rc == 2
    assert relayctl(ctld, "frobnicate").rc == 2
    assert relayctl(ctld, "apply").rc == 2
    assert relayctl(ctld, "get", "x").rc == 2
    assert relayctl(ctld, "queue", "delete").rc == 2     # ids or --all
    assert relayctl(ctld, "queue", "hold").rc == 2
    assert relayctl(ctld, "queue", "release").rc == 2
    h_ = relayctl(ctld, "--help")
    assert h_.rc == 0
    for word in ("apply", "diff", "rollback", "nodes", "queue",
                 "RELAYCTL_SERVER", "exit codes"):
        assert word in h_.out


# ---------------------------------------------------------------- JSON


def test_json_output(ctld, tmp_path):
    a = write(tmp_path, "a.policy", POLICY_A)
    ap = relayctl(ctld, "--json", "apply", a, "-m", 'with "quotes" \\ and \u00e9t\u00e9')
    assert ap.rc == 0, ap
    j = json.loads(ap.out)
    assert j["version"] == 1 and j["changed"] is True
    assert "+route example.com" in j["diff"]

    g = json.loads(relayctl(ctld, "get", "--json").out)
    assert g["version"] == 1
    assert g["comment"] == 'with "quotes" \\ and \u00e9t\u00e9'
    assert g["routes"] == [{"pattern": "example.com",
                            "next_hops": ["[mx.example.net]:25"],
                            "nodes": ""}]
    assert g["tls"][0] == {"pattern": "*", "required": False,
                           "verify": False, "nodes": ""}

    hi = json.loads(relayctl(ctld, "history", "--json").out)
    assert hi["current"] == 1
    assert hi["entries"][0]["author"] == "admin"

    nd = json.loads(relayctl(ctld, "nodes", "--json").out)
    assert nd["current"] == 1 and nd["nodes"] == []

    ex = json.loads(relayctl(ctld, "fmt", "--json", EXAMPLE).out)
    assert ex["inbound_limits"][0]["key"] == "CLIENT_IP"
    assert ex["egress_rules"][2]["key"] == "TENANT"


# ---------------------------------------------------------------- nodes, queue


def test_nodes_and_queue(ctld, nodes, tmp_path):
    a = write(tmp_path, "a.policy", POLICY_A)
    assert relayctl(ctld, "apply", a).rc == 0

    def answer(cmd):
        if cmd.action == h.pb.QUEUE_LIST:
            e = h.pb.QueueEntry(id="Q1ABC", sender="alice@example.com",
                                pending=["bob@example.net",
                                         "carol@example.org"],
                                recipients=3, arrival_unix=1,
                                attempts=2, size=1234,
                                last_error="451 4.7.1 try \"later\"\r\n")
            held = h.pb.QueueEntry(id="Q2HELD", sender="dan@example.com",
                                   pending=["erin@example.net"],
                                   recipients=1, arrival_unix=1,
                                   next_attempt_unix=1, attempts=1,
                                   held=True, state="held")
            return h.pb.CommandResult(id=cmd.id, ok=True,
                                      entries=[e, held])
        if cmd.action == h.pb.QUEUE_BOUNCE:
            return h.pb.CommandResult(id=cmd.id, ok=False,
                                      error="no such message")
        if cmd.action == h.pb.QUEUE_RELEASE:
            return h.pb.CommandResult(id=cmd.id, ok=True, affected=0,
                                      error="Q9: not held")
        return h.pb.CommandResult(id=cmd.id, ok=True,
                                  affected=len(cmd.queue_ids) or 5)

    n1 = nodes(ctld, "node1", on_command=answer)
    n1.wait(lambda n: 1 in n.versions(), what="policy 1")

    def listed():
        r = relayctl(ctld, "nodes")
        return r if "node1" in r.out and " 1 " in r.out else None

    r = h.wait_for(listed, 10, "node1 in the list with version 1")
    assert r.rc == 0
    rows = r.out.splitlines()
    assert re.match(r"NODE\s+CONNECTED\s+APPLIED\s+NACK\s+LAST-SEEN\s+QUEUE",
                    rows[0])
    row = [l for l in rows if l.startswith("node1")][0]
    assert re.match(r"node1\s+yes\s+1\s+-\s", row), r

    q = relayctl(ctld, "queue", "list")
    assert q.rc == 0, q
    assert "node1: 2 messages" in q.out
    assert re.search(r"Q1ABC\s+\S+\s+<alice@example.com>\s+2/3\s+"
                     r"bob@example.net,carol@example.org\s+now\s+2\s+"
                     r"policy-rejected\s+451 4.7.1", q.out), q
    assert re.search(r"Q2HELD\s+\S+\s+<dan@example.com>\s+1/1\s+"
                     r"erin@example.net\s+held\s+1\s+-", q.out), q
    assert "\r" not in q.out

    qj = json.loads(relayctl(ctld, "--json", "queue", "list",
                             "--node", "node1").out)
    e = qj["results"][0]["entries"][0]
    assert e["last_error"] == "451 4.7.1 try \"later\"\r\n"
    assert e["size"] == 1234
    assert e["held"] is False and e["state"] == ""
    e2 = qj["results"][0]["entries"][1]
    assert e2["held"] is True and e2["state"] == "held"

    fl = relayctl(ctld, "queue", "flush", "--node", "node1", "Q1ABC", "Q2")
    assert fl.rc == 0, fl
    assert "node1: flushed 2 messages" in fl.out
    assert list(n1.commands[-1].queue_ids) == ["Q1ABC", "Q2"]

    de = relayctl(ctld, "queue", "delete", "--all")
    assert de.rc == 0 and "node1: deleted 5 messages" in de.out, de

    bo = relayctl(ctld, "queue", "bounce", "Q1ABC")
    assert bo.rc == 7, bo
    assert "node1: error: no such message" in bo.out

    ho = relayctl(ctld, "queue", "hold", "--node", "node1", "Q1ABC")
    assert ho.rc == 0 and "node1: held 1 message" in ho.out, ho
    assert n1.commands[-1].action == h.pb.QUEUE_HOLD

    # nothing released, and why
    re_ = relayctl(ctld, "queue", "release", "Q9")
    assert re_.rc == 1, re_
    assert "node1: released 0 messages (Q9: not held)" in re_.out
    assert n1.commands[-1].action == h.pb.QUEUE_RELEASE

    un = relayctl(ctld, "queue", "list", "--node", "node9")
    assert un.rc in (6, 4), un
