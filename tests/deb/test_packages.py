"""
The Debian packages, installed on this machine as an operator would: what
./build.sh deb left in build/deb/ (or $RELAY_DEB_DIR) is checked with
lintian's log, installed with dpkg -i, looked at (files, users,
permissions, the stock nginx), run (controld and the relay nginx with the
command lines of their systemd units, the shipped configuration moved to
loopback test ports and a private prefix for pid and logs, mail in over
SMTP and out over POP3, a binary upgrade), and purged, after which nothing
of it may be left.

Root only (dpkg).  The packages must not be installed when it starts,
unless an earlier run of this file installed them (its marker file says
so): it never purges an operator's installation.  Two runs on one machine
take turns (a lock in /run/lock).  The system users stay
after the purge, as Debian's do; this test removes them at its end, to
leave the machine as it found it.
"""

import fcntl
import grp
import os
import poplib
import pwd
import re
import urllib.request
import shlex
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(TOP / "tests" / "integration"))

import controlharness as ch  # noqa: E402
import relayharness as h  # noqa: E402

VERSION = (TOP / "VERSION").read_text().split()[0]
DEB_DIR = Path(os.environ.get("RELAY_DEB_DIR") or TOP / "build" / "deb")
PACKAGES = ["libnginx-mod-stream-relay", "nginx-relay", "nginx-relay-controld"]
MARKER = Path("/var/lib/nginx-relay-deb-test.installed")
LOCK = "/run/lock/nginx-relay-deb-test.lock"
USERS = ["_nginx-relay", "_nginx-relay-controld"]
UNITS = Path("/lib/systemd/system")
NODE = "deb-node"
USER, PASSWORD = "deb", "deb-password"

# what a purge must leave behind: none of these
LEFT_BEHIND = [
    "/etc/nginx-relay", "/var/spool/nginx-relay", "/var/lib/nginx-relay",
    "/var/lib/nginx-relay-controld", "/var/log/nginx-relay",
    "/run/nginx-relay", "/usr/lib/nginx/modules/ngx_stream_relay_module.so",
    "/usr/share/nginx/modules-available/mod-stream-relay.conf",
    "/etc/nginx/modules-enabled/70-mod-stream-relay.conf",
    "/etc/nginx/modules-enabled/70-mod-stream-relay.conf.removed",
    "/lib/systemd/system/nginx-relay.service",
    "/lib/systemd/system/nginx-relay-controld.service",
    "/usr/lib/sysusers.d/nginx-relay.conf",
    "/usr/lib/sysusers.d/nginx-relay-controld.conf",
    "/usr/lib/tmpfiles.d/nginx-relay.conf",
    "/usr/lib/tmpfiles.d/nginx-relay-controld.conf",
    "/etc/logrotate.d/nginx-relay", "/usr/sbin/controld",
    "/usr/sbin/relayctl", "/usr/share/doc/nginx-relay",
    "/usr/share/doc/nginx-relay-controld",
    "/usr/share/doc/libnginx-mod-stream-relay",
    "/usr/share/man/man8/controld.8.gz", "/usr/share/man/man8/relayctl.8.gz",
    "/usr/share/man/man5/nginx-relay.5.gz",
]

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="installs packages: root only")


