"""
Outbound delivery: the relay as an SMTP client.

A module-scoped "world" runs a dnsmasq (MX, null MX, A-only, NXDOMAIN,
SERVFAIL and never-answering names) and SMTP sinks on 127.0.0.2-30 (one MX
port P for every MX host, since relay_smtp_port is global; a second port P2
for static routes and the fallback relay).  One nginx (`drelay`) with
relay_delivery on serves most tests; the kill -9, queue lifetime and
fallback relay tests start their own (`fresh`).  Every message has a unique
marker in its recipients, sender and Subject so tests never see each
other's mail; senders of messages that may bounce are local
(<x>@example.test), so DSNs land in maildir/example.test/<x>/new/.

The whole file is skipped when the module does not know `relay_delivery`
(probed with nginx -t).  A delivery directive it refuses is left out of the
configuration and the tests needing it fail, naming it.
"""

import email.utils
import os
import re
import signal
import threading
import time
import warnings

import pytest

import relayharness as h
import deliveryharness as dh


if not os.path.exists(h.RELAY_MODULE):
    pytest.skip("relay module not built: %s" % h.RELAY_MODULE,
                allow_module_level=True)
if not os.path.exists(dh.DNSMASQ):
    pytest.skip("dnsmasq (dnsmasq-base) is not installed",
                allow_module_level=True)
_PROBE = dh.nginx_t(["relay_delivery on;"])
if _PROBE and 'unknown directive "relay_delivery"' in _PROBE:
    pytest.skip("outbound delivery not implemented yet: nginx -t says %s"
                % _PROBE.strip(), allow_module_level=True)


SENT_TIMEOUT = 15           # a reachable sink gets the message within this
DEAD1, DEAD2 = "127.0.0.4", "127.0.0.8"     # nothing listens on port P


# --------------------------------------------------------------------------
# the world: DNS + sinks


def reject_hooks():
    """Replies of the sink of reject.test, chosen by local-part prefix:
    bad* 550 at RCPT, temp* 450 at the first RCPT then 250, close* 421 (and
    the connection closes) at the first RCPT, lt* 451 always, dataperm* 554
    at the end of data, datatemp* 451 at the first end of data then 250; a
    sender mailperm* gets 553 at MAIL, mailtemp* 451 at its first MAIL."""
    lock = threading.Lock()
    seen = {}

    def first(key):
        with lock:
            seen[key] = seen.get(key, 0) + 1
            return seen[key] == 1

    def mail(sess, txn, sender):
        if sender.lower().startswith("mailperm"):
            return "553 5.7.1 <%s>: sender refused by sink-reject" % sender
        if sender.lower().startswith("mailtemp") and first(("mail", sender)):
            return "451 4.3.2 <%s>: sink-reject not now" % sender
        return None

    def rcpt(sess, txn, addr):
        local = addr.split("@")[0].lower()
        if local.startswith("bad"):
            return "550 5.1.1 <%s>: recipient unknown at sink-reject" % addr
        if local.startswith("lt"):
            return "451 4.3.0 <%s>: sink-reject is having a bad day" % addr
        if local.startswith("temp") and first(("rcpt", addr)):
            return "450 4.2.1 <%s>: mailbox busy at sink-reject" % addr
        if local.startswith("close") and first(("rcpt", addr)):
            return "421 4.7.0 sink-reject closing the connection"
        return None

    def dot(sess, txn, _):
        locals_ = [r.split("@")[0].lower() for r in txn.rcpts]
        if any(l.startswith("dataperm") for l in locals_):
            return "554 5.6.0 content rejected by sink-reject"
        if any(l.startswith("datatemp") for l in locals_) \
                and first(("dot", tuple(txn.rcpts))):
            return "451 4.3.0 sink-reject data temp failure"
        return None

    return dict(mail_reply=mail, rcpt_reply=rcpt, dot_reply=dot)


class World:
    # sink name -> (address, port "P"/"P2", Sink keyword arguments)
    HOSTILE = {
        "garbage": dh.script_garbage,
        "gehlo": dh.script_garbage_ehlo,
        "overlong": dh.script_overlong,
        "unterminated": dh.script_unterminated,
        "endless": dh.script_endless_multiline,
        "midclose": dh.script_close_midreply,
    }

    def __init__(self, workdir, certs, refused):
        self.workdir = workdir
        self.certs = certs
        self.refused = refused          # directive -> nginx -t complaint
        ips = ["127.0.0.%d" % i for i in range(1, 31)]
        if "relay_smtp_port" in refused:
            # the module cannot be told the MX port: MX sinks on 25 so the
            # other tests still say something (and
            # test_delivery_directives_accepted fails)
            if not dh.tcp_port_free(25, ips):
                pytest.fail("relay_smtp_port is refused (%s) and port 25 is "
                            "busy on 127.0.0.1-30 (another run?): the relay "
                            "would deliver to someone else's servers"
                            % refused["relay_smtp_port"])
            self.P = 25
        else:
            self.P = dh.alloc_port(ips)
        self.P2 = dh.alloc_port(ips)
        tls = dh.tls_server_context(certs)
        plan = {
            "pref1": ("127.0.0.2", "P", {}),
            "pref2": ("127.0.0.3", "P", {}),
            "prefdown2": ("127.0.0.5", "P", {}),
            "eqa": ("127.0.0.6", "P", {}),
            "eqb": ("127.0.0.7", "P", {}),
            "bk421": ("127.0.0.9", "P",
                      {"greeting": "421 4.3.2 mx1.bk4xx busy, try later"}),
            "bk450": ("127.0.0.10", "P",
                      {"greeting": "450 4.3.2 mx2.bk4xx overloaded"}),
            "backup": ("127.0.0.11", "P", {}),
            "implicit": ("127.0.0.12", "P", {}),
            "reject": ("127.0.0.13", "P", reject_hooks()),
            "multi": ("127.0.0.14", "P", {}),
            "updown": ("127.0.0.15", "P", {}),
            "kill": ("127.0.0.16", "P", {}),
            "tls": ("127.0.0.17", "P", {"tls_context": tls}),
            "garbage": ("127.0.0.18", "P", {}),
            "overlong": ("127.0.0.19", "P", {}),
            "unterminated": ("127.0.0.20", "P", {}),
            "splitml": ("127.0.0.21", "P", {"split": 3}),
            "silent": ("127.0.0.22", "P", {"silent": True}),
            "endless": ("127.0.0.23", "P", {}),
            "midclose": ("127.0.0.24", "P", {}),
            "dotsilent": ("127.0.0.25", "P", {"dot_reply": dh.SILENT}),
            "bksilent": ("127.0.0.26", "P", {"silent": True}),
            "gehlo": ("127.0.0.27", "P", {}),
            "plain": ("127.0.0.28", "P", {"ehlo_ext": ("SIZE 4000",)}),
            "chunking": ("127.0.0.29", "P", {
                "ehlo_ext": dh.DEFAULT_EXT + ("CHUNKING", "SMTPUTF8")}),
            "helo": ("127.0.0.30", "P", {"helo_only": True}),
            "static": ("127.0.0.2", "P2", {}),
            "hop": ("127.0.0.3", "P2", {}),
            "fallback": ("127.0.0.4", "P2", {}),
        }
        self.sinks = {}
        self.ip = {}
        for name, (ip, port, kw) in plan.items():
            if name in self.HOSTILE:
                kw = dict(kw, script=self.HOSTILE[name])
            self.sinks[name] = dh.Sink(ip, self.P if port == "P" else self.P2,
                                       name, **kw)
            self.ip[name] = ip

        z = dh.Zone()
        z.add_mx("pref.test", "mx1.pref.test", 10, "127.0.0.2")
        z.add_mx("pref.test", "mx2.pref.test", 20, "127.0.0.3")
        z.add_mx("prefdown.test", "mx1.prefdown.test", 10, DEAD1)
        z.add_mx("prefdown.test", "mx2.prefdown.test", 20, "127.0.0.5")
        z.add_mx("equal.test", "mxa.equal.test", 10, "127.0.0.6")
        z.add_mx("equal.test", "mxb.equal.test", 10, "127.0.0.7")
        z.add_mx("bkrefuse.test", "mx1.bkrefuse.test", 10, DEAD1)
        z.add_mx("bkrefuse.test", "mx2.bkrefuse.test", 20, DEAD2)
        z.add_mx("bk4xx.test", "mx1.bk4xx.test", 10, "127.0.0.9")
        z.add_mx("bk4xx.test", "mx2.bk4xx.test", 20, "127.0.0.10")
        z.add_mx("bksilent.test", "mx1.bksilent.test", 10, "127.0.0.26")
        z.add_a("implicit.test", "127.0.0.12")
        z.null_mx("nullmx.test")
        z.servfail.append("servfail.test")
        z.timeout.append("dnstimeout.test")
        z.add_mx("deadmx.test", "mx.deadmx.test", 10, DEAD2)
        z.add_mx("hop.test", "mx.hop.test", 10, "127.0.0.3")
        z.add_mx("loop.test", "relay.test", 10)     # relay_hostname
        for name in ("reject", "multi", "updown", "kill", "tls", "garbage",
                     "overlong", "unterminated", "splitml", "silent",
                     "endless", "midclose", "dotsilent", "gehlo", "plain",
                     "chunking", "helo"):
            z.add_mx("%s.test" % name, "mx.%s.test" % name, 10,
                     self.ip[name])
        # static.test and routed.test are in no DNS record: NXDOMAIN
        self.dns = dh.DnsServer(workdir / "dns", z)

    def start(self):
        self.dns.start()
        for name, s in self.sinks.items():
            if name != "updown":            # starts refusing connections
                s.start()
        return self

    def stop(self):
        for s in self.sinks.values():
            s.stop()
        self.dns.stop()

    def conf(self, **kw):
        args = dict(
            routes=[("static.test", "[127.0.0.2]:%d" % self.P2),
                    ("routed.test", "hop.test:%d" % self.P2),
                    ("failover.test", "[127.0.0.9]:%d [127.0.0.2]:%d"
                     % (self.P, self.P))],
            backups=[(d, "[127.0.0.11]:%d" % self.P)
                     for d in ("bkrefuse.test", "bk4xx.test",
                               "bksilent.test")])
        args.update(kw)
        return dh.conf_lines(self.dns.port, self.P, **args)


