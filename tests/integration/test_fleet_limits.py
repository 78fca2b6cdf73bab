"""
Limits that hold across the fleet (issue 12): inbound limits and
destination limits with scope=fleet count in a real redis-server that the
tests start on loopback (redisharness, its own port and directory) and
stop at the end; three nginx nodes share it.

  * a fleet limit of N messages a window per authenticated user, sender
    domain and client address: 3N messages spread over the three nodes get
    exactly N accepted in the window, the rest 450 4.7.1 at MAIL (452 4.5.3
    at RCPT for recipients), and the next window accepts again;
  * a fleet destination limit per egress address: three nodes sending to
    one sink from the same pool stay within the rate, counted at the sink
    per source address (exactly the limit per address within the hour);
  * Redis killed mid-run: each node's relay_limit_redis_fallback (node1
    local with relay_limit_fleet_nodes 3, node2 tempfail, node3 accept)
    behaves as documented, no session waits past the timeout, a warn line
    says Redis went away; restarted, counting resumes without a reload
    (notice line); a stopped (SIGSTOP) Redis costs one timeout;
  * a flushed script cache (NOSCRIPT) is loaded again;
  * the fleet policy from controld sets a fleet limit (scope FLEET);
  * an ACL user, password, database, key prefix and a tenant rule;
  * bad configuration from nginx -t, and an unreachable Redis at start.

Addresses: sink 127.0.0.60, egress 127.0.0.61-62, a client 127.0.0.63
(other tests use 127.0.0.2-52).  Windows are 5 s long, aligned to the
clock as the relay aligns them; each test starts well inside one.
"""

import time

import pytest

import deliveryharness as dh
import redisharness as rh
import relayharness as h


WINDOW = 5
N = 3
SINK_IP = "127.0.0.60"
EGRESS = ("127.0.0.61", "127.0.0.62")
CLIENT_IP = "127.0.0.63"
FALLBACKS = ("local", "tempfail", "accept")
TIMEOUT_MS = 250
HOUR_LIMIT = 4

pytestmark = pytest.mark.skipif(not rh.available(),
                                reason="redis-server is not installed")


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    r = rh.Redis(tmp_path_factory.mktemp("redis")).start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def sink():
    port = dh.alloc_port((SINK_IP,) + EGRESS)
    s = dh.Sink(SINK_IP, port, "fleet-sink")
    s.start()
    yield s
    s.stop()


def node_conf(redis, sink, fallback):
    lines = [
        "relay_limit_redis %s;" % redis.address,
        "relay_limit_redis_timeout %dms;" % TIMEOUT_MS,
        "relay_limit_redis_fallback %s;" % fallback,
        "relay_limit_fleet_nodes 3;",
        "relay_limit auth_user alice@example.test window=%ds messages=%d "
        "scope=fleet;" % (WINDOW, N),
        "relay_limit sender_domain fleet.example window=%ds messages=%d "
        "scope=fleet;" % (WINDOW, N),
        "relay_limit sender_domain rcpt.example window=%ds recipients=%d "
        "scope=fleet;" % (WINDOW, N),
        "relay_limit client_ip %s window=%ds messages=%d scope=fleet;"
        % (CLIENT_IP, WINDOW, N),
        "relay_delivery on;",
        "relay_resolver 127.0.0.1:1;",
        "relay_queue_scan_interval 1s;",
        "relay_retry_backoff 1s 2s;",
        "relay_route fleetdst.test [%s]:%d;" % (SINK_IP, sink.port),
        "relay_egress_pool shared ehlo=shared.example.net %s %s;" % EGRESS,
        "relay_egress_rule sender_domain bulk.example shared;",
        "relay_destination_limit fleetdst.test messages_per_hour=%d "
        "scope=fleet per=address;" % HOUR_LIMIT,
    ]
    return "\n".join("    " + l for l in lines)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, certs, redis, sink):
    nodes = []
    try:
        for fallback in FALLBACKS:
            nodes.append(h.launch(tmp_path_factory, certs,
                                  "fleet-" + fallback, workers=1,
                                  stream_extra=node_conf(redis, sink,
                                                         fallback)))
        for ng in nodes:
            rh.wait_log(ng, "relay limits: redis %s connected"
                        % redis.address)
        yield nodes
    finally:
        for ng in nodes:
            ng.stop()
        for ng in nodes:
            ng.assert_log_clean()
            ng.assert_no_crash()


