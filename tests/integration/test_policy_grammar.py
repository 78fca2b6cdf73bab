"""
One grammar for nginx.conf and the fleet policy: the directives that mirror
policy statements (relay_route is `route`, relay_limit `inbound_limit`,
relay_tls_policy `tls`, relay_retry_backoff/relay_queue_lifetime/
relay_delay_warning the fields of `retry *`, ...) are parsed and checked
by the policy library, as `relayctl check` checks a policy.  The same
words are accepted by both or refused by both, with the same message:
nginx -t says `DIRECTIVE: MESSAGE in FILE:LINE`, relayctl
`FILE:LINE: MESSAGE` (parse errors) or `FILE: invalid policy: MESSAGE`.

No server is started: `nginx -t` (deliveryharness.nginx_t) and
`relayctl check` ($RELAYCTL, else next to controld as controlharness
finds it) only.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

import controlharness as ch
import deliveryharness as dh

RELAYCTL = os.environ.get("RELAYCTL") or str(
    Path(ch.CONTROLD).parent / "relayctl")

EMERG_RE = re.compile(r"\[emerg\] \d+#\d+: (?P<directive>[a-z_]+): "
                      r"(?P<message>.*) in \S+:\d+$")

BRACKETS = 'an IP address needs brackets: "[192.0.2.1]:25"'

# (nginx.conf lines, the same as policy text, the message; None: valid)
CASES = [
    (["relay_route example.com 10.0.0.1;"],
     "route example.com 10.0.0.1;",
     'routes[0].next_hops[0]: "10.0.0.1": ' + BRACKETS),
    (["relay_route example.com [10.0.0.1]:25 mx.example.net;"],
     "route example.com [10.0.0.1]:25 mx.example.net;", None),
    (["relay_route Example.com [10.0.0.1];"],
     "route Example.com [10.0.0.1];",
     "routes[0].pattern: must be lowercase"),
    (["relay_route a.test [10.0.0.1];", "relay_route a.test [10.0.0.2];"],
     "route a.test [10.0.0.1];\nroute a.test [10.0.0.2];",
     'routes[1].pattern: "a.test" duplicates routes[0]'),
    (["relay_route a.test [10.0.0.1] x=1;"],
     "route a.test [10.0.0.1] x=1;",
     'route: unexpected parameter "x=1"'),
    (["relay_backup_mx c.test 127.0.0.11:2525;"],
     "backup_mx c.test 127.0.0.11:2525;",
     'backup_mx[0].hosts[0]: "127.0.0.11:2525": ' + BRACKETS),
    (["relay_backup_mx c.test [127.0.0.11]:2525;"],
     "backup_mx c.test [127.0.0.11]:2525;", None),
    (["relay_fallback_relay 192.0.2.9:25;"],
     "fallback_relay 192.0.2.9:25;",
     'fallback_relay[0]: "192.0.2.9:25": ' + BRACKETS),
    (["relay_retry_backoff 5x 1h;"],
     "retry * min=5x max=1h lifetime=5d;",
     'retry: bad duration "5x"'),
    (["relay_retry_backoff 1h 5m;"],
     "retry * min=1h max=5m lifetime=5d;",
     "retry[0].backoff_max_s: 300s is less than backoff_min_s (3600s)"),
    (["relay_queue_lifetime 1m;"],
     "retry * min=300s max=4000s lifetime=1m;",
     "retry[0].lifetime_s: 60s is less than backoff_min_s (300s)"),
    (["relay_retry_backoff 1s 2s;", "relay_queue_lifetime 1h;",
      "relay_delay_warning 10m;"],
     "retry * min=1s max=2s lifetime=1h delay_warning=10m;", None),
    (["relay_limit client_ip 10.0.0.1/8 window=1m messages=1;"],
     "inbound_limit client_ip 10.0.0.1/8 window=1m messages=1;",
     "inbound_limits[0].match: host bits set after the prefix length"),
    (["relay_limit client_ip * window=1m;"],
     "inbound_limit client_ip * window=1m;",
     "inbound_limits[0]: neither messages nor recipients is limited"),
    (["relay_limit sender_domain .sub.example window=1h messages=2;"],
     "inbound_limit sender_domain .sub.example window=1h messages=2;", None),
    (["relay_destination_limit x.test rate=2;"],
     "destination_limit x.test rate=2;",
     'destination_limit: unknown parameter "rate"'),
    (["relay_destination_limit slow.test backoff=4s;"],
     "destination_limit slow.test backoff=4s;",
     "destination_limits[0].backoff_reply_pattern: needed with backoff_s"),
    (['relay_destination_limit slow.test "backoff_reply=rate limited" '
      'backoff=4s;'],
     'destination_limit slow.test backoff_reply="rate limited" backoff=4s;',
     None),
    (["relay_egress_pool bulk ehlo=bulk.example.net mx.example.net;"],
     "egress_pool bulk ehlo=bulk.example.net mx.example.net;",
     'egress_pools[0].addresses[0].address: "mx.example.net" is not an '
     'IPv4 or IPv6 address'),
    (["relay_egress_pool bulk ehlo=Bulk.example.net 127.0.0.1;"],
     "egress_pool bulk ehlo=Bulk.example.net 127.0.0.1;",
     "egress_pools[0].ehlo_name: must be lowercase"),
    (["relay_egress_rule tenant acme nosuch;"],
     "egress_rule tenant acme nosuch;",
     'egress_rules[0].pool: no egress pool "nosuch"'),
    (["relay_egress_rule ip acme p;"],
     "egress_rule ip acme p;",
     'egress_rule: unknown key "ip" (sender_domain, auth_user or tenant)'),
    (["relay_egress_rule tenant acme bulk;",
      "relay_egress_pool bulk ehlo=bulk.example.net 127.0.0.1 weight=3;"],
     "egress_rule tenant acme bulk;\n"
     "egress_pool bulk ehlo=bulk.example.net 127.0.0.1 weight=3;", None),
    (["relay_tls_policy a.test sometimes;"],
     "tls a.test sometimes;",
     'tls: expected "required" or "optional", got "sometimes"'),
    (["relay_tls_policy .a.test optional verify;"],
     "tls .a.test optional verify;", None),
    # scopes (issue 12): the same words, and a fleet scope with Redis
    (["relay_limit tenant acme window=1m messages=1 scope=node;"],
     "inbound_limit tenant acme window=1m messages=1 scope=node;", None),
    (["relay_limit_redis 127.0.0.1:6379;",
      "relay_limit auth_user * window=1h messages=9 scope=fleet;",
      "relay_destination_limit .a.test messages_per_minute=9 scope=fleet "
      "per=address;"],
     "inbound_limit auth_user * window=1h messages=9 scope=fleet;\n"
     "destination_limit .a.test messages_per_minute=9 scope=fleet "
     "per=address;", None),
    (["relay_limit client_ip * window=1m messages=1 scope=cluster;"],
     "inbound_limit client_ip * window=1m messages=1 scope=cluster;",
     'inbound_limit: bad scope "cluster" (node or fleet)'),
    (["relay_destination_limit a.test messages_per_minute=1 per=ip;"],
     "destination_limit a.test messages_per_minute=1 per=ip;",
     'destination_limit: bad per "ip" (pool or address)'),
    (["relay_destination_limit a.test messages_per_minute=1 per=address;"],
     "destination_limit a.test messages_per_minute=1 per=address;",
     "destination_limits[0].per: address needs scope fleet"),
    (["relay_limit_redis 127.0.0.1:6379;",
      "relay_destination_limit a.test connections=1 scope=fleet;"],
     "destination_limit a.test connections=1 scope=fleet;",
     "destination_limits[0].scope: fleet needs messages_per_minute or "
     "messages_per_hour"),
]


@pytest.fixture(scope="module")
def relayctl():
    if not os.access(RELAYCTL, os.X_OK):
        raise AssertionError(f"relayctl binary not found: {RELAYCTL} "
                             "(set RELAYCTL)")
    return RELAYCTL


def nginx_says(lines):
    """(directive, message) of nginx -t's complaint, or None."""
    err = dh.nginx_t(lines)
    if err is None:
        return None
    m = EMERG_RE.search(err)
    assert m, "not a directive's complaint: %r" % err
    return m.group("directive"), m.group("message")