@pytest.fixture(scope="module")
def world(tmp_path_factory, certs):
    refused = dh.probe(dh.conf_lines(
        53, 2525, routes=[("a.test", "[127.0.0.2]:2526"),
                          ("b.test", "hop.test:2526")],
        backups=[("c.test", "[127.0.0.11]:2525")],
        fallback="[127.0.0.4]:2526"))
    w = World(tmp_path_factory.mktemp("delivery-world"), certs, refused)
    w.start()
    yield w
    w.stop()


def need(world, *directives):
    for d in directives:
        if d in world.refused:
            pytest.fail("the module refuses %s: %s" % (d, world.refused[d]))


def start_relay(world, prefix, **conf):
    lines = [(n, l) for n, l in world.conf(**conf)
             if n not in world.refused]
    return h.launch_at(prefix, workers=2, stream_extra=dh.stream_extra(lines))


def finish(ng):
    ng.stop()
    ng.assert_log_clean()
    ng.assert_no_crash()


@pytest.fixture(scope="module")
def drelay(world, tmp_path_factory, certs):
    need(world, "relay_delivery", "relay_resolver")
    prefix = h.make_prefix(tmp_path_factory.mktemp("delivery"), certs)
    ng = start_relay(world, prefix)
    yield ng
    finish(ng)


@pytest.fixture
def fresh(world, request, tmp_path_factory, certs):
    started = []

    def launch(**conf):
        prefix = h.make_prefix(
            tmp_path_factory.mktemp(request.node.name[:40]), certs)
        ng = start_relay(world, prefix, **conf)
        started.append(ng)
        return ng

    yield launch
    for ng in started:
        finish(ng)


# --------------------------------------------------------------------------
# helpers


def body_for(marker, extra=b""):
    return ("From: <sender@example.test>\r\nTo: <rcpt@remote.test>\r\n"
            "Subject: delivery test %s\r\nMessage-ID: <%s@client.test>\r\n"
            "\r\nbody %s\r\n.leading dot\r\n..two dots\r\n.\r\n"
            "last line\r\n" % (marker, marker, marker)).encode() + extra


def send(ng, sender, rcpts, body, mail_params="", rcpt_params=None,
         ehlo="client.test"):
    """One transaction to the trusted server; returns the queue id."""
    rcpt_params = rcpt_params or {}
    with h.SMTPConn(ng.port("main")) as c:
        c.ehlo(ehlo)
        r = c.cmd("MAIL FROM:<%s>%s" % (sender, mail_params))
        assert r.code == 250, "MAIL -> %r" % r
        for a in rcpts:
            r = c.cmd("RCPT TO:<%s>%s" % (a, rcpt_params.get(a, "")))
            assert r.code == 250, "RCPT %s -> %r" % (a, r)
        r = c.cmd("DATA")
        assert r.code == 354, "DATA -> %r" % r
        r = c.send_data(body)
        assert r.code == 250 and r.queue_id, "end of data -> %r" % r
        c.cmd("QUIT")
        return r.queue_id


steady = dh.steady


def check_sent_line(world, line, ip, port=None):
    port = port or world.P
    assert "[%s]:%d" % (ip, port) in line["relay"], \
        "relay= of %r is not [%s]:%d" % (line["line"], ip, port)
    assert line["dsn"].startswith("2."), line["line"]


def check_copy(world, txn, sender, rcpts, body):
    assert txn.sender == sender, txn
    assert txn.rcpts == rcpts, txn
    assert txn.helo == "relay.test", \
        "EHLO name %r, expected relay_hostname relay.test" % txn.helo
    assert txn.data.endswith(body), \
        "content changed on the way (dot-stuffing?): ...%r" % txn.data[-300:]
    head = txn.data[:len(txn.data) - len(body)]
    assert b"Received: " in head and b"relay.test" in head, \
        "no Received: by relay.test before the message: %r" % head[:300]


def no_dsn_for(ng, user, marker, secs=3):
    """Neither a Maildir of user nor any spool/Maildir file gets the marker
    during secs (after the bounce was logged)."""
    steady(lambda: not h.mailbox_files(ng, "example.test", user)
           and not h.files_containing(ng.maildir, marker),
           secs, "a DSN was delivered for %s" % marker)
    h.wait_until(lambda: not h.files_containing(ng.spool, marker), 5,
                 what="the spool to forget %s (a DSN queued?)" % marker)