def connect(ng, port="main", source=None):
    return h.SMTPConn(ng.port(port), source=source)


def greeted(nodes, source=None):
    """A connection to each node, after EHLO."""
    conns = [connect(ng, source=source) for ng in nodes]
    for c in conns:
        c.ehlo()
    return conns


def alice(ng):
    c = connect(ng, "sub")
    c.ehlo()
    c.starttls()
    c.ehlo()
    c.expect("AUTH PLAIN " + h.auth_plain_token(
        "alice@example.test", "alice-secret"), 235)
    return c


def message(c, sender, rcpt="someone@example.test"):
    """One transaction: the reply to MAIL, or the end of data's."""
    r = c.cmd("MAIL FROM:<%s>" % sender)
    if not r.is_(250):
        return r
    c.expect("RCPT TO:<%s>" % rcpt, 250, "2.1.5")
    c.expect("DATA", 354)
    r = c.send_data(h.simple_body(h.unique("fl")))
    assert r.is_(250, "2.0.0"), r
    return r


def spread(conns, sender, count):
    """count messages round-robin over the nodes' connections."""
    return [message(conns[i % len(conns)], sender) for i in range(count)]


def next_window():
    start = int(time.time()) // WINDOW * WINDOW
    while time.time() < start + WINDOW + 0.2:
        time.sleep(0.05)


def accepts_again(c, sender, conns):
    """The next window accepts again; then every connection closes."""
    next_window()
    assert message(c, sender).is_(250, "2.0.0")
    for x in conns:
        x.close()


def assert_exactly_n(replies):
    ok = [r for r in replies if r.is_(250, "2.0.0")]
    refused = [r for r in replies if r.is_(450, "4.7.1")]
    assert len(ok) == N and len(refused) == 2 * N, replies


def two_then_refused(ng, sender, redis=None, pattern=None):
    """Three messages, a limit of two: 250, 250, 450; and, given a key
    pattern, one counter in Redis at 2."""
    c = connect(ng)
    c.ehlo()
    replies = [message(c, sender) for _ in range(3)]
    c.close()
    assert [x.code for x in replies] == [250, 250, 450], replies
    if pattern:
        keys = redis.keys(pattern)
        assert len(keys) == 1 and redis.hgetall(keys[0]) == {"m": "2"}, \
            keys


def any_log(nodes, text):
    return any(text in ng.error_log() for ng in nodes)


def test_auth_user_limit_holds_across_three_nodes(fleet, redis):
    rh.now_window(WINDOW)
    conns = [alice(ng) for ng in fleet]
    assert_exactly_n(spread(conns, "alice@example.test", 3 * N))
    assert any_log(fleet, "relay limit: alice@example.test reached %d "
                   "messages per %d s (inbound_limit auth_user "
                   "alice@example.test scope=fleet)" % (N, WINDOW))

    # one counter per rule, value and window, under the prefix
    keys = redis.keys("relay:in:auth_user:*")
    assert keys and all(k.startswith("relay:in:auth_user:alice@example.test"
                                     ":alice@example.test:%d:" % WINDOW)
                        for k in keys), keys
    assert redis.hgetall(keys[-1]) == {"m": str(N)}
    assert 0 < redis.cmd("TTL", keys[-1]) <= WINDOW + 5

    accepts_again(conns[1], "alice@example.test", conns)


def test_sender_domain_limit_and_recipients(fleet):
    rh.now_window(WINDOW)
    conns = greeted(fleet)
    assert_exactly_n(spread(conns, "news@fleet.example", 3 * N))
    # another domain is not limited
    assert message(conns[0], "news@other.example").is_(250)

    # recipients: N across the nodes, then 452 4.5.3 at RCPT
    got = []
    for i in range(2 * N):
        c = conns[i % 3]
        c.expect("MAIL FROM:<a@rcpt.example>", 250)
        got.append(c.cmd("RCPT TO:<r%d@example.test>" % i))
        c.expect("RSET", 250)
    assert [r.code for r in got] == [250] * N + [452] * N, got
    assert all(r.enh == "4.5.3" for r in got[N:]), got

    accepts_again(conns[2], "news@fleet.example", conns)


