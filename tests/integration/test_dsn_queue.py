"""
DSN parameters (RFC 3461) and the queue file format: "RELAY-QUEUE 1",
"key value" lines (ret, envid, one "rcpt <state> <notify> <orcpt|-> <addr>"
per recipient), an empty line, then the message (Received: first).
Remote recipients from the trusted network keep the file in spool/queue/.
"""

import relayharness as h


def queue(relay, smtp, mail_params, rcpts, body):
    c = smtp()
    c.ehlo("dsn.client.test")
    c.expect("MAIL FROM:<dsn@example.org>%s" % mail_params, 250, "2.1.0")
    for addr, params in rcpts:
        c.expect("RCPT TO:<%s>%s" % (addr, params), 250, "2.1.5")
    c.expect("DATA", 354)
    r = c.send_data(body)
    assert r.is_(250, "2.0.0") and r.queue_id, r
    path = h.wait_until(lambda: h.queue_file_for(relay, r.queue_id), 5,
                        what="queue file for %s" % r.queue_id)
    return r.queue_id, path


def test_dsn_parameters_kept(relay, smtp):
    tag = h.unique("dsn")
    a, b, c_ = ("%s-%d@remote.example" % (tag, i) for i in range(3))
    body = h.simple_body(tag)
    qid, path = queue(relay, smtp, " RET=HDRS ENVID=abc+2Bdef", [
        (a, " NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;%s" % a),
        (b, ""),
        (c_, " NOTIFY=NEVER"),
    ], body)
    first, kv, rcpts, msg = h.parse_queue_file(path)
    assert first == "RELAY-QUEUE 1", first
    d = dict(kv)
    assert d.get("ret") == "HDRS", kv
    assert d.get("envid") == "abc+2Bdef", kv
    assert rcpts == [
        {"state": "P", "notify": "SUCCESS,FAILURE",
         "orcpt": "rfc822;" + a, "address": a},
        {"state": "P", "notify": "-", "orcpt": "-", "address": b},
        {"state": "P", "notify": "NEVER", "orcpt": "-", "address": c_},
    ], rcpts
    assert msg.startswith(b"Received: "), msg[:100]
    h.check_received(_received(msg), "dsn.client.test", "ESMTP", qid)
    assert msg.endswith(b"\r\n" + body)
    assert msg[len(_received(msg)):] == body


def _received(msg):
    end = 0
    while True:
        nl = msg.index(b"\r\n", end)
        end = nl + 2
        if msg[end:end + 1] not in (b" ", b"\t"):
            return msg[:end]


def test_ret_full_and_notify_order(relay, smtp):
    tag = h.unique("full")
    addr = tag + "@remote.example"
    qid, path = queue(relay, smtp, " RET=FULL", [
        (addr, " NOTIFY=DELAY,FAILURE ORCPT=rfc822;orig+2B" + addr),
    ], h.simple_body(tag))
    first, kv, rcpts, msg = h.parse_queue_file(path)
    assert dict(kv).get("ret") == "FULL", kv
    assert rcpts[0]["orcpt"] == "rfc822;orig+2B" + addr, rcpts
    assert set(rcpts[0]["notify"].split(",")) == {"DELAY", "FAILURE"}, rcpts
    assert rcpts[0]["address"] == addr


def test_no_dsn_parameters(relay, smtp):
    tag = h.unique("plain")
    addr = tag + "@remote.example"
    qid, path = queue(relay, smtp, "", [(addr, "")], h.simple_body(tag))
    first, kv, rcpts, msg = h.parse_queue_file(path)
    assert first == "RELAY-QUEUE 1"
    d = dict(kv)
    assert d.get("ret", "-") in ("-", ""), kv
    assert d.get("envid", "-") in ("-", ""), kv
    assert rcpts == [{"state": "P", "notify": "-", "orcpt": "-",
                      "address": addr}], rcpts


def test_sender_and_id_in_header(relay, smtp):
    tag = h.unique("hdr")
    qid, path = queue(relay, smtp, "", [(tag + "@remote.example", "")],
                      h.simple_body(tag))
    first, kv, rcpts, msg = h.parse_queue_file(path)
    values = [v for k, v in kv]
    assert any("dsn@example.org" in v for v in values), kv
    assert qid in path.name or qid in values, (path, kv)


def test_queued_file_complete_nothing_partial_left(relay, smtp):
    tag = h.unique("inc")
    body = h.simple_body(tag)
    qid, path = queue(relay, smtp, "", [(tag + "@remote.example", "")], body)
    h.wait_until(lambda: not h.incoming_files(relay)
                 and not h.incomplete_queue_files(relay), 5,
                 what="no partial file in the spool: %s"
                 % (h.incoming_files(relay) + h.incomplete_queue_files(relay)))
    assert len(h.queue_index(relay)[qid]) == 1
    data = path.read_bytes()
    if not relay.incoming_dir.is_dir():
        # the trailer marks a complete file: "\nRELAY-END <offset>\n"
        stripped, ok = h.split_trailer(data)
        assert ok, "no valid trailer: %r" % data[-40:]
        assert stripped.endswith(b"\r\n" + body)