def check_dsn(world, msg, data, sender, rcpt, status_re, diag=None,
              remote_ip=None, marker=None):
    """The RFC 3464 checks of a failure DSN for rcpt."""
    assert data.startswith(b"Return-Path: <>\r\n"), \
        "DSN envelope sender is not <>: %r" % data[:120]
    assert sender.lower() in (msg.get("To") or "").lower(), \
        "DSN To: %r, expected %s" % (msg.get("To"), sender)
    human, blocks, returned = dh.dsn_parts(msg)
    text = human.get_payload(decode=True) or b""
    cs = (human.get_content_charset() or "us-ascii").lower()
    if any(c > 127 for c in text):
        assert cs in ("utf-8", "utf8"), \
            "human-readable DSN part is charset=%s but holds 8-bit text: " \
            "%r" % (cs, text[:300])
    per_msg = blocks[0]
    rmta = dh.field(per_msg, "Reporting-MTA")
    assert rmta.lower().startswith("dns;") and "relay.test" in rmta, \
        "Reporting-MTA: %r" % rmta
    arrival = dh.field(per_msg, "Arrival-Date")
    assert arrival and email.utils.parsedate_tz(arrival), \
        "Arrival-Date: %r" % arrival
    b = dh.recipient_block(blocks, rcpt)
    fr = dh.field(b, "Final-Recipient")
    assert re.match(r"(?i)(rfc822|utf-8);\s*", fr), "Final-Recipient %r" % fr
    assert dh.field(b, "Action").strip().lower() == "failed", \
        "Action: %r" % dh.field(b, "Action")
    st = dh.field(b, "Status").strip()
    assert re.fullmatch(status_re, st), \
        "Status: %r, expected %s" % (st, status_re)
    if remote_ip:
        rm = dh.field(b, "Remote-MTA")
        assert rm.lower().startswith("dns;") and rm.strip(), \
            "Remote-MTA: %r" % rm
    if diag:
        dc = re.sub(r"\s+", " ", dh.field(b, "Diagnostic-Code"))
        assert dc.lower().startswith("smtp;") and diag in dc, \
            "Diagnostic-Code: %r, expected smtp; ...%s..." % (dc, diag)
    if marker:
        assert returned and marker in returned, \
            "original headers not returned: %r" % (returned or "")[:500]
    return b


# --------------------------------------------------------------------------
# configuration


def test_delivery_directives_accepted(world):
    """nginx -t accepts every delivery directive as the brief spells it."""
    assert not world.refused, "refused directives:\n" + "\n".join(
        "%s: %s" % kv for kv in sorted(world.refused.items()))


# --------------------------------------------------------------------------
# MX selection


def test_mx_preference_primary(drelay, world):
    m = h.unique("pref")
    sender, rcpt, body = "snd-%s@example.test" % m, "%s@pref.test" % m, \
        body_for(m)
    qid = send(drelay, sender, [rcpt], body)
    (t,) = world.sinks["pref1"].wait_accepted(m, timeout=SENT_TIMEOUT)
    check_copy(world, t, sender, [rcpt], body)
    assert not world.sinks["pref2"].all_txns(m), \
        "the pref 20 MX got mail although pref 10 was up"
    (line,) = dh.wait_status(drelay, qid, rcpt, "sent")
    check_sent_line(world, line, "127.0.0.2")
    assert "mx1.pref.test" in line["relay"], line["line"]
    dh.wait_queue_gone(drelay, qid)


def test_mx_preference_secondary_when_primary_refuses(drelay, world):
    m = h.unique("pdown")
    sender, rcpt, body = "snd-%s@example.test" % m, \
        "%s@prefdown.test" % m, body_for(m)
    qid = send(drelay, sender, [rcpt], body)
    (t,) = world.sinks["prefdown2"].wait_accepted(m, timeout=SENT_TIMEOUT)
    check_copy(world, t, sender, [rcpt], body)
    line = dh.wait_status(drelay, qid, rcpt, "sent")[-1]
    check_sent_line(world, line, "127.0.0.5")
    dh.wait_queue_gone(drelay, qid)


def test_equal_preference_spreads(fresh, world):
    # P(all 20 on one of 2 hosts) = 2 / 2**20 < 2e-6 for a fair choice;
    # without connection reuse, each message picks a host anew
    ng = fresh(extra=["relay_connection_reuse off;"])
    m = h.unique("eq")
    n = 20
    with h.SMTPConn(ng.port("main")) as c:
        c.ehlo("client.test")
        for i in range(n):
            c.message("snd-%s@example.test" % m, ["%s-%d@equal.test" % (m, i)],
                      body_for("%s-%d" % (m, i)))
        c.cmd("QUIT")
    a, b = world.sinks["eqa"], world.sinks["eqb"]
    h.wait_until(lambda: len(a.accepted(m)) + len(b.accepted(m)) >= n, 30,
                 what="%d messages at the two equal MX (got %d + %d)"
                 % (n, len(a.accepted(m)), len(b.accepted(m))))
    got = [r for t in a.accepted(m) + b.accepted(m) for r in t.rcpts]
    assert sorted(got) == sorted("%s-%d@equal.test" % (m, i)
                                 for i in range(n)), "duplicates: %r" % got
    na, nb = len(a.accepted(m)), len(b.accepted(m))
    warnings.warn("equal preference: mxa got %d, mxb got %d of %d messages "
                  "(connections %d / %d)" % (na, nb, n, a.connections,
                                            b.connections))
    assert na > 0 and nb > 0, \
        "all %d messages went to one of two equal-preference MX " \
        "(mxa %d, mxb %d)" % (n, na, nb)


@pytest.mark.parametrize("mode", ["refuse", "4xx", "silent"])
def test_backup_mx_after_every_mx_failed(drelay, world, mode):
    need(world, "relay_backup_mx")
    domain = {"refuse": "bkrefuse.test", "4xx": "bk4xx.test",
              "silent": "bksilent.test"}[mode]
    watch = {"refuse": [], "4xx": ["bk421", "bk450"],
             "silent": ["bksilent"]}[mode]
    before = {s: world.sinks[s].connections for s in watch}
    m = h.unique("bk" + mode)
    sender, rcpt, body = "snd-%s@example.test" % m, "%s@%s" % (m, domain), \
        body_for(m)
    qid = send(drelay, sender, [rcpt], body)
    (t,) = world.sinks["backup"].wait_accepted(m, timeout=20)
    check_copy(world, t, sender, [rcpt], body)
    for s in watch:
        assert world.sinks[s].connections > before[s], \
            "MX %s was not tried before the backup MX" % s
    line = dh.wait_status(drelay, qid, rcpt, "sent")[-1]
    check_sent_line(world, line, "127.0.0.11")
    dh.wait_queue_gone(drelay, qid)


def test_implicit_mx_from_a_record(drelay, world):
    m = h.unique("impl")
    sender, rcpt, body = "snd-%s@example.test" % m, "%s@implicit.test" % m, \
        body_for(m)
    qid = send(drelay, sender, [rcpt], body)
    (t,) = world.sinks["implicit"].wait_accepted(m, timeout=SENT_TIMEOUT)
    check_copy(world, t, sender, [rcpt], body)
    line = dh.wait_status(drelay, qid, rcpt, "sent")[-1]
    check_sent_line(world, line, "127.0.0.12")
    dh.wait_queue_gone(drelay, qid)


@pytest.mark.parametrize("domain,dsn,reason", [
    ("nullmx.test", "5.1.10", "null MX: the domain accepts no mail (RFC 7505)"),
    # RFC 5321 5.1: the only MX is this host, so the mail would loop
    ("loop.test", "5.4.6", "mail for the domain loops back to myself"),
])
def test_null_mx_or_mx_loop_bounces(drelay, world, domain, dsn, reason):
    m = h.unique("nomx")
    sender, rcpt = "%s@example.test" % m, "%s@%s" % (m, domain)
    qid = send(drelay, sender, [rcpt], body_for(m))
    line = dh.wait_status(drelay, qid, rcpt, "bounced")[-1]
    assert line["dsn"] == dsn and line["reason"] == reason, line["line"]
    ((data, msg),) = dh.wait_dsn(drelay, m)
    check_dsn(world, msg, data, sender, rcpt, re.escape(dsn), marker=m)
    dh.wait_queue_gone(drelay, qid)
    assert len(dh.delivery_lines(drelay, qid, rcpt, "bounced")) == 1