def test_client_address_limit(fleet):
    rh.now_window(WINDOW)
    conns = greeted(fleet, source=CLIENT_IP)
    assert_exactly_n(spread(conns, "x@example.org", 3 * N))
    # another client address is not affected
    c = connect(fleet[0])
    c.ehlo()
    assert message(c, "x@example.org").is_(250)
    c.close()
    accepts_again(conns[0], "x@example.org", conns)


def test_destination_limit_per_egress_address(fleet, sink, redis):
    # per hour: not near the end of one
    while time.time() % 3600 > 3600 - 40:
        time.sleep(1)
    tags = [h.unique("dst") for _ in range(3 * HOUR_LIMIT)]
    for i, tag in enumerate(tags):
        c = connect(fleet[i % 3])
        c.ehlo()
        c.message("out@bulk.example", ["%s@fleetdst.test" % tag],
                  h.simple_body(tag))
        c.close()

    both = len(EGRESS) * HOUR_LIMIT
    h.wait_until(lambda: len(sink.accepted()) >= both, timeout=20,
                 what="%d messages at the sink" % both)
    time.sleep(2)                       # nothing more comes this hour
    per_address = {}
    for t in sink.accepted():
        per_address[t.peer[0]] = per_address.get(t.peer[0], 0) + 1
    assert per_address == {a: HOUR_LIMIT for a in EGRESS}, per_address

    # the rest waits in the queues, throttled, never bounced
    assert any_log(fleet, "reached its messages per minute or hour")
    keys = redis.keys("relay:out:fleetdst.test:shared:*")
    assert sorted(k.split(":")[4] for k in keys) == sorted(EGRESS), keys
    assert all(redis.hgetall(k) == {"n": str(HOUR_LIMIT)} for k in keys)


def test_flushed_script_is_loaded_again(fleet, redis):
    mark = fleet[0].log_mark()
    redis.cmd("SCRIPT", "FLUSH")
    rh.now_window(WINDOW)
    c = connect(fleet[0])
    c.ehlo()
    # the first check meets NOSCRIPT: the fallback answers that one
    c.expect("MAIL FROM:<n@fleet.example>", 250)
    c.expect("RSET", 250)
    rh.wait_log(fleet[0], "relay limit: redis: NOSCRIPT", since=mark)
    # then the script is there again, and Redis counts
    c.expect("MAIL FROM:<n@fleet.example>", 250)
    c.close()
    start = int(time.time()) // WINDOW * WINDOW
    assert redis.hgetall("relay:in:sender_domain:fleet.example:"
                         "fleet.example:%d:%d" % (WINDOW, start)) \
        == {"m": "1"}


def test_redis_killed_every_fallback_then_back(fleet, redis):
    local, tempfail, accept = fleet
    marks = [ng.log_mark() for ng in fleet]
    redis.kill()
    for ng, mark in zip(fleet, marks):
        rh.wait_log(ng, "relay limits: redis %s went away" % redis.address,
                    since=mark)

    next_window()                       # nothing counted on the nodes yet
    rh.now_window(WINDOW)
    conns = greeted(fleet)

    # local: the node counts, against N / relay_limit_fleet_nodes (1)
    t0 = time.monotonic()
    assert message(conns[0], "a@fleet.example").is_(250, "2.0.0")
    r = conns[0].cmd("MAIL FROM:<b@fleet.example>")
    assert r.is_(450, "4.7.1"), r
    rh.wait_log(local, "scope=fleet, counted on this node", since=marks[0])

    # tempfail: 451 4.3.0, other senders go on
    r = conns[1].cmd("MAIL FROM:<a@fleet.example>")
    assert r.is_(451, "4.3.0"), r
    assert message(conns[1], "a@elsewhere.example").is_(250, "2.0.0")

    # accept: through, uncounted, and logged
    for _ in range(N + 1):
        assert message(conns[2], "a@fleet.example").is_(250, "2.0.0")
    rh.wait_log(accept, "fallback accept", since=marks[2])

    # nobody waited for the missing Redis
    assert time.monotonic() - t0 < 3, time.monotonic() - t0

    # back: every node notices without a reload, and counts there again
    redis.start()
    for ng, mark in zip(fleet, marks):
        rh.wait_log(ng, "relay limits: redis %s is back" % redis.address,
                    timeout=15, since=mark)

    # new sessions: the waits above may outlast relay_timeout (5s)
    for c in conns:
        c.close()
    rh.now_window(WINDOW)
    conns = greeted(fleet)
    assert_exactly_n(spread(conns, "c@fleet.example", 3 * N))
    assert redis.keys("relay:in:sender_domain:fleet.example:*")
    for c in conns:
        c.close()
    for ng in fleet:
        assert "reconfiguring" not in ng.error_log()


