"""
DSN end to end (RFC 3461, RFC 3464): towards a next hop that offers DSN
the relay passes RET and ENVID with MAIL, NOTIFY and ORCPT (as received,
or "rfc822;" + the address) with RCPT, and reports nothing itself; towards
one without DSN, a recipient with NOTIFY=SUCCESS gets a "relayed" DSN; a
Maildir delivery with NOTIFY=SUCCESS a "delivered" DSN.  Every report is a
multipart/report with the ENVID and each recipient's ORCPT, decoded from
xtext.  NOTIFY=NEVER is never notified.  Routes to [127.0.0.x]: no DNS.
"""

import pytest

import deliveryharness as d
import relayharness as h


@pytest.fixture(scope="module")
def world(tmp_path_factory, certs):
    port = d.alloc_port(("127.0.0.1", "127.0.0.5", "127.0.0.6"))
    dsn = d.Sink("127.0.0.5", port, name="withdsn",
                 ehlo_ext=d.DEFAULT_EXT + ("DSN",)).start()

    def rcpt(sess, txn, addr):
        return "550 5.1.1 no such user" if addr.startswith("gone") else None

    plain = d.Sink("127.0.0.6", port, name="nodsn", rcpt_reply=rcpt).start()
    lines = d.conf_lines(d.alloc_port(), port, routes=[
        ("withdsn.example", "[127.0.0.5]"),
        ("nodsn.example", "[127.0.0.6]")])
    ng = h.launch(tmp_path_factory, certs, "dsne2e",
                  stream_extra=d.stream_extra(lines))
    yield ng, dsn, plain
    ng.stop()
    ng.assert_log_clean()
    dsn.stop()
    plain.stop()


def send(ng, sender, mail_params, rcpts, marker):
    with h.SMTPConn(ng.port("main")) as c:
        c.ehlo("dsn.client.test")
        c.expect("MAIL FROM:<%s>%s" % (sender, mail_params), 250)
        for addr, params in rcpts:
            c.expect("RCPT TO:<%s>%s" % (addr, params), 250)
        assert c.cmd("DATA").code == 354
        r = c.send_data(h.simple_body(marker))
        assert r.queue_id, r
        c.cmd("QUIT")
        return r.queue_id


def test_parameters_passed_to_a_dsn_server(world):
    ng, dsn, plain = world
    m = h.unique("pass")
    a, b, c = ("%s-%s@withdsn.example" % (x, m) for x in "abc")
    send(ng, m + "@example.test", " RET=HDRS ENVID=env+2B" + m, [
        (a, " NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig+2B" + a),
        (b, ""),
        (c, " NOTIFY=NEVER")], m)
    txn = dsn.wait_accepted(m)[0]
    params = txn.mail_params.split()
    assert "RET=HDRS" in params and "ENVID=env+2B" + m in params, params
    log = {addr: p.split() for addr, p, _ in txn.rcpt_log}
    assert sorted(log[a]) == ["NOTIFY=SUCCESS,FAILURE",
                              "ORCPT=rfc822;orig+2B" + a], log
    assert log[b] == ["ORCPT=rfc822;" + b], log
    assert sorted(log[c]) == ["NOTIFY=NEVER", "ORCPT=rfc822;" + c], log
    # the next hop reports: nothing from the relay
    d.steady(lambda: not h.mailbox_files(ng, "example.test", m), 2,
             "no DSN from the relay")


def test_no_dsn_parameters_to_a_server_without_dsn(world):
    ng, dsn, plain = world
    m = h.unique("nodsnp")
    send(ng, "p@example.org", " RET=FULL ENVID=x" + m,
         [("%s@nodsn.example" % m, " NOTIFY=FAILURE ORCPT=rfc822;o@x")], m)
    txn = plain.wait_accepted(m)[0]
    assert "RET=" not in txn.mail_params and "ENVID" not in txn.mail_params
    assert txn.rcpt_log[0][1] == "", txn.rcpt_log