def test_nxdomain_bounces(drelay, world):
    m = h.unique("nxd")
    sender, rcpt = "%s@example.test" % m, "%s@no-such-domain.test" % m
    qid = send(drelay, sender, [rcpt], body_for(m))
    # RFC 5321 5.1: a domain that does not exist is a permanent failure
    line = dh.wait_status(drelay, qid, rcpt, "bounced", timeout=8)[-1]
    assert line["dsn"].startswith("5."), line["line"]
    ((data, msg),) = dh.wait_dsn(drelay, m)
    check_dsn(world, msg, data, sender, rcpt, r"5\.\d{1,3}\.\d{1,3}",
              marker=m)


@pytest.mark.parametrize("domain,first_timeout,retries", [
    ("servfail.test", 10, 2),
    ("dnstimeout.test", 25, 1),
])
def test_dns_failure_defers(drelay, world, domain, first_timeout, retries):
    m = h.unique("dns")
    sender, rcpt = "%s@example.test" % m, "%s@%s" % (m, domain)
    qid = send(drelay, sender, [rcpt], body_for(m))
    lines = dh.wait_status(drelay, qid, rcpt, "deferred",
                           timeout=first_timeout * retries, count=retries)
    for l in lines:
        assert l["dsn"].startswith("4."), l["line"]
    assert any(q[0] == domain for q in world.dns.stub.queries), \
        "the relay never asked the DNS about %s" % domain
    assert not dh.delivery_lines(drelay, qid, rcpt, "bounced")
    assert not dh.delivery_lines(drelay, qid, rcpt, "sent")
    states = dh.rcpt_states(drelay, qid)
    assert states and states.get(rcpt) == "P", \
        "message not queued with %s pending: %r" % (rcpt, states)
    assert not h.mailbox_files(drelay, "example.test", m), \
        "a DSN for a temporary DNS failure"


# --------------------------------------------------------------------------
# replies of the next hop


def test_rcpt_5xx_dsn(drelay, world):
    m = h.unique("r5")
    sender = "%s@example.test" % m
    good, bad = "good-%s@reject.test" % m, "bad-%s@reject.test" % m
    body = body_for(m)
    qid = send(drelay, sender, [good, bad], body)
    sink = world.sinks["reject"]
    (t,) = sink.wait_accepted(m, timeout=SENT_TIMEOUT)
    check_copy(world, t, sender, [good], body)
    assert [a for a, _, _ in t.rcpt_log] == [good, bad], t.rcpt_log
    dh.wait_status(drelay, qid, good, "sent")
    line = dh.wait_status(drelay, qid, bad, "bounced")[-1]
    assert line["dsn"] == "5.1.1", line["line"]
    assert "recipient unknown at sink-reject" in (line["reason"] or ""), \
        "log line lacks the remote reply: %r" % line["line"]
    assert "127.0.0.13" in line["relay"], line["line"]
    ((data, msg),) = dh.wait_dsn(drelay, m)
    blk = check_dsn(world, msg, data, sender, bad, r"5\.1\.1",
                    diag="550 5.1.1 <%s>: recipient unknown at sink-reject"
                    % bad, remote_ip="127.0.0.13", marker=m)
    rm = dh.field(blk, "Remote-MTA")
    assert "mx.reject.test" in rm or "127.0.0.13" in rm, \
        "Remote-MTA %r names neither mx.reject.test nor 127.0.0.13" % rm
    _, blocks, _ = dh.dsn_parts(msg)
    assert not [b for b in blocks[1:]
                if good.lower() in dh.field(b, "Final-Recipient").lower()], \
        "the delivered recipient is in the DSN"
    dh.wait_queue_gone(drelay, qid)
    h.wait_until(lambda: not h.files_containing(drelay.spool, m), 10,
                 what="the DSN to leave the queue")
    assert len(dh.delivery_lines(drelay, qid, bad, "bounced")) == 1
    assert len(sink.accepted(m)) == 1


def test_rcpt_4xx_retries_only_that_recipient(drelay, world):
    m = h.unique("r4")
    sender = "%s@example.test" % m
    ok, temp = "ok-%s@reject.test" % m, "temp-%s@reject.test" % m
    body = body_for(m)
    qid = send(drelay, sender, [ok, temp], body)
    sink = world.sinks["reject"]
    sink.wait_accepted(m, count=2, timeout=20)
    first, second = sink.accepted(m)[:2]
    check_copy(world, first, sender, [ok], body)
    check_copy(world, second, sender, [temp], body)
    line = dh.wait_status(drelay, qid, temp, "deferred")[0]
    assert line["dsn"] == "4.2.1" and "mailbox busy" in line["reason"], \
        line["line"]
    dh.wait_status(drelay, qid, temp, "sent")
    dh.wait_queue_gone(drelay, qid)
    steady(lambda: len(sink.accepted(m)) == 2, 2,
           "more transactions: %r" % sink.accepted(m))
    assert not h.mailbox_files(drelay, "example.test", m), "DSN after 4xx"


def test_mail_5xx_bounces_every_recipient(drelay, world):
    m = h.unique("mailperm")
    sender = "%s@example.test" % m
    r1, r2 = "a-%s@reject.test" % m, "b-%s@reject.test" % m
    qid = send(drelay, sender, [r1, r2], body_for(m))
    for r in (r1, r2):
        line = dh.wait_status(drelay, qid, r, "bounced")[-1]
        assert line["dsn"] == "5.7.1", line["line"]
    assert not world.sinks["reject"].accepted(m)
    dsns = dh.wait_dsn(drelay, m)
    h.wait_until(lambda: sum(len(dh.dsn_parts(msg)[1]) - 1
                             for _, msg in dh.dsn_messages(drelay, m)) >= 2,
                 10, what="DSN blocks for both recipients")
    dsns = dh.dsn_messages(drelay, m)
    for r in (r1, r2):
        for data, msg in dsns:
            try:
                check_dsn(world, msg, data, sender, r, r"5\.7\.1",
                          diag="sender refused by sink-reject", marker=m)
                break
            except AssertionError as e:
                err = e
        else:
            raise err
    dh.wait_queue_gone(drelay, qid)


def test_mail_4xx_then_delivered_once(drelay, world):
    m = h.unique("mailtemp")
    sender, rcpt = "%s@example.test" % m, "%s@reject.test" % m
    body = body_for(m)
    qid = send(drelay, sender, [rcpt], body)
    sink = world.sinks["reject"]
    (t,) = sink.wait_accepted(m, timeout=20)
    check_copy(world, t, sender, [rcpt], body)
    line = dh.wait_status(drelay, qid, rcpt, "deferred")[0]
    assert line["dsn"] == "4.3.2" and "not now" in line["reason"], \
        line["line"]
    dh.wait_queue_gone(drelay, qid)
    steady(lambda: len(sink.accepted(m)) == 1, 2,
           "delivered again: %r" % sink.accepted(m))
    assert not h.mailbox_files(drelay, "example.test", m), "DSN after 4xx"


def test_rcpt_421_closing_then_delivered_once(drelay, world):
    m = h.unique("c421")
    sender, rcpt = "%s@example.test" % m, "close-%s@reject.test" % m
    body = body_for(m)
    qid = send(drelay, sender, [rcpt], body)
    sink = world.sinks["reject"]
    (t,) = sink.wait_accepted(m, timeout=20)
    check_copy(world, t, sender, [rcpt], body)
    line = dh.wait_status(drelay, qid, rcpt, "deferred")[0]
    assert line["dsn"].startswith("4.") and "closing" in line["reason"], \
        line["line"]
    dh.wait_queue_gone(drelay, qid)
    steady(lambda: len(sink.accepted(m)) == 1, 2,
           "delivered again: %r" % sink.accepted(m))
    assert not h.mailbox_files(drelay, "example.test", m), "DSN after 421"


