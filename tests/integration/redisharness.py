"""
Harness for the fleet limit tests: a private redis-server (Debian's
/usr/bin/redis-server) on a loopback port (deliveryharness's range,
23000-23999) with a directory of its own, no persistence, started and
stopped by the tests; never the system's service (port 6379), which the
tests neither need nor touch.

Also a small RESP client (no Python Redis package is needed) to read the
counters the relay writes, as an operator would with redis-cli.
"""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import deliveryharness as dh
import relayharness as h


REDIS_SERVER = "/usr/bin/redis-server"


def alloc_port():
    """A loopback port of deliveryharness's range, never handed out twice."""
    return dh.alloc_port(("127.0.0.1",))


def available():
    return os.path.exists(REDIS_SERVER)


class Redis:
    """One redis-server of the tests'.  kill() and start() again keep the
    port: a restarted Redis is the same address for the relays."""

    def __init__(self, workdir, password=None, user=None, db=0):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = alloc_port()
        self.password = password
        self.user = user
        self.db = db                    # what cmd() SELECTs
        self.proc = None

    def start(self, timeout=10):
        args = [REDIS_SERVER, "--port", str(self.port),
                "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--protected-mode", "no",
                "--logfile", str(self.dir / "redis.log")]
        if self.user:
            args += ["--user", "default", "off",
                     "--user", self.user, "on", ">" + self.password,
                     "~*", "+@all"]
        elif self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        h.wait_until(self._answers, timeout, what="redis-server to answer")
        return self

    def _answers(self):
        if self.proc.poll() is not None:
            raise AssertionError("redis-server exited: %s"
                                 % self.log()[-2000:])
        try:
            return self.cmd("PING") == "PONG"
        except OSError:
            return False

    def log(self):
        f = self.dir / "redis.log"
        return f.read_text(errors="replace") if f.exists() else ""

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    # a RESP client: one connection per command, enough for tests

    def cmd(self, *args, timeout=5):
        s = socket.create_connection(("127.0.0.1", self.port),
                                     timeout=timeout)
        try:
            f = s.makefile("rb")
            if self.password:
                auth = ([self.user] if self.user else []) + [self.password]
                s.sendall(_encode(["AUTH"] + auth))
                _read(f)
            if self.db:
                s.sendall(_encode(["SELECT", self.db]))
                _read(f)
            s.sendall(_encode(list(args)))
            return _read(f)
        finally:
            s.close()

    def keys(self, pattern):
        return sorted(self.cmd("KEYS", pattern))

    def hgetall(self, key):
        flat = self.cmd("HGETALL", key)
        return dict(zip(flat[::2], flat[1::2]))


class RedisError(Exception):
    pass


def _encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def _read(f):
    line = f.readline()
    if not line:
        raise OSError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        if n < 0:
            return None
        return [_read(f) for _ in range(n)]
    raise OSError("bad RESP line %r" % line)


def wait_log(ng, text, timeout=10, since=0):
    """Waits until nginx's error.log (from offset since) has text."""
    def seen():
        with open(ng.prefix / "logs" / "error.log", "rb") as f:
            f.seek(since)
            return text in f.read().decode("utf-8", "replace")
    h.wait_until(seen, timeout, what="%r in error.log" % text)


def now_window(window, margin=0.5):
    """Waits until at least `margin` s into a window of `window` s and
    at least 2 s before its end; returns its start."""
    while True:
        t = time.time()
        into = t % window
        if margin <= into <= window - 2:
            return int(t - into)
        time.sleep(0.05)