def run(*argv, check=True, **kw):
    kw.setdefault("timeout", 300)
    p = subprocess.run([str(a) for a in argv], capture_output=True,
                       text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError("%s: exit %d\n%s%s" % (" ".join(map(str, argv)),
                             p.returncode, p.stdout, p.stderr))
    return p


def dpkg(*args):
    """dpkg, waiting its turn when apt or dpkg of someone else runs."""
    deadline = time.monotonic() + 600
    while True:
        p = run("dpkg", *args, check=False)
        if p.returncode == 0 or "lock" not in p.stderr \
                or time.monotonic() > deadline:
            return p
        time.sleep(2)


def installed(pkg):
    p = run("dpkg-query", "-W", "-f=${Status}", pkg, check=False)
    return p.returncode == 0 and "installed" in p.stdout.split()[-1:]


def debs():
    out = []
    for pkg in PACKAGES:
        arch = "all" if pkg == "nginx-relay" else "amd64"
        f = DEB_DIR / ("%s_%s_%s.deb" % (pkg, VERSION, arch))
        if not f.exists():
            f = next(iter(sorted(DEB_DIR.glob("%s_%s_*.deb"
                                              % (pkg, VERSION)))), f)
        assert f.exists(), "%s missing: run ./build.sh deb first" % f
        out.append(f)
    return out


def unit_lines(unit, key):
    """The values of KEY= in a unit file, in order, "-" prefixes dropped."""
    out = []
    for line in (UNITS / unit).read_text().splitlines():
        if line.startswith(key + "="):
            out.append(line.split("=", 1)[1].lstrip("-"))
    return out


def mode(path):
    st = os.stat(path)
    return (stat.S_IMODE(st.st_mode), pwd.getpwuid(st.st_uid).pw_name,
            grp.getgrgid(st.st_gid).gr_name)


def purge_all():
    dpkg("--purge", *PACKAGES)


def remove_users():
    for u in USERS:
        if run("getent", "passwd", u, check=False).returncode == 0:
            run("userdel", u, check=False)
        if run("getent", "group", u, check=False).returncode == 0:
            run("groupdel", u, check=False)


class State:
    """What the module's tests share: processes, ports, paths."""
    procs = []
    nginx_pidfile = None


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory):
    files = debs()

    # one run at a time on a machine (two checkouts testing at once)
    lock = open(LOCK, "w")
    deadline = time.monotonic() + 900
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            assert time.monotonic() < deadline, "another package test runs"
            time.sleep(1)

    mine = [p for p in PACKAGES if installed(p)]
    if mine and not MARKER.exists():
        pytest.fail("%s installed, and not by this test: it purges only "
                    "what it installed" % ", ".join(mine))
    if mine:
        purge_all()                       # a run of ours that died

    MARKER.write_text("installed by tests/deb/test_packages.py\n")
    stock_pid = Path("/run/nginx.pid").exists()
    p = dpkg("-i", *files)
    if p.returncode != 0:
        p2 = run("apt-get", "install", "-y", "-f", "-q",
                 "-o", "DPkg::Lock::Timeout=600", check=False,
                 env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        assert p2.returncode == 0, p.stderr + p2.stderr
    st = State()
    st.dir = tmp_path_factory.mktemp("deb")
    # the relay's private prefix: its workers (_nginx-relay) reopen the
    # logs there, so it is not below pytest's root-only folder
    st.prefix = Path(tempfile.mkdtemp(prefix="nginx-relay-deb-",
                                      dir="/var/tmp"))
    st.prefix.chmod(0o755)
    yield st

    for proc in st.procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if st.nginx_pidfile and st.nginx_pidfile.exists():
        try:
            os.kill(int(st.nginx_pidfile.read_text()), signal.SIGTERM)
        except (ValueError, ProcessLookupError):
            pass
    for f in ("ca.pem", "controld.pem", "controld.key"):
        Path("/etc/nginx-relay/controld", f).unlink(missing_ok=True)
    if any(installed(p) for p in PACKAGES):
        purge_all()
    remove_users()
    MARKER.unlink(missing_ok=True)
    shutil.rmtree(st.prefix, ignore_errors=True)
    lock.close()
    if not stock_pid and Path("/run/nginx.pid").stat().st_size == 0:
        Path("/run/nginx.pid").unlink()     # what our "nginx -t" left


# ---------------------------------------------------------------- packages


def test_lintian_found_no_error():
    log = (DEB_DIR / "lintian.log").read_text()
    errors = [l for l in log.splitlines() if l.startswith("E:")]
    assert not errors, errors
    # a warning is accepted only when deploy/debian/PACKAGING.md says why
    notes = (TOP / "deploy" / "debian" / "PACKAGING.md").read_text()
    for l in log.splitlines():
        if l.startswith("W:"):
            tag = l.split(":")[2].split()[0]
            assert tag in notes, "lintian warning not in PACKAGING.md: " + l


def test_module_depends_on_the_nginx_abi_it_was_built_for(pkgs):
    abi = re.search(r"^nginx:abi=(\S+)", Path(
        "/usr/share/nginx/src/debian/libnginx-mod.abisubstvars").read_text(),
        re.M).group(1)
    dep = run("dpkg-query", "-W", "-f=${Depends}",
              "libnginx-mod-stream-relay").stdout
    assert abi in [d.strip() for d in dep.split(",")], dep
    assert "libnginx-mod-stream" in dep
    for pkg in PACKAGES:
        v = run("dpkg-query", "-W", "-f=${Version}", pkg).stdout
        assert v == VERSION, (pkg, v)


def test_files_of_each_package(pkgs):
    want = {
        "libnginx-mod-stream-relay": [
            "/usr/lib/nginx/modules/ngx_stream_relay_module.so",
            "/usr/share/nginx/modules-available/mod-stream-relay.conf",
            "/usr/share/doc/libnginx-mod-stream-relay/examples/nginx.conf",
            "/usr/share/man/man5/nginx-relay.5.gz"],
        "nginx-relay": [
            "/etc/nginx-relay/nginx.conf", "/etc/logrotate.d/nginx-relay",
            "/lib/systemd/system/nginx-relay.service",
            "/usr/lib/sysusers.d/nginx-relay.conf",
            "/usr/lib/tmpfiles.d/nginx-relay.conf",
            "/usr/share/doc/nginx-relay/operator-guide.md.gz"],  # > 4 KB
        "nginx-relay-controld": [
            "/usr/sbin/controld", "/usr/sbin/relayctl",
            "/etc/nginx-relay/controld.conf",
            "/lib/systemd/system/nginx-relay-controld.service",
            "/usr/lib/sysusers.d/nginx-relay-controld.conf",
            "/usr/share/man/man8/controld.8.gz",
            "/usr/share/man/man8/relayctl.8.gz"],
    }
    for pkg, files in want.items():
        listed = run("dpkg", "-L", pkg).stdout.split("\n")
        for f in files:
            assert f in listed and os.path.exists(f), (pkg, f)
    snippet = Path("/usr/share/nginx/modules-available/mod-stream-relay.conf")
    assert "load_module modules/ngx_stream_relay_module.so;" in \
        snippet.read_text()
    conffiles = run("dpkg-query", "-W", "-f=${Conffiles}",
                    "nginx-relay", "nginx-relay-controld").stdout
    for f in ("/etc/nginx-relay/nginx.conf", "/etc/nginx-relay/controld.conf",
              "/etc/logrotate.d/nginx-relay"):
        assert f in conffiles, conffiles


def test_users_and_permissions(pkgs):
    for u in USERS:
        pw = pwd.getpwnam(u)
        assert pw.pw_uid < 1000 and pw.pw_shell.endswith("nologin"), pw
        assert grp.getgrgid(pw.pw_gid).gr_name == u
    assert mode("/var/spool/nginx-relay") == (0o700, "_nginx-relay",
                                              "_nginx-relay")
    assert mode("/var/lib/nginx-relay/maildir") == (0o700, "_nginx-relay",
                                                    "_nginx-relay")
    assert mode("/var/lib/nginx-relay-controld") == (
        0o750, "_nginx-relay-controld", "_nginx-relay-controld")
    assert mode("/etc/nginx-relay/controld") == (0o750, "root",
                                                 "_nginx-relay-controld")
    # workers reopen the logs (logrotate): they must get through
    assert mode("/var/log/nginx-relay") == (0o755, "root", "adm")
    assert mode("/etc/nginx-relay/users") == (0o600, "root", "root")
    assert mode("/etc/nginx-relay/tls/relay.key") == (0o600, "root", "root")
    assert run("openssl", "x509", "-noout", "-in",
               "/etc/nginx-relay/tls/relay.pem").returncode == 0
    conf = Path("/etc/nginx-relay/nginx.conf").read_text()
    assert re.search(r"^user _nginx-relay;$", conf, re.M)


def test_stock_nginx_loads_the_module_and_is_not_started(pkgs):
    link = Path("/etc/nginx/modules-enabled/70-mod-stream-relay.conf")
    assert link.is_symlink() and os.readlink(link) == \
        "/usr/share/nginx/modules-available/mod-stream-relay.conf"
    assert Path("/etc/nginx/modules-enabled/50-mod-stream.conf").exists()
    p = run("nginx", "-t", "-q", check=False)
    assert p.returncode == 0, p.stderr
    pid = Path("/run/nginx.pid")             # "nginx -t" leaves it empty
    pid = pid.read_text().strip() if pid.exists() else ""
    assert not (pid.isdigit() and Path("/proc", pid).exists()), \
        "a stock nginx runs: installing must not start one"


def test_units_verify(pkgs):
    if not shutil.which("systemd-analyze"):
        pytest.skip("no systemd-analyze on this machine")
    p = run("systemd-analyze", "verify", UNITS / "nginx-relay.service",
            UNITS / "nginx-relay-controld.service", check=False)
    out = (p.stdout + p.stderr).strip()
    if p.returncode != 0 and ("Failed to" in out and "bus" in out.lower()):
        pytest.skip("systemd-analyze cannot run here: " + out[:200])
    assert p.returncode == 0 and out == "", out


def test_versions_and_man_pages(pkgs):
    for tool in ("controld", "relayctl"):
        out = run("/usr/sbin/" + tool, "--version").stdout
        assert out.splitlines()[0] == "%s (nginx-relay) %s" % (tool, VERSION)
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    for page in ("man8/controld.8.gz", "man8/relayctl.8.gz",
                 "man5/nginx-relay.5.gz"):
        f = "/usr/share/man/" + page
        p = run("man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", f,
                env=env)
        assert p.stderr == "", (page, p.stderr)
        text = run("man", "-l", f, env=env).stdout
        assert "nginx-relay %s" % VERSION in text and "SYNOPSIS" in text
    assert run("man", "-w", "controld").stdout.strip() == \
        "/usr/share/man/man8/controld.8.gz"


def test_logrotate_configuration(pkgs):
    if not shutil.which("logrotate"):
        pytest.skip("logrotate is not installed")
    p = run("logrotate", "-d", "-s", pkgs.dir / "logrotate.state",
            "/etc/logrotate.d/nginx-relay", check=False)
    assert p.returncode == 0, p.stderr
    text = Path("/etc/logrotate.d/nginx-relay").read_text()
    assert "nginx -c /etc/nginx-relay/nginx.conf -s reopen" in text


# ------------------------------------------------ controld and the relay


def test_controld_runs_as_its_unit_says(pkgs):
    st = pkgs
    certs = ch.make_certs(st.dir / "certs", NODE)
    cdir = Path("/etc/nginx-relay/controld")
    # as the guide says: install -m 0644 ca.pem controld.pem, and
    # install -m 0640 -g _nginx-relay-controld controld.key
    for name, perm in (("ca.pem", 0o644), ("controld.pem", 0o644),
                       ("controld.key", 0o640)):
        shutil.copy(certs / name, cdir / name)
        os.chown(cdir / name, 0, grp.getgrnam(
            "_nginx-relay-controld").gr_gid if perm == 0o640 else 0)
        os.chmod(cdir / name, perm)
    st.certs = certs

    user = unit_lines("nginx-relay-controld.service", "User")[0]
    group = unit_lines("nginx-relay-controld.service", "Group")[0]
    argv = shlex.split(unit_lines("nginx-relay-controld.service",
                                  "ExecStart")[0])
    assert argv == ["/usr/sbin/controld", "-c",
                    "/etc/nginx-relay/controld.conf"], argv
    st.ctld_port = ch.free_port()
    st.ctld_log = st.dir / "controld.log"
    log = open(st.ctld_log, "wb")
    proc = subprocess.Popen(
        ["setpriv", "--reuid", user, "--regid", group, "--clear-groups",
         "--no-new-privs", *argv, "--listen", "127.0.0.1:%d" % st.ctld_port],
        stdout=log, stderr=subprocess.STDOUT, cwd="/")
    st.procs.append(proc)
    st.ctld = proc
    h.wait_until(lambda: b"listening on" in st.ctld_log.read_bytes()
                 or proc.poll() is not None, 15, what="controld to listen")
    assert proc.poll() is None, st.ctld_log.read_text()
    assert "(mTLS)" in st.ctld_log.read_text()
    # its data went where the package put its data directory, as its user
    assert mode("/var/lib/nginx-relay-controld/versions")[1] == user


def relay_conf(st):
    """The shipped nginx.conf on loopback test ports, pid and logs in the
    private prefix, the control client on: nothing else changed."""
    conf = Path("/etc/nginx-relay/nginx.conf").read_text()
    ports = dict(zip((25, 587, 110), h.alloc_ports(3)))
    for public, test in ports.items():
        conf, n = re.subn(r"^(\s*)listen %d;$" % public,
                          r"\g<1>listen 127.0.0.1:%d;" % test, conf,
                          flags=re.M)
        assert n == 1, public
    ports["metrics"] = h.alloc_ports(1)[0]
    conf, n = re.subn(r"listen 127\.0\.0\.1:9025;",
                      "listen 127.0.0.1:%d;" % ports["metrics"], conf)
    assert n == 1
    logs = st.prefix / "logs"
    logs.mkdir(mode=0o755)
    conf = conf.replace("/var/log/nginx-relay/", str(logs) + "/")
    conf = conf.replace("pid /run/nginx-relay/nginx.pid;",
                        "pid %s;" % (st.prefix / "nginx.pid"))
    tls = Path("/etc/nginx-relay/tls")
    for name in ("node-%s.pem" % NODE, "node-%s.key" % NODE, "ca.pem"):
        shutil.copy(st.certs / name, tls / name.replace("ca.pem",
                                                        "controld-ca.pem"))
    control = ("relay_control 127.0.0.1:%d node=%s;\n"
               "    relay_control_certificate %s/node-%s.pem;\n"
               "    relay_control_certificate_key %s/node-%s.key;\n"
               "    relay_control_trusted_certificate %s/controld-ca.pem;\n"
               % (st.ctld_port, NODE, tls, NODE, tls, NODE, tls))
    conf, n = re.subn(r"^    # relay_control controld\.example\.com.*\n",
                      "    " + control, conf, flags=re.M)
    assert n == 1
    path = st.prefix / "nginx.conf"
    path.write_text(conf)
    return path, ports, logs


def unit_argv(line, conf, logs):
    argv = shlex.split(line)
    argv = [str(conf) if a == "/etc/nginx-relay/nginx.conf" else
            str(logs / "error.log") if a == "/var/log/nginx-relay/error.log"
            else a for a in argv]
    return argv


def test_relay_runs_as_its_unit_says(pkgs):
    st = pkgs
    conf, st.ports, st.logs = relay_conf(st)
    st.conf = conf
    with open("/etc/nginx-relay/users", "a") as f:
        f.write("%s@example.com:%s\n" % (USER, h.crypt_hash(PASSWORD)))

    pre = unit_lines("nginx-relay.service", "ExecStartPre")
    start = unit_lines("nginx-relay.service", "ExecStart")
    assert len(pre) == 1 and len(start) == 1
    run(*unit_argv(pre[0], conf, st.logs))
    st.nginx_pidfile = st.prefix / "nginx.pid"
    run(*unit_argv(start[0], conf, st.logs))
    pid = h.wait_until(lambda: st.nginx_pidfile.exists()
                       and st.nginx_pidfile.read_text().strip(), 10,
                       what="the relay's pid file")
    st.master = int(pid)
    relay_uid = pwd.getpwnam("_nginx-relay").pw_uid

    def uids():
        out = set()
        for w in h.children_of(st.master):
            status = Path("/proc/%d/status" % w).read_text()
            out.add(int(re.search(r"^Uid:\s+\d+\s+(\d+)", status,
                                  re.M).group(1)))
        return out

    # workers switch to the user right after the fork
    h.wait_until(lambda: uids() == {relay_uid}, 10,
                 what="workers running as _nginx-relay")
    err = (st.logs / "error.log").read_text()
    assert "nginx-relay/%s, built for nginx/" % VERSION in err


def send(st, tag):
    c = h.SMTPConn(st.ports[25])
    c.ehlo("client.test")
    c.expect("MAIL FROM:<someone@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<%s@example.com>" % USER, 250, "2.1.5")
    c.expect("DATA", 354)
    r = c.send_data(h.simple_body(tag))
    assert r.is_(250, "2.0.0"), r
    c.close()


def mailbox():
    return Path("/var/lib/nginx-relay/maildir/example.com/%s/new" % USER)


def pop3_messages(st):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    p = poplib.POP3("127.0.0.1", st.ports[110], timeout=10)
    try:
        p.stls(ctx)
        p.user("%s@example.com" % USER)
        p.pass_(PASSWORD)
        n = len(p.list()[1])
        return [b"\r\n".join(p.retr(i + 1)[1]) for i in range(n)]
    finally:
        p.quit()


def test_mail_in_over_smtp_out_over_pop3(pkgs):
    st = pkgs
    send(st, "deb-first")
    files = h.wait_until(lambda: list(mailbox().glob("*")), 15,
                         what="the message in the Maildir")
    assert len(files) == 1
    assert mode(files[0]) == (0o600, "_nginx-relay", "_nginx-relay")
    for d in (mailbox(), mailbox().parent, mailbox().parent.parent):
        assert mode(d)[:2] == (0o700, "_nginx-relay"), d
    data = files[0].read_bytes()
    assert b"(nginx-relay/%s)" % VERSION.encode() in data
    msgs = pop3_messages(st)
    assert len(msgs) == 1 and b"deb-first" in msgs[0], msgs

    # the shipped configuration keeps accounts and serves metrics
    acct = st.logs / "accounting.log"
    h.wait_until(lambda: acct.exists() and b'"type":"received"'
                 in acct.read_bytes(), 15, what="the message's record")
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics"
                                % st.ports["metrics"], timeout=5) as r:
        text = r.read().decode()
    m = re.search(r'^relay_accepted_messages_total(?:\{[^}]*\})? (\d+)',
                  text, re.M)
    assert m and int(m.group(1)) >= 1, text[:2000]