def test_relayed_dsn(world):
    ng, dsn, plain = world
    m = h.unique("relayed")
    ok, never, fail_only = ("%s-%s@nodsn.example" % (x, m)
                            for x in ("ok", "never", "failonly"))
    gone = "gone-%s@nodsn.example" % m
    send(ng, m + "@example.test", " ENVID=env+2B" + m, [
        (ok, " NOTIFY=SUCCESS ORCPT=rfc822;orig+2B" + ok),
        (never, " NOTIFY=NEVER"),
        (fail_only, " NOTIFY=FAILURE"),
        (gone, " NOTIFY=SUCCESS")], m)
    plain.wait_accepted(m)
    msgs = d.wait_dsn(ng, m)
    d.steady(lambda: len(h.mailbox_files(ng, "example.test", m)) == 1, 1,
             "one report (the refused recipient asked for SUCCESS only)")
    raw, msg = msgs[0]
    assert msg["Subject"] == "Successful Mail Delivery Report", msg["Subject"]
    assert msg["From"].startswith("Mail Delivery System")
    human, blocks, returned = d.dsn_parts(msg)
    assert d.field(blocks[0], "Original-Envelope-Id") == "env+" + m
    assert len(blocks) == 2, [dict(b) for b in blocks]
    rb = d.recipient_block(blocks, ok)
    assert d.field(rb, "Action") == "relayed", rb
    assert d.field(rb, "Status") == "2.0.0", rb
    assert d.field(rb, "Original-Recipient") == "rfc822; orig+" + ok, rb
    assert d.field(rb, "Remote-MTA") == "dns; 127.0.0.6", rb
    assert returned and m in returned
    assert raw.startswith(b"Return-Path: <>")


def test_delivered_dsn(world):
    ng, dsn, plain = world
    m = h.unique("delivered")
    rcpt, never = "%s@example.test" % m, "%s-never@example.test" % m
    send(ng, "%s-sender@example.test" % m, " RET=FULL ENVID=e" + m, [
        (rcpt, " NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;" + rcpt),
        (never, " NOTIFY=NEVER")], m)
    h.wait_delivered(ng, "example.test", m)
    msgs = d.wait_dsn(ng, m + "-sender")
    raw, msg = msgs[0]
    human, blocks, returned = d.dsn_parts(msg)
    assert d.field(blocks[0], "Original-Envelope-Id") == "e" + m
    assert len(blocks) == 2, [dict(b) for b in blocks]
    rb = d.recipient_block(blocks, rcpt)
    assert d.field(rb, "Action") == "delivered", rb
    assert d.field(rb, "Status") == "2.0.0", rb
    assert d.field(rb, "Original-Recipient") == "rfc822; " + rcpt, rb
    assert not d.field(rb, "Remote-MTA"), rb
    # RET=FULL: a success returns the header only
    parts = [p.get_content_type() for p in msg.get_payload()]
    assert parts[-1] == "text/rfc822-headers", parts
    assert "body " + m not in (returned or ""), returned


def test_never_is_never_notified(world):
    ng, dsn, plain = world
    m = h.unique("never")
    send(ng, m + "@example.test", "", [
        ("gone-%s@nodsn.example" % m, " NOTIFY=NEVER"),
        ("%s-local@example.test" % m, " NOTIFY=NEVER")], m)
    h.wait_delivered(ng, "example.test", m + "-local")
    d.steady(lambda: not h.mailbox_files(ng, "example.test", m), 2,
             "no DSN for NOTIFY=NEVER")


def test_failure_dsn_decodes_envid_and_orcpt(world):
    ng, dsn, plain = world
    m = h.unique("faildec")
    gone = "gone-%s@nodsn.example" % m
    send(ng, m + "@example.test", " ENVID=a+2Bb+0D+0Ac" + m,
         [(gone, " ORCPT=rfc822;o+2B" + gone)], m)
    raw, msg = d.wait_dsn(ng, m)[0]
    human, blocks, returned = d.dsn_parts(msg)
    # "+2B" decodes; a CR or LF stays encoded, never a line of its own
    assert d.field(blocks[0], "Original-Envelope-Id") == "a+b+0D+0Ac" + m
    rb = d.recipient_block(blocks, gone)
    assert d.field(rb, "Action") == "failed"
    assert d.field(rb, "Original-Recipient") == "rfc822; o+" + gone