def test_data_5xx_bounces(drelay, world):
    m = h.unique("dataperm")
    sender, rcpt = "%s@example.test" % m, "dataperm-%s@reject.test" % m
    qid = send(drelay, sender, [rcpt], body_for(m))
    line = dh.wait_status(drelay, qid, rcpt, "bounced")[-1]
    assert line["dsn"] == "5.6.0", line["line"]
    assert [t for t in world.sinks["reject"].all_txns(m) if t.complete]
    ((data, msg),) = dh.wait_dsn(drelay, m)
    check_dsn(world, msg, data, sender, rcpt, r"5\.6\.0",
              diag="554 5.6.0 content rejected by sink-reject", marker=m)
    dh.wait_queue_gone(drelay, qid)


def test_data_4xx_then_delivered_once(drelay, world):
    m = h.unique("datatemp")
    sender, rcpt = "%s@example.test" % m, "datatemp-%s@reject.test" % m
    body = body_for(m)
    qid = send(drelay, sender, [rcpt], body)
    sink = world.sinks["reject"]
    (t,) = sink.wait_accepted(m, timeout=20)
    check_copy(world, t, sender, [rcpt], body)
    line = dh.wait_status(drelay, qid, rcpt, "deferred")[0]
    assert line["dsn"] == "4.3.0", line["line"]
    dh.wait_status(drelay, qid, rcpt, "sent")
    dh.wait_queue_gone(drelay, qid)
    steady(lambda: len(sink.accepted(m)) == 1, 2,
           "delivered again: %r" % sink.accepted(m))


def test_null_sender_failure_no_dsn(drelay, world):
    m = h.unique("nullsnd")
    rcpt = "bad-%s@reject.test" % m
    qid = send(drelay, "", [rcpt], body_for(m))
    line = dh.wait_status(drelay, qid, rcpt, "bounced")[-1]
    assert line["dsn"] == "5.1.1", line["line"]
    dh.wait_queue_gone(drelay, qid)
    no_dsn_for(drelay, "postmaster", m)
    assert not h.files_containing(drelay.maildir, m)


def test_notify_never_no_dsn(drelay, world):
    m = h.unique("never")
    sender, rcpt = "%s@example.test" % m, "bad-%s@reject.test" % m
    qid = send(drelay, sender, [rcpt], body_for(m),
               rcpt_params={rcpt: " NOTIFY=NEVER"})
    dh.wait_status(drelay, qid, rcpt, "bounced")
    dh.wait_queue_gone(drelay, qid)
    no_dsn_for(drelay, m, m)


def test_queue_lifetime_expiry_dsn(fresh, world):
    ng = fresh(lifetime="6s")
    m = h.unique("life")
    sender, rcpt = "%s@example.test" % m, "lt-%s@reject.test" % m
    t0 = time.monotonic()
    qid = send(ng, sender, [rcpt], body_for(m))
    first = dh.wait_status(ng, qid, rcpt, "deferred")[0]
    assert first["dsn"] == "4.3.0", first["line"]
    line = dh.wait_status(ng, qid, rcpt, "bounced", timeout=25)[-1]
    assert time.monotonic() - t0 >= 5.5, \
        "bounced after %.1fs, lifetime is 6s" % (time.monotonic() - t0)
    assert float(line["delay"]) >= 5, line["line"]
    ((data, msg),) = dh.wait_dsn(ng, m)
    blk = check_dsn(world, msg, data, sender, rcpt, r"[45]\.\d{1,3}\.\d{1,3}",
                    marker=m)
    last = "451 4.3.0 <%s>: sink-reject is having a bad day" % rcpt
    dc = re.sub(r"\s+", " ", dh.field(blk, "Diagnostic-Code"))
    assert last in dc, \
        "the DSN does not carry the last error %r: Diagnostic-Code %r" \
        % (last, dc)
    assert last in line["reason"], \
        "the bounce log line does not carry the last error %r: %r" \
        % (last, line["line"])
    dh.wait_queue_gone(ng, qid)
    bounced = dh.delivery_lines(ng, qid, rcpt, "bounced")
    assert len(bounced) == 1, "bounced %d times:\n%s" % (
        len(bounced), "\n".join(l["line"] for l in bounced))


# --------------------------------------------------------------------------
# retries and crashes


def test_sink_down_then_up_delivered_once(drelay, world):
    sink = world.sinks["updown"]
    assert not sink.listening
    m = h.unique("updown")
    sender, rcpt, body = "%s@example.test" % m, "%s@updown.test" % m, \
        body_for(m)
    qid = send(drelay, sender, [rcpt], body)
    line = dh.wait_status(drelay, qid, rcpt, "deferred")[0]
    assert "127.0.0.15" in line["relay"] and line["dsn"].startswith("4."), \
        line["line"]
    assert dh.rcpt_states(drelay, qid) == {rcpt: "P"}
    sink.start()
    (t,) = sink.wait_accepted(m, timeout=20)
    check_copy(world, t, sender, [rcpt], body)
    dh.wait_queue_gone(drelay, qid)
    steady(lambda: len(sink.accepted(m)) == 1, 3,
           "delivered more than once: %r" % sink.accepted(m))
    assert len(dh.delivery_lines(drelay, qid, rcpt, "sent")) == 1
    assert not h.mailbox_files(drelay, "example.test", m)


@pytest.mark.parametrize("stage", ["before-354", "end-of-data", "after-250"])
def test_kill9_during_delivery(fresh, world, stage):
    """kill -9 of nginx while the sink holds the delivery at `stage`, then
    a restart.  before-354 must give exactly one copy; end-of-data (the
    sink has the whole message but has not answered) and after-250 (the
    sink answered, nginx dies right after) are the RFC 1047 window: one or
    two copies, reported as a warning."""
    ng = fresh()
    sink = world.sinks["kill"]
    sink.reset_holds()
    killed = threading.Event()
    m = h.unique("kill")
    sender, rcpt, body = "%s@example.test" % m, "%s@kill.test" % m, \
        body_for(m)
    if stage == "before-354":
        sink.hold_data = threading.Event()
    elif stage == "end-of-data":
        sink.hold_dot = threading.Event()
    else:
        def kill_now(sess, txn):
            if txn.sender == sender and not killed.is_set():
                ng.kill9()
                killed.set()
        sink.on_dot_replied = kill_now
    try:
        qid = send(ng, sender, [rcpt], body)
        if stage == "after-250":
            assert killed.wait(SENT_TIMEOUT), "no delivery reached the sink"
        else:
            ev = sink.reached_data if stage == "before-354" \
                else sink.reached_dot
            assert ev.wait(SENT_TIMEOUT), "no delivery reached %s" % stage
            ng.kill9()
    finally:
        for e in (sink.hold_data, sink.hold_dot):
            if e is not None:
                e.set()
    sink.reset_holds()
    ng.start()
    sink.wait_accepted(m, timeout=20)
    dh.wait_queue_gone(ng, qid, timeout=20)
    time.sleep(3)               # a late second copy would come now
    copies = len(sink.accepted(m))
    complete = len([t for t in sink.all_txns(m) if t.complete])
    warnings.warn("kill -9 at %s: %d accepted copies at the sink "
                  "(%d complete transactions)" % (stage, copies, complete))
    check_copy(world, sink.accepted(m)[0], sender, [rcpt], body)
    if stage == "before-354":
        assert copies == 1, "copies: %r" % sink.accepted(m)
    else:
        assert 1 <= copies <= 2, "copies: %r" % sink.accepted(m)
    assert not h.mailbox_files(ng, "example.test", m), "a DSN was sent"