def test_node_reports_its_version_to_controld(pkgs):
    st = pkgs
    line = h.wait_until(
        lambda: re.search(r"node %s connected peer=\S+ software=\"([^\"]+)\""
                          % NODE, st.ctld_log.read_text()), 20,
        what="the node's hello in controld's log")
    assert line.group(1).startswith("nginx-relay/%s nginx/" % VERSION)
    env = dict(os.environ, RELAYCTL_SERVER="127.0.0.1:%d" % st.ctld_port,
               RELAYCTL_CA=str(st.certs / "ca.pem"),
               RELAYCTL_CERT=str(st.certs / "operator.pem"),
               RELAYCTL_KEY=str(st.certs / "operator.key"))
    out = run("/usr/sbin/relayctl", "nodes", env=env).stdout
    assert re.search(r"^%s\s+yes" % NODE, out, re.M), out
    q = run("/usr/sbin/relayctl", "--spool", "/var/spool/nginx-relay",
            "queue", "summary").stdout
    assert q is not None


def test_binary_upgrade_loses_nothing(pkgs):
    """What the guide says for a new module or nginx: USR2, then QUIT."""
    st = pkgs
    os.kill(st.master, signal.SIGUSR2)
    old = Path(str(st.nginx_pidfile) + ".oldbin")
    h.wait_until(lambda: old.exists() and st.nginx_pidfile.exists()
                 and st.nginx_pidfile.read_text().strip()
                 and int(st.nginx_pidfile.read_text()) != st.master, 15,
                 what="the new master")
    new = int(st.nginx_pidfile.read_text())
    send(st, "deb-during-upgrade")
    os.kill(st.master, signal.SIGQUIT)
    h.wait_until(lambda: not Path("/proc/%d" % st.master).exists(), 30,
                 what="the old master to exit")
    st.master = new
    send(st, "deb-after-upgrade")
    # POP3 moved the first one to cur/
    h.wait_until(lambda: len(list(mailbox().glob("*"))
                             + list(mailbox().parent.glob("cur/*"))) == 3,
                 15, what="three messages in the Maildir")
    msgs = pop3_messages(st)
    assert len(msgs) == 3
    for tag in (b"deb-first", b"deb-during-upgrade", b"deb-after-upgrade"):
        assert sum(tag in m for m in msgs) == 1, tag