def test_stopped_redis_costs_one_timeout(fleet, redis):
    local, tempfail, accept = fleet
    marks = [ng.log_mark() for ng in fleet]
    c = connect(tempfail)
    c.ehlo()
    redis.pause()
    try:
        t0 = time.monotonic()
        r = c.cmd("MAIL FROM:<s@fleet.example>")
        first = time.monotonic() - t0
        assert r.is_(451, "4.3.0"), r
        assert first < TIMEOUT_MS / 1000 + 1, first
        # the connection is suspect now: no more waiting
        t0 = time.monotonic()
        r = c.cmd("MAIL FROM:<s@fleet.example>")
        assert r.is_(451, "4.3.0"), r
        assert time.monotonic() - t0 < 0.2, time.monotonic() - t0
        rh.wait_log(tempfail, "did not answer within "
                    "relay_limit_redis_timeout", since=marks[1])
        rh.wait_log(tempfail, "went away (no answer within", timeout=10,
                    since=marks[1])
    finally:
        redis.resume()
    rh.wait_log(tempfail, "relay limits: redis %s is back" % redis.address,
                timeout=15, since=marks[1])
    h.wait_until(lambda: c.cmd("RSET").is_(250)
                 and c.cmd("MAIL FROM:<t@fleet.example>").is_(250),
                 timeout=5, interval=0.2, what="fleet counting again")
    c.close()


# --------------------------------------------------------------------------
# the fleet policy (controld) sets a fleet limit without a reload


def test_fleet_policy_sets_a_fleet_limit(tmp_path_factory, certs, redis):
    import controlharness as ch
    ctld, control = ch.controld_for(tmp_path_factory.mktemp("fleet-policy"),
                                    "fl")
    extra = "    relay_limit_redis %s;\n" % redis.address + control
    ng = h.launch(tmp_path_factory, certs, "fleet-policy-node", workers=1,
                  stream_extra=extra)
    try:
        p = ch.pb.Policy(comment="fleet limits")
        p.inbound_limits.add(key=ch.pb.InboundLimit.SENDER_DOMAIN,
                             match="policy.example", window_s=3600,
                             messages=2, scope=ch.pb.FLEET)
        chan, admin = ctld.admin()
        with chan:
            v = admin.Apply(ch.pb.ApplyRequest(policy=p)).version
        rh.wait_log(ng, "relay policy version %d in use" % v)
        two_then_refused(ng, "p@policy.example", redis,
                         "relay:in:sender_domain:policy.example:*")
        assert "inbound_limit sender_domain policy.example scope=fleet" \
            in ng.error_log()
    finally:
        ng.stop()
        ctld.stop()
    ng.assert_log_clean()


# --------------------------------------------------------------------------
# authentication, database, prefix, tenant