def relayctl_says(relayctl, tmp_path, text):
    """relayctl check's message without its place, or None."""
    f = tmp_path / "p.policy"
    f.write_text(text + "\n")
    r = subprocess.run([relayctl, "check", str(f)], capture_output=True,
                       text=True, timeout=30)
    if r.returncode == 0:
        return None
    assert r.returncode == 3, (r.returncode, r.stderr)
    line = r.stderr.strip().splitlines()[-1]
    for prefix in ("relayctl: %s: invalid policy: " % f,
                   "relayctl: %s:" % f):
        if line.startswith(prefix):
            rest = line[len(prefix):]
            return re.sub(r"^\d+: ", "", rest)
    raise AssertionError("unexpected relayctl output: %r" % line)


@pytest.mark.parametrize("lines,text,message", CASES,
                         ids=[c[1].split(";")[0] for c in CASES])
def test_directive_and_statement_agree(relayctl, tmp_path, lines, text,
                                       message):
    said = nginx_says(lines)
    checked = relayctl_says(relayctl, tmp_path, text)

    assert checked == message, "relayctl check: %r" % checked
    if message is None:
        assert said is None, "nginx -t refused: %r" % (said,)
    else:
        assert said is not None, "nginx -t accepted %r" % lines
        assert said[1] == message, said


def test_route_ip_without_brackets_refused_by_nginx_t():
    said = nginx_says(["relay_route example.com 10.0.0.1;"])
    assert said == ("relay_route",
                    'routes[0].next_hops[0]: "10.0.0.1": ' + BRACKETS), said


def test_error_names_the_directive_and_its_line():
    err = dh.nginx_t(["relay_route a.test [10.0.0.1];",
                      "relay_tls_policy a.test sometimes;"])
    m = EMERG_RE.search(err or "")
    assert m and m.group("directive") == "relay_tls_policy", err
    # the probe's stream block starts at line 7, its lines at 13
    assert err.endswith("nginx.conf:14"), err


def test_retry_error_at_the_last_retry_directive():
    err = dh.nginx_t(["relay_queue_lifetime 2m;",
                      "relay_route a.test [x.test];",
                      "relay_delay_warning 5m;"])
    m = EMERG_RE.search(err or "")
    assert m and m.group("directive") == "relay_delay_warning", err
    assert m.group("message") == ("retry[0].lifetime_s: 120s is less than "
                                  "backoff_min_s (300s)"), err
    assert err.endswith("nginx.conf:15"), err


def test_several_fallback_relays_add_up():
    # as fallback_relay statements do; each hop once
    assert dh.nginx_t(["relay_fallback_relay [192.0.2.1]:25;",
                       "relay_fallback_relay relay.example.net;"]) is None
    said = nginx_says(["relay_fallback_relay [192.0.2.1]:25;",
                       "relay_fallback_relay [192.0.2.1]:25;"])
    assert said == ("relay_fallback_relay",
                    'fallback_relay[1]: "[192.0.2.1]:25" duplicates '
                    'fallback_relay[0]'), said
