"""
The accounting log (relay_accounting_log, ngx_relay_account.c): one JSON
object per line for each message received, each delivery attempt of each
recipient, each DSN and each expiry.  Every line parses, whatever clients
and servers sent (quotes and backslashes in quoted local parts, UTF-8
addresses, hostile HELOs that are refused, remote replies with NUL,
control characters and broken UTF-8); the records match what the sinks
received; "nginx -s reopen" after the file was moved starts a new file and
loses no record; "buffer= flush=" holds records no longer than flush.

Sinks on 127.0.0.64-65.  No DNS: routes to [address]:port.
"""

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

import deliveryharness as dh
import metricsharness as mh
import relayharness as h


SINK_IP = "127.0.0.64"
DEAD_IP = "127.0.0.65"

HOSTILE = b"550 5.1.1 <x>: \"no\" \\such\\ user\x00here \x01\x7f caf\xe9 " \
          b"\xff\xfe \xed\xa0\x80 \xc3\xa9"


@pytest.fixture(scope="module")
def sink():
    port = dh.alloc_port((SINK_IP, DEAD_IP))

    def rcpt(sess, txn, addr):
        if addr.startswith("hostile"):
            return HOSTILE
        if addr.startswith("bounce"):
            return "550 5.1.1 <%s>: User unknown" % addr
        return None

    s = dh.Sink(SINK_IP, port, "accounting-sink", rcpt_reply=rcpt,
                ehlo_ext=dh.DEFAULT_EXT + ("SMTPUTF8",))
    s.start()
    yield s
    s.stop()


def conf(sink, log_line):
    return "\n".join("    " + l for l in [
        "relay_delivery on;",
        "relay_resolver 127.0.0.1:1;",
        "relay_connect_timeout 1s;",
        "relay_queue_scan_interval 1s;",
        "relay_retry_backoff 1s 2s;",
        "relay_queue_lifetime 4s;",
        "relay_smtp_port %d;" % sink.port,
        "relay_route acct.test [%s];" % SINK_IP,
        "relay_route dead.test [%s];" % DEAD_IP,
        "relay_tenant billing;",
        log_line,
    ])


@pytest.fixture(scope="module")
def node(tmp_path_factory, certs, sink):
    ng = h.launch(tmp_path_factory, certs, "accounting",
                  stream_extra=conf(sink, "relay_accounting_log "
                                          "logs/accounting.log;"))
    yield ng
    ng.stop()
    ng.assert_log_clean()


def log_path(ng):
    return ng.prefix / "logs" / "accounting.log"


def raw_session(port, lines, body=b"Subject: t\r\n\r\nx\r\n"):
    """Sends command lines as bytes; returns the replies (the last of
    multiline ones) and the queue id, if any."""
    c = h.SMTPConn(port)
    replies, qid = [], None
    try:
        for line in lines:
            c.send(line + b"\r\n")
            r = c.reply()
            replies.append(r)
            if line == b"DATA" and r.code == 354:
                r = c.send_data(body)
                replies.append(r)
                qid = r.queue_id
        c.cmd("QUIT")
    finally:
        c.close()
    return replies, qid