def test_reopen_and_stop_as_the_unit_says(pkgs):
    st = pkgs
    # the logrotate command, on the test's configuration
    run("/usr/sbin/nginx", "-c", st.conf, "-s", "reopen")
    stop = unit_lines("nginx-relay.service", "ExecStop")[0]
    argv = [str(st.nginx_pidfile) if a == "/run/nginx-relay/nginx.pid"
            else a for a in shlex.split(stop)]
    run(*argv)
    assert not Path("/proc/%d" % st.master).exists()
    err = (st.logs / "error.log").read_text()
    assert "[alert]" not in err and "[emerg]" not in err, err
    st.ctld.send_signal(signal.SIGTERM)
    assert st.ctld.wait(15) == 0, st.ctld_log.read_text()
    for line in st.ctld_log.read_text().splitlines():
        assert re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+Z controld: ", line), line


# ---------------------------------------------------------------- purge


def test_purge_leaves_nothing_behind(pkgs):
    # what the operator put there is the operator's to take away
    for f in ("ca.pem", "controld.pem", "controld.key"):
        Path("/etc/nginx-relay/controld", f).unlink()
    for f in ("node-%s.pem" % NODE, "node-%s.key" % NODE, "controld-ca.pem"):
        Path("/etc/nginx-relay/tls", f).unlink()
    p = dpkg("--purge", *PACKAGES)
    assert p.returncode == 0, p.stderr
    assert "not empty" not in p.stdout + p.stderr, p.stdout + p.stderr
    for pkg in PACKAGES:
        assert not installed(pkg), pkg
    left = [f for f in LEFT_BEHIND if os.path.lexists(f)]
    assert not left, left
    assert run("nginx", "-t", "-q", check=False).returncode == 0
    # Debian keeps system users after a purge; this test removes them
    for u in USERS:
        assert run("getent", "passwd", u, check=False).returncode == 0
    remove_users()
    MARKER.unlink(missing_ok=True)
