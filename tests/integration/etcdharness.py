"""
etcd for the tests: a cluster of real members (Debian's etcd-server,
/usr/bin/etcd) on loopback, each with a data dir of its own under the
test's directory, started with the static --initial-cluster bootstrap,
killed and restarted by the tests, stopped at the end.  Ports: TCP
26000-26999 (probed, never reused by this process), shared with the other
processes of the etcd fleet tests (controld replicas, nginx, sinks).

Health is asked of etcd itself (etcdctl endpoint health, Debian's
etcd-client), never guessed from a sleep.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

import relayharness as h

ETCD = os.environ.get("ETCD") or "/usr/bin/etcd"
ETCDCTL = os.environ.get("ETCDCTL") or "/usr/bin/etcdctl"
PORTS = h.PortRange(26000, 26999, 26000 + (os.getpid() * 11) % 1000)


def alloc_port(ips=("127.0.0.1",)):
    """A TCP port of 26000-26999 free on every address of ips."""
    return PORTS.alloc(ips)


def wait_for(cond, timeout=10.0, what="condition", interval=0.05):
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(interval)


def require():
    for b in (ETCD, ETCDCTL):
        if not os.access(b, os.X_OK):
            raise AssertionError("%s not found: install Debian's etcd-server "
                                 "and etcd-client (./build.sh deps)" % b)


class Member:
    def __init__(self, cluster, name, client_port, peer_port):
        self.cluster = cluster
        self.name = name
        self.client_port = client_port
        self.peer_port = peer_port
        self.proc = None
        self.dir = cluster.dir / name
        self.log_path = cluster.dir / ("%s.log" % name)

    @property
    def endpoint(self):
        return "127.0.0.1:%d" % self.client_port

    def args(self):
        client = "http://127.0.0.1:%d" % self.client_port
        peer = "http://127.0.0.1:%d" % self.peer_port
        return [ETCD, "--name", self.name, "--data-dir", str(self.dir),
                "--listen-client-urls", client,
                "--advertise-client-urls", client,
                "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer,
                "--initial-cluster", self.cluster.initial_cluster(),
                "--initial-cluster-state", "new",
                "--initial-cluster-token", self.cluster.token,
                # a quick election when a member dies
                "--heartbeat-interval", "50", "--election-timeout", "500",
                "--logger", "zap", "--log-level", "warn"]

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args(), stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()
        return self

    def kill(self, sig=signal.SIGKILL):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    """n members; store() is controld's --store value."""

    def __init__(self, workdir, n=3):
        require()
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.token = "relay-test-%d-%d" % (os.getpid(), time.monotonic_ns())
        self.members = [Member(self, "m%d" % (i + 1), alloc_port(),
                               alloc_port()) for i in range(n)]

    def initial_cluster(self):
        return ",".join("%s=http://127.0.0.1:%d" % (m.name, m.peer_port)
                        for m in self.members)

    def endpoints(self, members=None):
        return ",".join(m.endpoint for m in (members or self.members))

    def store(self):
        return "etcd://" + self.endpoints()

    def start(self, timeout=30):
        for m in self.members:
            m.start()
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout=30, members=None):
        members = members or [m for m in self.members if m.alive()]

        def healthy():
            for m in members:
                if not m.alive():
                    raise AssertionError("etcd %s exited:\n%s"
                                         % (m.name, self.log(m)[-3000:]))
            r = self.ctl("endpoint", "health",
                         endpoints=self.endpoints(members), timeout=5)
            return r.returncode == 0
        wait_for(healthy, timeout, "etcd members %s to be healthy"
                 % [m.name for m in members], interval=0.2)

    def ctl(self, *args, endpoints=None, timeout=10):
        env = dict(os.environ, ETCDCTL_API="3")
        return subprocess.run([ETCDCTL, "--endpoints",
                               endpoints or self.endpoints(),
                               "--command-timeout", "3s", *args],
                              env=env, capture_output=True, text=True,
                              timeout=timeout)

    def keys(self, prefix="/relay/"):
        r = self.ctl("get", "--prefix", "--keys-only", prefix)
        return [l for l in r.stdout.splitlines() if l.strip()]

    def log(self, m):
        return m.log_path.read_text(errors="replace") \
            if m.log_path.exists() else ""

    def stop(self):
        for m in self.members:
            m.kill(signal.SIGTERM)
