"""
BDAT towards other servers (RFC 3030): to a server offering CHUNKING the
relay sends the message as "BDAT <size> LAST", byte for byte as queued (no
dot-stuffing, bare LF and a missing last line end kept), DATA otherwise;
BODY=BINARYMIME (accepted only with BDAT) goes on to a server offering
BINARYMIME and CHUNKING, and fails with 5.6.3 towards one that does not.
"""

import re

import pytest

import deliveryharness as d
import relayharness as h


@pytest.fixture(scope="module")
def world(tmp_path_factory, certs):
    port = d.alloc_port(("127.0.0.1", "127.0.0.5", "127.0.0.6",
                         "127.0.0.7"))
    sinks = {
        "chunk": d.Sink("127.0.0.5", port, name="chunk",
                        ehlo_ext=d.DEFAULT_EXT + ("CHUNKING",)).start(),
        "binary": d.Sink("127.0.0.6", port, name="binary",
                         ehlo_ext=d.DEFAULT_EXT
                         + ("CHUNKING", "BINARYMIME")).start(),
        "plain": d.Sink("127.0.0.7", port, name="plain").start(),
    }
    lines = d.conf_lines(d.alloc_port(), port, routes=[
        ("chunk.example", "[127.0.0.5]"), ("binary.example", "[127.0.0.6]"),
        ("plain.example", "[127.0.0.7]")])
    ng = h.launch(tmp_path_factory, certs, "bdatout",
                  stream_extra=d.stream_extra(lines))
    yield ng, sinks
    ng.stop()
    ng.assert_log_clean()
    for s in sinks.values():
        s.stop()


def send_data(ng, rcpt, body, sender="p@example.org"):
    with h.SMTPConn(ng.port("main")) as c:
        c.ehlo("bdat.client.test")
        c.expect("MAIL FROM:<%s>" % sender, 250)
        c.expect("RCPT TO:<%s>" % rcpt, 250)
        assert c.cmd("DATA").code == 354
        r = c.send_data(body)
        assert r.queue_id, r
        c.cmd("QUIT")
        return r.queue_id


def send_bdat(ng, rcpt, body, mail_params="", sender="p@example.org"):
    with h.SMTPConn(ng.port("main")) as c:
        c.ehlo("bdat.client.test")
        c.expect("MAIL FROM:<%s>%s" % (sender, mail_params), 250)
        c.expect("RCPT TO:<%s>" % rcpt, 250)
        c.send(b"BDAT %d LAST\r\n" % len(body) + body)
        r = c.reply()
        assert r.queue_id, r
        c.cmd("QUIT")
        return r.queue_id


def test_data_in_bdat_out_byte_identical(world):
    ng, sinks = world
    m = h.unique("bdatout")
    body = ("Subject: %s\r\n\r\n.\r\n..two dots\r\n. \r\nend\r\n"
            % m).encode()
    qid = send_data(ng, "%s@chunk.example" % m, body)
    txn = sinks["chunk"].wait_accepted(m)[0]
    assert txn.via == "BDAT", txn
    assert txn.data.endswith(b"\r\n" + body), txn.data[-200:]
    cmds = [c for c in txn.session.commands if c.upper().startswith("BDAT")]
    assert cmds == ["BDAT %d LAST" % len(txn.data)], cmds
    assert not re.search(r"(?i)BODY=", txn.mail_params), txn.mail_params
    d.wait_status(ng, qid, "%s@chunk.example" % m, "sent")


def test_bdat_in_bdat_out_keeps_every_octet(world):
    ng, sinks = world
    m = h.unique("bdatraw")
    body = ("Subject: %s\r\n\r\nbare\nLF\rCR\r\n.\r\nno last line end"
            % m).encode()
    send_bdat(ng, "%s@chunk.example" % m, body)
    txn = sinks["chunk"].wait_accepted(m)[0]
    assert txn.via == "BDAT" and txn.data.endswith(b"\r\n" + body), \
        txn.data[-200:]


def test_server_without_chunking_gets_data(world):
    ng, sinks = world
    m = h.unique("nochunk")
    body = ("Subject: %s\r\n\r\n.dot\r\n" % m).encode()
    send_data(ng, "%s@plain.example" % m, body)
    txn = sinks["plain"].wait_accepted(m)[0]
    assert txn.via == "DATA" and txn.data.endswith(b"\r\n" + body), txn


def test_binarymime_passed_on(world):
    ng, sinks = world
    m = h.unique("binary")
    body = ("Subject: %s\r\n\r\n" % m).encode() + bytes(range(256)) * 4
    send_bdat(ng, "%s@binary.example" % m, body, " BODY=BINARYMIME")
    txn = sinks["binary"].wait_accepted(m)[0]
    assert re.search(r"(?i)\bBODY=BINARYMIME\b", txn.mail_params), \
        txn.mail_params
    assert txn.via == "BDAT" and txn.data.endswith(b"\r\n" + body)


def test_binarymime_to_a_server_without_it_fails(world):
    ng, sinks = world
    m = h.unique("binfail")
    rcpt = "%s@chunk.example" % m
    qid = send_bdat(ng, rcpt, ("Subject: %s\r\n\r\n\0\r\n" % m).encode(),
                    " BODY=BINARYMIME", sender=m + "@example.test")
    line = d.wait_status(ng, qid, rcpt, "bounced")[0]
    assert line["dsn"] == "5.6.3", line["line"]
    assert not sinks["chunk"].all_txns(m)
    raw, msg = d.wait_dsn(ng, m)[0]
    human, blocks, returned = d.dsn_parts(msg)
    assert d.field(d.recipient_block(blocks, rcpt), "Status") == "5.6.3"


def test_binarymime_needs_bdat(smtp):
    c = smtp()
    r, ext = c.ehlo()
    assert "BINARYMIME" in ext and "CHUNKING" in ext, r
    c.expect("MAIL FROM:<p@example.org> BODY=BINARYMIME", 250, "2.1.0")
    c.expect("RCPT TO:<u@example.test>", 250)
    c.expect("DATA", 503, "5.5.1")