def hold_first_attempt(ng, world, tag):
    """A message whose first attempt the "kill" sink holds at the end of
    data (no reply): (queue id, marker, sender, rcpt, body, path)."""
    # until its journal is made a worker syncs its groups' files
    h.wait_until(lambda: len(h.journal_files(ng)) == 2, 10,
                 what="the workers' journals")
    sink = world.sinks["kill"]
    sink.reset_holds()
    sink.hold_dot = threading.Event()
    m = h.unique(tag)
    sender, rcpt, body = "%s@example.test" % m, "%s@kill.test" % m, \
        body_for(m)
    qid = send(ng, sender, [rcpt], body)
    assert sink.reached_dot.wait(SENT_TIMEOUT), "no delivery reached the dot"
    return qid, m, sender, rcpt, body, ng.queue_dir / qid


def release_and_deliver(ng, world, qid, m, sender, rcpt, body, copies):
    sink = world.sinks["kill"]
    sink.hold_dot.set()
    sink.reset_holds()
    sink.wait_accepted(m, timeout=20)
    dh.wait_queue_gone(ng, qid, timeout=20)
    time.sleep(2)               # a late second copy would come now
    assert len(sink.accepted(m)) in copies, "copies: %r" % sink.accepted(m)
    check_copy(world, sink.accepted(m)[0], sender, [rcpt], body)


HOLLOW_CONF = dict(smtp_timeout="30s",
                   extra=["relay_spool_checkpoint_interval 1h;"])


def test_hollow_file_through_kill9_written_from_the_journal(fresh, world):
    """A new message's queue file is made and locked but left empty
    ("hollow") while its first attempt runs: the journal record holds the
    message.  kill -9 in that attempt: on disk the file is empty and the
    record valid; the master's recovery at the restart writes the file from
    the record, and the message goes out (once or twice: RFC 1047)."""
    ng = fresh(**HOLLOW_CONF)
    qid, m, sender, rcpt, body, path = hold_first_attempt(ng, world, "hk")
    try:
        ng.kill9()
        assert path.exists() and path.stat().st_size == 0, \
            "not hollow: %d octets" % path.stat().st_size
        records = h.journaled(ng)
        assert qid in records and m.encode() in records[qid], records.keys()
    finally:
        world.sinks["kill"].hold_dot.set()
    ng.start()
    assert h.queue_file_complete(ng, path) or not path.exists()
    assert "1 hollow queue file(s) written from it" in ng.error_log()
    assert "removed incomplete queue file" not in ng.error_log()
    release_and_deliver(ng, world, qid, m, sender, rcpt, body, (1, 2))


def test_hollow_file_of_a_killed_worker_is_not_debris(fresh, world):
    """kill -9 of the workers alone, the first attempt held past the age at
    which an unlocked file without its trailer counts as a dead session's
    debris (10 s): the new workers' scans write the hollow file from the
    dead worker's journal first, and the message is delivered."""
    ng = fresh(**HOLLOW_CONF)
    qid, m, sender, rcpt, body, path = hold_first_attempt(ng, world, "hd")
    try:
        time.sleep(11)
        assert path.stat().st_size == 0, "written before its worker died"
        old = ng.worker_pids()
        ng.allowed_alerts.append(r"worker process \d+ exited on signal 9\b")
        for pid in old:
            os.kill(pid, signal.SIGKILL)
        h.wait_until(lambda: len(set(ng.worker_pids()) - set(old)) == 2, 10,
                     what="new workers")
        h.wait_until(lambda: h.queue_file_complete(ng, path), 10,
                     what="%s written from its journal" % path)
        assert "removed incomplete queue file" not in ng.error_log()
    finally:
        world.sinks["kill"].hold_dot.set()
    h.wait_until(lambda: "1 hollow queue file(s) written from it"
                 in ng.error_log(), 5, what="the recovery's notice")
    release_and_deliver(ng, world, qid, m, sender, rcpt, body, (1, 2))


def test_hollow_file_written_by_the_checkpoint(fresh, world):
    """The record's segment is checkpointed while the first attempt still
    runs: the checkpoint writes the file before it retires the record, and
    the message is delivered once."""
    ng = fresh(smtp_timeout="30s",
               extra=["relay_spool_checkpoint_interval 200ms;"])
    qid, m, sender, rcpt, body, path = hold_first_attempt(ng, world, "hc")
    try:
        h.wait_until(lambda: h.queue_file_complete(ng, path), 10,
                     what="the checkpoint to write %s" % path)
        _, _, rcpts, msg = h.parse_queue_file(path)
        assert rcpts[0]["state"] == "P" and m.encode() in msg, rcpts
        h.wait_until(lambda: qid not in h.journaled(ng), 10,
                     what="the record retired")
    finally:
        world.sinks["kill"].hold_dot.set()
    release_and_deliver(ng, world, qid, m, sender, rcpt, body, (1,))


def test_hollow_file_written_at_a_fast_stop(fresh, world):
    """nginx -s stop (SIGTERM) in the first attempt: the exiting worker
    writes its hollow files, then retires its journal as usual."""
    ng = fresh(**HOLLOW_CONF)
    qid, m, sender, rcpt, body, path = hold_first_attempt(ng, world, "hs")
    try:
        workers = ng.worker_pids()
        ng.proc.send_signal(signal.SIGTERM)
        ng.proc.wait(timeout=10)
        h.wait_until(lambda: not any(os.path.exists("/proc/%d" % p)
                                     for p in workers), 10,
                     what="workers to exit")
        ng.proc = None
        assert h.queue_file_complete(ng, path), path.read_bytes()[:200]
        assert h.journal_files(ng) == [], h.journal_files(ng)
        assert "kept, queue files still need" not in ng.error_log()
    finally:
        world.sinks["kill"].hold_dot.set()
    ng.start()
    release_and_deliver(ng, world, qid, m, sender, rcpt, body, (1, 2))


def test_in_flow_control_holds_mail_while_first_attempts_hold_memory(
        fresh, world):
    """relay_in_flow_memory 300k: two 200 KB messages whose first attempts
    the sink holds keep more, so the next MAIL waits (in-flow control) for
    an attempt to end, at most 1 s, then goes on; nothing is lost."""
    ng = fresh(smtp_timeout="30s", extra=["relay_in_flow_memory 300k;"])
    h.wait_until(lambda: len(h.journal_files(ng)) == 2, 10,
                 what="the workers' journals")
    sink = world.sinks["kill"]
    sink.reset_holds()
    sink.hold_dot = threading.Event()
    m = h.unique("flow")
    sender = "%s@example.test" % m
    sent = []
    try:
        with h.SMTPConn(ng.port("main")) as c:
            c.ehlo()
            for i in range(3):
                rcpt = "%s-%d@kill.test" % (m, i)
                body = body_for("%s-%d" % (m, i), b"x" * 76 + b"\r\n") \
                    + (b"y" * 98 + b"\r\n") * 2000
                t0 = time.monotonic()
                r = c.cmd("MAIL FROM:<%s>" % sender)
                waited = time.monotonic() - t0
                assert r.is_(250, "2.1.0"), r
                c.expect("RCPT TO:<%s>" % rcpt, 250, "2.1.5")
                c.expect("DATA", 354)
                r = c.send_data(body)
                assert r.is_(250, "2.0.0") and r.queue_id, r
                sent.append((r.queue_id, rcpt, body, waited))
                if i < 2:
                    assert sink.reached_dot.wait(SENT_TIMEOUT) or i, \
                        "no first attempt reached the sink"
    finally:
        sink.hold_dot.set()
    assert sent[0][3] < 0.8 and sent[1][3] < 0.8, [w for *_, w in sent]
    assert sent[2][3] >= 0.8, \
        "the third MAIL did not wait: %.3f s" % sent[2][3]
    sink.reset_holds()
    for qid, rcpt, body, _ in sent:
        dh.wait_queue_gone(ng, qid, timeout=20)
        assert dh.delivery_lines(ng, qid, rcpt, "sent"), qid