def test_every_line_parses_and_matches_the_sinks(node, sink):
    tag = h.unique("ac")

    # hostile HELOs and addresses are refused: they leave no record
    replies, qid = raw_session(node.port("main"), [
        b"EHLO he\"l\\lo\xff\xfe\x01",
        b"EHLO h\xed\xa0\x80.example",
        b"HELO nul\x00byte.example",
        b"EHLO ok.example",
        b"MAIL FROM:<\xe9\xff@example.org> SMTPUTF8",
        b"RSET"])
    assert qid is None
    assert [r.code for r in replies[:3]] == [501, 501, 500] or \
        all(r.code >= 500 for r in replies[:3]), replies

    # what is accepted: quotes, backslashes, UTF-8
    q1 = raw_session(node.port("main"), [
        b"EHLO ok.example",
        b'MAIL FROM:<"q\\"uo\\\\te-' + tag.encode() + b'"@example.test> '
        b"SMTPUTF8",
        b'RCPT TO:<"a\\"b\\\\c-' + tag.encode() + b'"@acct.test>',
        b"RCPT TO:<\xc3\xa9t\xc3\xa9-" + tag.encode() + b"@acct.test>",
        b"RCPT TO:<hostile-" + tag.encode() + b"@acct.test>",
        b"RCPT TO:<bounce-" + tag.encode() + b"@acct.test>",
        b"RCPT TO:<local-" + tag.encode() + b"@example.test>",
        b"DATA"])[1]
    assert q1

    # a message whose destination never answers: deferred, then expired
    with h.SMTPConn(node.port("main")) as c:
        q2 = c.message("exp-%s@example.test" % tag,
                       ["gone-%s@dead.test" % tag], h.simple_body(tag),
                       ehlo="exp.test")

    sink.wait_accepted(tag, 1)
    dh.wait_status(node, q1, "bounce-%s@acct.test" % tag, "bounced")

    rs = mh.wait_records(
        log_path(node),
        lambda rs: any(r["type"] == "expiry" and r["queue_id"] == q2
                       for r in rs)
        and sum(1 for r in rs if r["type"] == "dsn") >= 2,
        timeout=20, what="the expiry and the DSNs")

    mine = [r for r in rs if r.get("queue_id") in (q1, q2)]
    rec = {r["type"] for r in mine}
    assert {"received", "delivery", "dsn", "expiry"} <= rec, rec

    # received: the envelope as the client gave it
    r1 = [r for r in mine if r["type"] == "received"
          and r["queue_id"] == q1][0]
    assert r1["sender"] == '"q\\"uo\\\\te-%s"@example.test' % tag
    assert '"a\\"b\\\\c-%s"@acct.test' % tag in r1["recipients"]
    assert "\u00e9t\u00e9-%s@acct.test" % tag in r1["recipients"]
    assert r1["helo"] == "ok.example" and r1["tenant"] == "billing"
    assert r1["client_ip"] == "127.0.0.1" and r1["tls_version"] is None
    assert r1["listener"] == "127.0.0.1:%d" % node.port("main")
    assert r1["size"] > 0

    # deliveries: the sink's transaction, recipient by recipient
    sent = {r["recipient"] for r in mine if r["type"] == "delivery"
            and r["queue_id"] == q1 and r["outcome"] == "sent"
            and r["class"] == "remote"}
    seen = {a for t in sink.accepted(tag) for a in t.rcpts}
    assert sent == seen, (sent, seen)
    for r in mine:
        if r["type"] == "delivery" and r["class"] == "remote" \
                and r["outcome"] == "sent":
            assert r["remote_ip"] == SINK_IP and r["remote_port"] == \
                sink.port, r
            assert r["dsn"] == "2.0.0" and r["attempt"] == 1
            assert r["reply"].startswith("250 ")
            # the host's effective TLS policy and its source, as logged
            assert r["tls_policy"] == "opportunistic:default", r
            for k in ("delay_queue", "delay_dns", "delay_connect",
                      "delay_tls", "delay_transfer"):
                assert isinstance(r[k], (int, float)) and r[k] >= 0, (k, r)

    # the hostile reply: escaped, every octet accounted for
    hr = [r for r in mine if r["type"] == "delivery"
          and r["recipient"].startswith("hostile-")][0]
    assert hr["outcome"] == "bounced" and hr["category"] == "bad-mailbox"
    assert '"no" \\such\\ user' in hr["reply"], hr["reply"]
    assert "\ufffd" in hr["reply"] or "\x00" in hr["reply"], hr["reply"]

    local = [r for r in mine if r["type"] == "delivery"
             and r["class"] == "local"]
    assert local and local[0]["outcome"] == "sent"

    # expiry, the attempt that expired, and its DSN
    ex = [r for r in mine if r["type"] == "expiry"][0]
    assert ex["recipient"] == "gone-%s@dead.test" % tag
    assert ex["age"] >= 4 and "expired" in ex["last_error"]
    assert any(r["type"] == "delivery" and r["queue_id"] == q2
               and r["outcome"] == "expired" for r in mine)
    assert any(r["type"] == "delivery" and r["queue_id"] == q2
               and r["outcome"] == "deferred"
               and r["category"] == "connection-failure" for r in mine)
    dsns = [r for r in mine if r["type"] == "dsn"]
    assert {d["kind"] for d in dsns} == {"failure"}
    assert {tuple(d["recipients"]) for d in dsns} >= {
        ("gone-%s@dead.test" % tag,)}

    # and the raw file is UTF-8 through and through
    data = log_path(node).read_bytes()
    data.decode("utf-8")
    assert b"\x00" not in data and b"\xff" not in data


