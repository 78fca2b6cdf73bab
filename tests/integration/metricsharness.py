"""
Harness for the observability tests (test_metrics.py, test_accounting.py,
test_prometheus.py, test_stats.py): scraping an exposition over HTTP,
parsing it with Debian's python3-prometheus-client parser (which refuses
what a Prometheus server would refuse), values by name and labels, the
accounting log as JSON lines, and a real Prometheus (Debian's package)
started on loopback with a generated configuration and its storage under
the test's temporary directory, never the system's service.

Ports: 26000-26499 (HTTP listeners of the tests and Prometheus).
"""

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

import relayharness as h


PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
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


# --------------------------------------------------------------------------
# a real Prometheus


class Prometheus:
    """Debian's prometheus on 127.0.0.1:port with a generated configuration
    (one job per target, scraped every second) and its data under workdir;
    the system's service, if any, is neither used nor touched."""

    def __init__(self, workdir, targets):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.targets = dict(targets)        # job -> "127.0.0.1:port"
        self.port = alloc_port()
        self.proc = None

    def start(self, timeout=30):
        if not os.access(PROMETHEUS, os.X_OK):
            raise AssertionError("prometheus not installed (Debian package "
                                 "prometheus, in build.sh's packages)")
        conf = ["global:", "  scrape_interval: 1s",
                "  scrape_timeout: 1s", "  evaluation_interval: 1s",
                "scrape_configs:"]
        for job, target in self.targets.items():
            conf += ["  - job_name: %s" % job,
                     "    metrics_path: /metrics",
                     "    static_configs:",
                     "      - targets: ['%s']" % target]
        (self.dir / "prometheus.yml").write_text("\n".join(conf) + "\n")
        log = open(self.dir / "prometheus.log", "ab")
        self.proc = subprocess.Popen(
            [PROMETHEUS, "--config.file=%s" % (self.dir / "prometheus.yml"),
             "--storage.tsdb.path=%s" % (self.dir / "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port,
             "--storage.tsdb.retention.time=1h"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True)
        log.close()

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("prometheus exited:\n"
                                     + self.log_text()[-3000:])
            try:
                return http_get(self.port, "/-/ready", timeout=1)[0] == 200
            except OSError:
                return False
        h.wait_until(ready, timeout, 0.2, "prometheus to be ready")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log_text(self):
        p = self.dir / "prometheus.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def query(self, expr):
        """The instant vector of expr: [(labels, float)]."""
        status, _, body = http_get(
            self.port, "/api/v1/query?" + urllib.parse.urlencode(
                {"query": expr}))
        assert status == 200, "query %s -> %s %r" % (expr, status, body)
        r = json.loads(body)
        assert r["status"] == "success", r
        return [(x["metric"], float(x["value"][1]))
                for x in r["data"]["result"]]

    def scalar(self, expr):
        """The value of a one-element result (None when empty)."""
        v = self.query(expr)
        assert len(v) <= 1, "%s: %r" % (expr, v)
        return v[0][1] if v else None

    def wait(self, expr, pred, timeout=20):
        last = [None]

        def look():
            last[0] = self.scalar(expr)
            return last[0] is not None and pred(last[0])
        try:
            h.wait_until(look, timeout, 0.25, expr)
        except AssertionError:
            raise AssertionError("prometheus: %s stayed %r; targets: %s"
                                 % (expr, last[0], self.targets_health()))
        return last[0]

    def targets_health(self):
        status, _, body = http_get(self.port, "/api/v1/targets")
        if status != 200:
            return status
        return [(t["labels"].get("job"), t["health"], t.get("lastError"))
                for t in json.loads(body)["data"]["activeTargets"]]