# --------------------------------------------------------------------------
# TLS, extensions, sessions


def test_starttls_to_capable_sink(drelay, world):
    sink = world.sinks["tls"]
    m = h.unique("tls")
    sender, rcpt, body = "%s@example.test" % m, "%s@tls.test" % m, \
        body_for(m)
    qid = send(drelay, sender, [rcpt], body)
    (t,) = sink.wait_accepted(m, timeout=SENT_TIMEOUT)
    check_copy(world, t, sender, [rcpt], body)
    assert t.tls in ("TLSv1.2", "TLSv1.3"), \
        "delivered without STARTTLS to a server offering it: tls=%r, " \
        "commands %r" % (t.tls, t.session.commands)
    assert t.session.helos == ["relay.test", "relay.test"], \
        "EHLO before and after STARTTLS expected: %r" % t.session.helos
    assert t.session.injected == b"", \
        "commands pipelined after STARTTLS: %r" % t.session.injected
    dh.wait_status(drelay, qid, rcpt, "sent")


HOSTILE = ["garbage", "gehlo", "overlong", "unterminated", "endless",
           "midclose", "silent", "dotsilent"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_sink_defers(drelay, world, name):
    mark = drelay.log_mark()
    pids = drelay.worker_pids()
    m = h.unique("hostile")
    sender, rcpt = "%s@example.test" % m, "%s@%s.test" % (m, name)
    qid = send(drelay, sender, [rcpt], body_for(m))
    line = dh.wait_status(drelay, qid, rcpt, "deferred", timeout=20)[0]
    assert "[%s]" % world.ip[name] in line["relay"], line["line"]
    assert line["dsn"].startswith("4."), line["line"]
    assert (line["reason"] or "").strip(), \
        "deferred without a reason: %r" % line["line"]
    assert not dh.delivery_lines(drelay, qid, rcpt, "sent"), \
        "a hostile server 'accepted' the message"
    assert not dh.delivery_lines(drelay, qid, rcpt, "bounced"), \
        "a hostile server made the relay bounce"
    assert drelay.worker_pids() == pids, "workers changed"
    drelay.assert_no_crash(mark)
    assert dh.rcpt_states(drelay, qid) == {rcpt: "P"}
    # the relay still delivers elsewhere
    g = h.unique("after")
    qid2 = send(drelay, "%s@example.test" % g, ["%s@multi.test" % g],
                body_for(g))
    world.sinks["multi"].wait_accepted(g, timeout=SENT_TIMEOUT)
    dh.wait_queue_gone(drelay, qid2)
    drelay.assert_no_crash(mark)


def test_host_failure_says_in_which_state(drelay, world):
    m = h.unique("state")
    sender, rcpt = "%s@example.test" % m, "%s@midclose.test" % m
    qid = send(drelay, sender, [rcpt], body_for(m))
    dh.wait_status(drelay, qid, rcpt, "deferred", timeout=20)
    # half an EHLO reply, then the close: the warning says where it was
    assert re.search(r"\[warn\] .*%s: relay=.*: connection closed by the "
                     r"server while in state EHLO$" % qid,
                     drelay.error_log(), re.M), \
        "no warning naming the state for %s" % qid


def test_split_multiline_replies_delivered(drelay, world):
    # valid replies, 3 octets per packet: the reply parser must resume
    m = h.unique("split")
    sender, rcpt, body = "%s@example.test" % m, "%s@splitml.test" % m, \
        body_for(m)
    qid = send(drelay, sender, [rcpt], body)
    (t,) = world.sinks["splitml"].wait_accepted(m, timeout=20)
    check_copy(world, t, sender, [rcpt], body)
    dh.wait_status(drelay, qid, rcpt, "sent")


def test_several_recipients_one_transaction(drelay, world):
    m = h.unique("multi")
    sender = "%s@example.test" % m
    multi = ["%s-%d@multi.test" % (m, i) for i in range(3)]
    local = "loc-%s@example.test" % m
    other = "%s@pref.test" % m
    body = body_for(m)
    qid = send(drelay, sender, multi + [local, other], body)
    sink = world.sinks["multi"]
    (t,) = sink.wait_accepted(m, timeout=SENT_TIMEOUT)
    check_copy(world, t, sender, multi, body)
    assert len(sink.all_txns(m)) == 1, sink.all_txns(m)
    world.sinks["pref1"].wait_accepted(m, timeout=SENT_TIMEOUT)
    h.wait_delivered(drelay, "example.test", "loc-%s" % m)
    for r in multi:
        dh.wait_status(drelay, qid, r, "sent")
    dh.wait_queue_gone(drelay, qid)


@pytest.mark.parametrize("size", [150000, 300000])
def test_large_body_with_leading_dots_arrives_intact(drelay, world, size):
    """A new message of up to 256 KB is sent from the spool's buffer (once
    the workers' journals are ready: it went through one), a larger one
    from its file in 64 KB reads: either way dot-stuffing holds across
    every chunk boundary and the sink gets every octet."""
    h.wait_until(lambda: len(re.findall(r'relay journal "\d+": \d+ segments',
                                        drelay.error_log())) >= 2, 10,
                 what="both workers' journals")
    m = h.unique("big")
    lines, total, i = [], 0, 0
    while total < size:
        line = ("." * (i % 3) + "line %d " % i + "x" * (i * 7 % 113)
                + "\r\n").encode()
        lines.append(line)
        total += len(line)
        i += 1
    body = body_for(m, b"".join(lines))
    sender = "%s@example.test" % m
    rcpt = "%s@multi.test" % m
    qid = send(drelay, sender, [rcpt], body)
    (t,) = world.sinks["multi"].wait_accepted(m, timeout=SENT_TIMEOUT)
    check_copy(world, t, sender, [rcpt], body)
    dh.wait_status(drelay, qid, rcpt, "sent")
    assert not dh.delivery_lines(drelay, qid, status="deferred"), \
        "the first attempt did not get the message across"


def test_static_route_skips_mx_lookup(drelay, world):
    need(world, "relay_route")
    mark = world.dns.log_mark()
    m = h.unique("static")
    sender, rcpt, body = "%s@example.test" % m, "%s@static.test" % m, \
        body_for(m)
    qid = send(drelay, sender, [rcpt], body)
    (t,) = world.sinks["static"].wait_accepted(m, timeout=SENT_TIMEOUT)
    check_copy(world, t, sender, [rcpt], body)
    line = dh.wait_status(drelay, qid, rcpt, "sent")[-1]
    check_sent_line(world, line, "127.0.0.2", world.P2)
    assert not world.dns.queried("static.test", since=mark), \
        "static.test was looked up: %r" % world.dns.queried(
            "static.test", since=mark)
    assert not world.sinks["pref1"].all_txns(m)


def test_next_hop_at_once_after_a_refusing_greeting(drelay, world):
    need(world, "relay_route")
    m = h.unique("failover")
    rcpt = "%s@failover.test" % m
    qid = send(drelay, "%s@example.test" % m, [rcpt], body_for(m))
    # the first hop greets with 421; the second is an address, so its
    # connection starts while that reply is still being handled
    world.sinks["pref1"].wait_accepted(m, timeout=SENT_TIMEOUT)
    line = dh.wait_status(drelay, qid, rcpt, "sent")[-1]
    check_sent_line(world, line, "127.0.0.2")
    assert re.search(r"%s: relay=\S+: greeting: 421 .* while in state "
                     r"GREETING" % qid, drelay.error_log()), \
        "the first hop's 421 greeting was not logged for %s" % qid


def test_route_to_host_uses_its_mx(drelay, world):
    need(world, "relay_route")
    mark = world.dns.log_mark()
    m = h.unique("routed")
    sender, rcpt, body = "%s@example.test" % m, "%s@routed.test" % m, \
        body_for(m)
    qid = send(drelay, sender, [rcpt], body)
    (t,) = world.sinks["hop"].wait_accepted(m, timeout=SENT_TIMEOUT)
    check_copy(world, t, sender, [rcpt], body)
    line = dh.wait_status(drelay, qid, rcpt, "sent")[-1]
    check_sent_line(world, line, "127.0.0.3", world.P2)
    assert world.dns.queried("hop.test", "MX", since=mark), \
        "no MX lookup of the route's host hop.test"


def test_fallback_relay_after_mx_failed(fresh, world):
    need(world, "relay_fallback_relay")
    ng = fresh(fallback="[127.0.0.4]:%d" % world.P2)
    m = h.unique("fallback")
    sender, rcpt, body = "%s@example.test" % m, "%s@deadmx.test" % m, \
        body_for(m)
    qid = send(ng, sender, [rcpt], body)
    (t,) = world.sinks["fallback"].wait_accepted(m, timeout=20)
    check_copy(world, t, sender, [rcpt], body)
    line = dh.wait_status(ng, qid, rcpt, "sent")[-1]
    check_sent_line(world, line, "127.0.0.4", world.P2)


def test_next_hop_size_limit_bounces(drelay, world):
    # the sink advertises SIZE 4000 and refuses more (at MAIL with SIZE=,
    # or at the end of data)
    m = h.unique("size")
    sender, rcpt = "%s@example.test" % m, "%s@plain.test" % m
    body = body_for(m, b"".join(b"%05d %s\r\n" % (i, b"x" * 70)
                                for i in range(80)))
    qid = send(drelay, sender, [rcpt], body)
    line = dh.wait_status(drelay, qid, rcpt, "bounced")[-1]
    assert line["dsn"] == "5.3.4", line["line"]
    assert not world.sinks["plain"].accepted(m)
    ((data, msg),) = dh.wait_dsn(drelay, m)
    blk = check_dsn(world, msg, data, sender, rcpt, r"5\.3\.4", marker=m)
    # the sink's 552 if the relay tried, or the relay's own words if it
    # refused from the advertised SIZE: either must name the limit
    dc = dh.field(blk, "Diagnostic-Code")
    assert "exceeds fixed limit" in dc or "4000" in dc, \
        "Diagnostic-Code does not tell the size limit: %r" % dc


def test_no_pipelining_unless_advertised(drelay, world):
    m = h.unique("nopipe")
    sender, rcpt, body = "%s@example.test" % m, "%s@plain.test" % m, \
        body_for(m)
    qid = send(drelay, sender, [rcpt], body)
    (t,) = world.sinks["plain"].wait_accepted(m, timeout=SENT_TIMEOUT)
    check_copy(world, t, sender, [rcpt], body)
    assert t.session.pipelined == [], \
        "commands sent before the previous reply to a server without " \
        "PIPELINING: %r" % t.session.pipelined
    assert not re.search(r"(?i)\b(BODY|SMTPUTF8)\b", t.mail_params), \
        "unadvertised MAIL parameters: %r" % t.mail_params
    dh.wait_status(drelay, qid, rcpt, "sent")


def test_helo_fallback_when_ehlo_refused(drelay, world):
    m = h.unique("helo")
    sender, rcpt, body = "%s@example.test" % m, "%s@helo.test" % m, \
        body_for(m)
    qid = send(drelay, sender, [rcpt], body)
    (t,) = world.sinks["helo"].wait_accepted(m, timeout=SENT_TIMEOUT)
    check_copy(world, t, sender, [rcpt], body)
    verbs = [c.split()[0].upper() for c in t.session.commands]
    assert verbs[:2] == ["EHLO", "HELO"], t.session.commands
    assert t.mail_params == "", \
        "ESMTP parameters sent after HELO: %r" % t.mail_params
    dh.wait_status(drelay, qid, rcpt, "sent")


def test_8bitmime_to_chunking_sink(drelay, world):
    m = h.unique("ebit")
    sender, rcpt = "%s@example.test" % m, "%s@chunking.test" % m
    body = body_for(m, "caf\u00e9 \u00fcber na\u00efve\r\n".encode("utf-8"))
    qid = send(drelay, sender, [rcpt], body, mail_params=" BODY=8BITMIME")
    (t,) = world.sinks["chunking"].wait_accepted(m, timeout=SENT_TIMEOUT)
    check_copy(world, t, sender, [rcpt], body)
    assert re.search(r"(?i)\bBODY=8BITMIME\b", t.mail_params), \
        "BODY=8BITMIME not passed on to an 8BITMIME server: %r" \
        % t.mail_params
    dh.wait_status(drelay, qid, rcpt, "sent")


def test_smtputf8_passed_on(drelay, world):
    m = h.unique("utf")
    sender, rcpt = "%s@example.test" % m, "j\u00f6rg-%s@chunking.test" % m
    body = body_for(m)
    qid = send(drelay, sender, [rcpt], body, mail_params=" SMTPUTF8")
    (t,) = world.sinks["chunking"].wait_accepted(m, timeout=SENT_TIMEOUT)
    check_copy(world, t, sender, [rcpt], body)
    assert re.search(r"(?i)\bSMTPUTF8\b", t.mail_params), t.mail_params
    dh.wait_status(drelay, qid, rcpt, "sent")


def test_smtputf8_to_server_without_it_bounces(drelay, world):
    m = h.unique("utfno")
    sender, rcpt = "%s@example.test" % m, "j\u00f6rg-%s@plain.test" % m
    qid = send(drelay, sender, [rcpt], body_for(m), mail_params=" SMTPUTF8")
    line = dh.wait_status(drelay, qid, rcpt, "bounced")[-1]
    assert line["dsn"].startswith("5.6."), line["line"]
    assert not world.sinks["plain"].accepted(m), \
        "a non-ASCII address went to a server without SMTPUTF8"
    ((data, msg),) = dh.wait_dsn(drelay, m)
    blk = check_dsn(world, msg, data, sender, rcpt, r"5\.6\.\d{1,3}")
    # RFC 6533 3: a non-ASCII address is reported with the utf-8 address
    # type, or in a message/global-delivery-status part
    fr = dh.field(blk, "Final-Recipient")
    kinds = [p.get_content_type() for p in msg.get_payload()]
    assert fr.lower().startswith("utf-8;") \
        or "message/global-delivery-status" in kinds, \
        "non-ASCII Final-Recipient %r as type rfc822 in %r (RFC 6533)" \
        % (fr, kinds)


# keep last: stops the shared relay
def test_zz_quit_with_deliveries_pending(drelay, world):
    """nginx -s quit returns within 10 s although deferred messages and
    silent servers keep deliveries in flight."""
    assert drelay.stop(timeout=10), \
        "nginx did not quit within 10 s (workers kept alive by delivery)"
