"""Helpers shared by bench/latency.py and bench/idle.py.

Run with /usr/bin/python3 (Debian's interpreter), not a bare python3.

* netns_reexec(): re-run the calling script inside a fresh network namespace
  that holds only loopback, so no benchmark packet can leave 127.0.0.0/8
  whatever the server under test tries (the relay resolves MX records with
  c-ares and delivers remote mail itself).  Not optional.
* Servers: start/stop the relay and a private Postfix through bench/lib.sh.
* SmtpClient: a tiny blocking SMTP client on a raw socket.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = os.path.join(HERE, "lib.sh")


def log(msg):
    sys.stderr.write("[bench %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def netns_reexec():
    if os.environ.get("BENCH_IN_NETNS"):
        links = subprocess.run(["ip", "-o", "link", "show"],
                               stdout=subprocess.PIPE, text=True).stdout
        if any(": lo:" not in l for l in links.splitlines() if l.strip()):
            sys.exit("not in a loopback-only network namespace")
        return
    env = dict(os.environ, BENCH_IN_NETNS="1")
    argv = ["unshare", "-n", "--", "bash", "-c",
            'ip link set lo up && exec "$@"', "_",
            sys.executable, os.path.abspath(sys.argv[0])] + sys.argv[1:]
    os.execvpe("unshare", argv, env)


def lib(*args, check=True):
    """Run a bench/lib.sh function as a command."""
    r = subprocess.run(["bash", LIB] + [str(a) for a in args],
                       stdout=subprocess.PIPE, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("lib.sh %s failed (%d)" % (args[0], r.returncode))
    return r.stdout.strip()


class Servers:
    """Owns a work dir and the servers started in it; stop() cleans up."""

    def __init__(self, keep=False):
        base = os.environ.get("BENCH_DIR")
        if base:
            os.makedirs(base, exist_ok=True)
            self.work = base
            self.own_work = False
        else:
            self.work = tempfile.mkdtemp(prefix="relay-bench.", dir="/var/tmp")
            self.own_work = True
        os.chmod(self.work, 0o755)
        self.keep = keep
        # the spools' file system: a loop-mounted journaled ext4 image by
        # default (BENCH_FS=loop), see lib.sh bench_fs_setup
        self.root = lib("bench_fs_setup", self.work)
        self.relay_dir = os.path.join(self.root, "relay")
        self.pf_dir = os.path.join(self.root, "postfix")
        self.relay_up = False
        self.pf_up = False

    def settle(self):
        """Wait until file creation is cheap again (lib.sh fs_settle)."""
        lib("fs_settle", self.root, check=False)

    def fs_name(self):
        r = subprocess.run(["df", "--output=fstype,source", self.root],
                           stdout=subprocess.PIPE, text=True)
        return " ".join(r.stdout.split()[2:])

    def start_relay(self, port):
        lib("relay_start", self.relay_dir, port)
        self.relay_up = True

    def stop_relay(self):
        if self.relay_up:
            lib("relay_stop", self.relay_dir, check=False)
            self.relay_up = False

    def start_postfix(self, port, mode="hold", sink_port=""):
        lib("pf_start", self.pf_dir, port, mode, sink_port)
        self.pf_up = True

    def start_sink(self, port):
        """smtp-sink on 127.0.0.1:port, for both servers to relay to."""
        self.sink_dir = os.path.join(self.root, "sink")
        lib("sink_start", self.sink_dir, port)

    def stop_postfix(self):
        if self.pf_up:
            lib("pf_stop", self.pf_dir, check=False)
            self.pf_up = False

    def relay_master_pid(self):
        with open(os.path.join(self.relay_dir, "logs", "nginx.pid")) as f:
            return int(f.read().strip())

    def stop(self, crashed=False):
        if crashed:
            lib("bench_dump_logs", self.relay_dir, self.pf_dir, check=False)
        self.stop_relay()
        self.stop_postfix()
        if getattr(self, "sink_dir", None):
            lib("sink_stop", self.sink_dir, check=False)
        os.environ["KEEP"] = "1" if self.keep else os.environ.get("KEEP", "0")
        lib("bench_fs_teardown", self.work, check=False)
        if self.own_work and not self.keep:
            shutil.rmtree(self.work, ignore_errors=True)
            os.sync()     # see lib.sh bench_trash_empty
        else:
            log("kept %s" % self.work)


def parse_addr(s):
    host, _, port = s.rpartition(":")
    return (host or "127.0.0.1", int(port))


class SmtpError(Exception):
    pass


class SmtpClient:
    """Blocking SMTP over one socket; replies are read whole."""

    def __init__(self, addr, timeout=30.0, source=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect(addr)
        self.buf = b""

    def reply(self):
        """Read one (possibly multi-line) reply; return (code, text)."""
        lines = []
        while True:
            i = self.buf.find(b"\r\n")
            if i < 0:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise SmtpError("connection closed; got %r" % lines)
                self.buf += chunk
                continue
            line, self.buf = self.buf[:i], self.buf[i + 2:]
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                code = int(line[:3])
                return code, b"\n".join(lines).decode("latin-1")

    def expect(self, want):
        code, text = self.reply()
        if code != want:
            raise SmtpError("expected %d, got %s" % (want, text))
        return text

    def cmd(self, line, want):
        self.sock.sendall(line + b"\r\n")
        return self.expect(want)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def make_body(size, seq=0):
    """An RFC 5322 message of about size payload bytes, CRLF lines, no
    terminating dot, ending with CRLF."""
    hdr = ("From: <sender@client.test>\r\n"
           "To: <rcpt@remote.test>\r\n"
           "Subject: latency probe %d\r\n"
           "Message-ID: <%d.%d@client.test>\r\n"
           "\r\n" % (seq, seq, os.getpid())).encode()
    line = (b"abcdefghijklmnopqrstuvwxyz0123456789" * 3)[:76] + b"\r\n"
    n = max(1, size // len(line))
    return hdr + line * n


def nginx_rss_kb(master):
    """Summed VmRSS (kB) of the nginx master and its direct children, and
    the list of pids counted; also the summed Pss when the kernel has
    smaps_rollup (None otherwise)."""
    total, pss, pids = 0, 0, []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        pid = int(p)
        try:
            with open("/proc/%d/stat" % pid) as f:
                st = f.read()
            ppid = int(st.rsplit(")", 1)[1].split()[1])
            if pid != master and ppid != master:
                continue
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            pids.append(pid)
            if pss is not None:
                try:
                    with open("/proc/%d/smaps_rollup" % pid) as f:
                        for line in f:
                            if line.startswith("Pss:"):
                                pss += int(line.split()[1])
                except OSError:
                    pss = None
        except (OSError, ValueError, IndexError):
            pass
    return total, pss, sorted(pids)


def percentile(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    k = (len(sorted_vals) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)