def test_reopen_after_a_move_loses_nothing(node):
    path = log_path(node)
    moved = path.with_name("accounting.log.1")
    tag = h.unique("ro")

    def send(n, mark):
        ids = []
        with h.SMTPConn(node.port("main")) as c:
            c.ehlo("r.test")
            for i in range(n):
                ids.append(c.message(
                    "r@example.org", ["%s%d-%s@example.test" % (mark, i, tag)],
                    h.simple_body(tag)))
            c.cmd("QUIT")
        return ids

    first = send(10, "a")
    os.rename(path, moved)

    # records keep coming while the file is away, and after the reopen
    during = send(5, "b")
    r = subprocess.run(h.nginx_argv("-p", str(node.prefix) + "/", "-c",
                                    "nginx.conf", "-s", "reopen"),
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    h.wait_until(path.exists, 10, what="a new accounting.log")
    after = send(10, "c")

    want = set(first + during + after)

    def complete(rs):
        got = [x["queue_id"] for x in rs if x["type"] == "received"
               and x["queue_id"] in want]
        dl = {x["queue_id"] for x in rs if x["type"] == "delivery"
              and x["queue_id"] in want}
        return set(got) == want and dl == want and len(got) == len(want)

    rs = mh.wait_records([moved, path], complete, timeout=15,
                         what="every record in one of the two files")
    new = {x["queue_id"] for x in mh.records(path)
           if x["type"] == "received"}
    old = {x["queue_id"] for x in mh.records(moved)
           if x["type"] == "received"}
    assert set(first) <= old, "records before the move in the old file"
    assert set(after) <= new, "records after the reopen in the new file"
    assert not (old & new), "a record twice"
    assert len([x for x in rs if x["type"] == "received"
                and x["queue_id"] in want]) == len(want)


def test_the_logrotate_file_of_deploy(node):
    """The package's logrotate file (deploy/debian/nginx-relay.logrotate),
    its paths made this prefix's, its user the test's, and USR1 for
    "nginx -s reopen" of the packaged configuration, run by logrotate(8):
    the file rotates, nginx reopens, no record is lost."""
    top = Path(__file__).resolve().parents[2]
    logs = node.prefix / "logs"
    pid = logs / "nginx.pid"
    text = (top / "deploy" / "debian" / "nginx-relay.logrotate").read_text()
    assert "/usr/sbin/nginx -c /etc/nginx-relay/nginx.conf -s reopen" in text
    text = text.replace("/var/log/nginx-relay/", str(logs) + "/") \
        .replace("/run/nginx-relay/nginx.pid", str(pid)) \
        .replace("/usr/sbin/nginx -c /etc/nginx-relay/nginx.conf -s reopen",
                 'kill -USR1 "$(cat %s)"' % pid)
    text = re.sub(r"\n\s*create [^\n]*", "", text)
    conf = node.prefix / "logrotate.conf"
    conf.write_text(text)
    os.chmod(conf, 0o644)
    tag = h.unique("lr")

    def send(n, mark):
        with h.SMTPConn(node.port("main")) as c:
            c.ehlo("lr.test")
            ids = [c.message("l@example.org",
                             ["%s%d-%s@example.test" % (mark, i, tag)],
                             h.simple_body(tag)) for i in range(n)]
            c.cmd("QUIT")
        return ids

    ids = send(5, "a")
    r = subprocess.run(["logrotate", "-f", "-s",
                        str(node.prefix / "logrotate.state"), str(conf)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rotated = sorted(logs.glob("accounting.log.*"))
    assert rotated, sorted(p.name for p in logs.iterdir())
    ids += send(5, "b")

    h.wait_until(lambda: (logs / "accounting.log").exists(), 10,
                 what="the new accounting.log")
    files = [p for p in logs.glob("accounting.log*")
             if not p.name.endswith(".gz")]

    def complete(rs):
        got = [x["queue_id"] for x in rs if x["type"] == "received"
               and x["queue_id"] in ids]
        return sorted(got) == sorted(ids)
    mh.wait_records(files, complete, timeout=15,
                    what="every record in the rotated or the new file")
    assert any(x["type"] == "received" and x["queue_id"] in ids[5:]
               for x in mh.records(logs / "accounting.log"))


def test_buffer_and_flush(tmp_path_factory, certs, sink):
    ng = h.launch(tmp_path_factory, certs, "accounting-buffered",
                  workers=1,
                  stream_extra=conf(sink, "relay_accounting_log "
                                          "logs/accounting.log buffer=64k "
                                          "flush=1s;"))
    try:
        tag = h.unique("bf")
        with h.SMTPConn(ng.port("main")) as c:
            qid = c.message("b@example.org", ["%s@example.test" % tag],
                            h.simple_body(tag), ehlo="b.test")
        h.wait_delivered(ng, "example.test", tag)
        t0 = time.monotonic()
        mh.wait_records(log_path(ng),
                        lambda rs: any(r.get("queue_id") == qid
                                       and r["type"] == "delivery"
                                       for r in rs),
                        timeout=5, what="the buffered records")
        assert time.monotonic() - t0 < 3
    finally:
        ng.stop()
        ng.assert_log_clean()

    # nginx refuses what nginx's logs refuse
    err = dh.nginx_t(["relay_accounting_log logs/a.log flush=1s;"])
    assert err and 'needs "buffer=" for "flush="' in err, err
    err = dh.nginx_t(["relay_accounting_log logs/a.log buffer=x;"])
    assert err and "invalid buffer size" in err, err
    assert dh.nginx_t(["relay_accounting_log off;"]) is None
