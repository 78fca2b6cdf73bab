"""
Harness for the observability tests (test_metrics.py, test_accounting.py):
scraping an exposition over HTTP, parsing it with Debian's
python3-prometheus-client parser (which refuses what a Prometheus server
would refuse), values by name and labels, the accounting log as JSON
lines.

Ports: 26000-26499 (HTTP listeners of the tests).
"""

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

import relayharness as h


PORT_FIRST, PORT_LAST = 26000, 26499
_used = set()


def alloc_port(ip="127.0.0.1"):
    for port in range(PORT_FIRST, PORT_LAST + 1):
        if port in _used:
            continue
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError:
            continue
        finally:
            s.close()
        _used.add(port)
        return port
    raise RuntimeError("no free port in %d-%d" % (PORT_FIRST, PORT_LAST))


def http_get(port, path="/metrics", method="GET", timeout=5):
    """(status, headers, body bytes) of one request to 127.0.0.1:port."""
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path),
                                 method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def scrape(port, path="/metrics"):
    status, headers, body = http_get(port, path)
    assert status == 200, "GET %s -> %s %r" % (path, status, body[:200])
    return body.decode("utf-8")


def parse(text):
    """{(sample name, ((label, value), ...)): value}, checking that the
    exposition parses, that every family has its HELP and TYPE, and that
    no series appears twice."""
    out = {}
    families = list(text_string_to_metric_families(text))
    for fam in families:
        assert fam.documentation, "family %s without HELP" % fam.name
        assert fam.type in ("counter", "gauge", "histogram"), \
            "family %s of type %s" % (fam.name, fam.type)
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, "series twice: %r" % (key,)
            out[key] = s.value
    # the parser folds repeats of a family: count the TYPE lines ourselves
    types = [l.split()[2] for l in text.splitlines()
             if l.startswith("# TYPE ")]
    assert len(types) == len(set(types)), "a family twice: %r" % (
        sorted(t for t in types if types.count(t) > 1),)
    return out


def value(samples, name, **labels):
    """The value of one series (0 when absent)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples, name, **labels):
    """The sum over the series of name whose labels include labels."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items()
               if n == name and want <= set(ls))


def label_values(samples, name, label):
    return {dict(ls).get(label) for (n, ls), v in samples.items()
            if n == name}


def wait_value(port, pred, timeout=15, what="metrics"):
    """Scrapes until pred(samples) is true; returns the samples."""
    last = {}

    def look():
        nonlocal last
        last = parse(scrape(port))
        return pred(last) and last
    try:
        return h.wait_until(look, timeout, 0.1, what)
    except AssertionError:
        raise AssertionError("timed out waiting for %s; last scrape:\n%s"
                             % (what, "\n".join(
                                 "%s%s %s" % (n, dict(ls), v)
                                 for (n, ls), v in sorted(last.items())
                                 if v and not n.endswith("_bucket"))))


def http_block(port):
    return ("    server {\n"
            "        listen 127.0.0.1:%d;\n"
            "        location = /metrics { relay_metrics; }\n"
            "    }" % port)


# --------------------------------------------------------------------------
# the accounting log


def records(path):
    """Every line of an accounting log, each parsed as JSON (the file must
    be UTF-8 and every line an object)."""
    p = Path(path)
    if not p.exists():
        return []
    data = p.read_bytes()
    assert data == b"" or data.endswith(b"\n"), \
        "a partial last line: %r" % data[-200:]
    out = []
    for n, line in enumerate(data.decode("utf-8").split("\n")[:-1], 1):
        try:
            r = json.loads(line)
        except ValueError as e:
            raise AssertionError("%s:%d does not parse (%s): %r"
                                 % (path, n, e, line))
        assert isinstance(r, dict) and "type" in r and "time" in r, line
        out.append(r)
    return out


def wait_records(paths, pred, timeout=15, what="accounting records"):
    if isinstance(paths, (str, Path)):
        paths = [paths]

    def look():
        rs = [r for p in paths for r in records(p)]
        return pred(rs) and rs
    return h.wait_until(look, timeout, 0.1, what)