def test_acl_user_database_prefix_and_tenant(tmp_path_factory, certs):
    r = rh.Redis(tmp_path_factory.mktemp("redis-acl"), password="s3cret pw",
                 user="relay", db=3).start()
    good = """
    relay_limit_redis %s;
    relay_limit_redis_user relay;
    relay_limit_redis_password "s3cret pw";
    relay_limit_redis_database 3;
    relay_limit_redis_prefix t12/;
    relay_tenant acme;
    relay_limit tenant acme window=1h messages=2 scope=fleet;
""" % r.address
    bad = good.replace('"s3cret pw"', "wrong")
    ng = h.launch(tmp_path_factory, certs, "fleet-acl", workers=1,
                  stream_extra=good)
    ng2 = h.launch(tmp_path_factory, certs, "fleet-acl-bad", workers=1,
                   stream_extra=bad)
    try:
        rh.wait_log(ng, "relay limits: redis %s connected" % r.address)
        two_then_refused(ng, "t@example.org", r,
                         "t12/in:tenant:acme:acme:3600:*")

        # a wrong password: said at start, and the fallback counts
        rh.wait_log(ng2, "cannot be reached (AUTH: WRONGPASS")
        c = connect(ng2)
        c.ehlo()
        assert message(c, "t@example.org").is_(250)
        c.close()
    finally:
        ng.stop()
        ng2.stop()
        r.stop()
    ng.assert_log_clean()
    ng2.assert_log_clean()


# --------------------------------------------------------------------------
# configuration


BAD = [
    (["relay_limit auth_user a window=1m messages=1 scope=cluster;"],
     'relay_limit: inbound_limit: bad scope "cluster" (node or fleet)'),
    (["relay_limit auth_user a window=1m messages=1 scope=fleet;"],
     'relay_limit: scope=fleet needs "relay_limit_redis" in'),
    (["relay_destination_limit a.test messages_per_minute=9 "
      "scope=fleet;"],
     'relay_destination_limit: scope=fleet needs "relay_limit_redis" in'),
    (["relay_limit_redis 127.0.0.1:6379;",
      "relay_destination_limit a.test connections=2 scope=fleet;"],
     "destination_limits[0].scope: fleet needs messages_per_minute or "
     "messages_per_hour"),
    (["relay_destination_limit a.test messages_per_minute=9 per=address;"],
     "destination_limits[0].per: address needs scope fleet"),
    (["relay_limit_redis 127.0.0.1:6379;",
      "relay_limit_redis_fallback sometimes;"],
     'invalid value "sometimes"'),
    (["relay_limit_redis 127.0.0.1:6379;", "relay_limit_redis_user u;"],
     '"relay_limit_redis_user" needs "relay_limit_redis_password"'),
    (["relay_limit_redis_password p;"],
     '"relay_limit_redis_user" and "relay_limit_redis_password" need '
     '"relay_limit_redis"'),
    (["relay_limit_redis 127.0.0.1:6379;", "relay_limit_redis 127.0.0.2;"],
     '"relay_limit_redis" directive is duplicate'),
    (["relay_limit_redis 127.0.0.1:99999;"], "invalid port"),
    (["relay_limit_redis 127.0.0.1:6379;", "relay_limit_fleet_nodes 0;"],
     '"relay_limit_fleet_nodes" and "relay_limit_redis_timeout" must be '
     'above 0'),
]


@pytest.mark.parametrize("lines,message", BAD)
def test_bad_configuration_is_refused(lines, message):
    err = dh.nginx_t(lines)
    assert err and message in err, err


def test_good_configuration_passes():
    assert dh.nginx_t([
        "relay_limit_redis 127.0.0.1:6379 unix:/run/redis/redis.sock;",
        "relay_limit_redis_timeout 20ms;",
        "relay_limit_redis_fallback tempfail;",
        "relay_limit tenant acme window=1h messages=100 scope=fleet;",
        "relay_destination_limit .example.com messages_per_minute=60 "
        "messages_per_hour=1000 scope=fleet per=address;",
    ]) is None


def test_unreachable_redis_at_start_falls_back(fresh):
    port = rh.alloc_port()              # nothing listens there
    ng = fresh(workers=1, stream_extra="""
    relay_limit_redis 127.0.0.1:%d;
    relay_limit_fleet_nodes 2;
    relay_limit sender_domain away.example window=1h messages=4 scope=fleet;
""" % port)
    rh.wait_log(ng, "relay limits: redis 127.0.0.1:%d cannot be reached "
                "(Connection refused)" % port)
    two_then_refused(ng, "x@away.example")
