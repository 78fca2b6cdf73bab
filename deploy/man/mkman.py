#!/usr/bin/python3
"""
mkman.py: the manual pages, made from README.md, so that they never say
anything the README does not.

    deploy/man/mkman.py README.md OUTDIR [VERSION]

writes OUTDIR/controld.8, OUTDIR/relayctl.8 and OUTDIR/nginx-relay.5.
Each page is a NAME and SYNOPSIS of its own (PAGES below), then sections of
the README, whole, as they are: a "## Heading" becomes a .SH, a "###" a
.SS, and the README's Markdown (paragraphs, lists, fenced code, tables,
`code`, **bold**, *emphasis*, [links](...)) becomes man(7) and tbl(1)
requests.  Then FILES and SEE ALSO, which are about the installed packages
and so live here.  VERSION defaults to the first line of VERSION next to
README.md.  Only the standard library: a package build runs it.
"""

import re
import sys
from pathlib import Path

PAGES = [
    {
        "name": "controld",
        "section": "8",
        "package": "nginx-relay-controld",
        "what": "the nginx-relay control daemon: the fleet policy over gRPC",
        "synopsis": [
            r"\fBcontrold\fR [\fB\-c\fR \fIFILE\fR] [\fB\-l\fR "
            r"\fIHOST:PORT\fR] [\fB\-d\fR \fIDIR\fR] [\fB\-\-ca\fR "
            r"\fIFILE\fR \fB\-\-cert\fR \fIFILE\fR \fB\-\-key\fR "
            r"\fIFILE\fR] [\fB\-\-command\-timeout\fR \fIDUR\fR] "
            r"[\fB\-\-status\-timeout\fR \fIDUR\fR] [\fB\-\-insecure\fR]",
            r"\fBcontrold\fR \fB\-\-version\fR | \fB\-\-help\fR",
        ],
        "readme": ["Control plane: controld"],
        "skip": ["On the node"],
        "files": [
            ("/etc/nginx-relay/controld.conf",
             "the configuration (\\fB\\-c\\fR), \\fBkey value;\\fR lines"),
            ("/etc/nginx-relay/controld/",
             "the CA, the server certificate and its key (mTLS)"),
            ("/var/lib/nginx-relay-controld/",
             "the data directory: the policy versions"),
            ("/lib/systemd/system/nginx-relay-controld.service",
             "the systemd unit; the daemon runs as "
             "\\fB_nginx-relay-controld\\fR"),
        ],
        "see_also": ["relayctl(8)", "nginx-relay(5)", "nginx(8)"],
    },
    {
        "name": "relayctl",
        "section": "8",
        "package": "nginx-relay-controld",
        "what": "the nginx-relay operator command: policy, nodes, queues",
        "synopsis": [
            r"\fBrelayctl\fR [\fB\-s\fR \fIHOST:PORT\fR] [\fB\-\-ca\fR "
            r"\fIFILE\fR \fB\-\-cert\fR \fIFILE\fR \fB\-\-key\fR "
            r"\fIFILE\fR] [\fB\-\-json\fR] [\fB\-\-timeout\fR \fISEC\fR] "
            r"\fICOMMAND\fR ...",
            r"\fBrelayctl\fR \fB\-\-spool\fR \fIDIR\fR [\fB\-\-json\fR] "
            r"\fBqueue\fR ...",
            r"\fBrelayctl\fR \fB\-\-version\fR | \fB\-\-help\fR",
        ],
        "readme": ["relayctl and the policy format",
                   "The queue, for operators"],
        "skip": [],
        "files": [
            ("/var/spool/nginx-relay/",
             "the spool of a packaged node (\\fB\\-\\-spool\\fR)"),
            ("/etc/nginx-relay/controld/",
             "where the operator's certificate usually goes"),
        ],
        "see_also": ["controld(8)", "nginx-relay(5)"],
    },
    {
        "name": "nginx-relay",
        "section": "5",
        "package": "libnginx-mod-stream-relay",
        "what": "directives of the nginx SMTP relay module "
                "(ngx_stream_relay_module)",
        "synopsis": [
            r"\fBload_module modules/ngx_stream_module.so;\fR",
            r"\fBload_module modules/ngx_stream_relay_module.so;\fR",
            r"\fBstream {\fR \fBrelay_spool\fR ...; \fBserver {\fR "
            r"\fBlisten\fR 25; \fBrelay_smtp;\fR \fB}\fR \fB}\fR",
        ],
        "readme": ["Directives", "Replies and decisions worth knowing",
                   "Logs", "Versions"],
        "skip": [],
        "files": [
            ("/usr/lib/nginx/modules/ngx_stream_relay_module.so",
             "the module"),
            ("/usr/share/nginx/modules-available/mod-stream-relay.conf",
             "its \\fBload_module\\fR line, linked from "
             "/etc/nginx/modules-enabled/ for the stock nginx"),
            ("/etc/nginx-relay/nginx.conf",
             "the relay node's own configuration (package nginx-relay)"),
            ("/var/spool/nginx-relay/", "the queue of the packaged node"),
            ("/var/lib/nginx-relay/maildir/",
             "its Maildirs, files 0600, directories 0700"),
            ("/var/log/nginx-relay/", "its logs"),
        ],
        "see_also": ["nginx(8)", "controld(8)", "relayctl(8)"],
    },
]

UNICODE = {"\u2014": r"\(em", "\u2013": r"\(en", "\u00b5": r"\(mc"}


def esc(text, code=False, breaks=False):
    """Text for a roff line: backslashes, and "-" in code as a minus;
    breaks: a line may break after "/", "|", ",", "=", and after "_" and
    "-" within a word (long paths and option lists in narrow table cells)."""
    out, prev = [], ""
    for ch in text:
        if ch == "\\":
            out.append(r"\e")
        elif ch == "-" and code:
            out.append(r"\-")
        elif ord(ch) > 127:
            out.append(UNICODE.get(ch, r"\[u%04X]" % ord(ch)))
        else:
            out.append(ch)
        if breaks and (ch in "/|,=" or ch in "_-" and prev.isalnum()):
            out.append(r"\:")
        prev = ch
    return "".join(out)


INLINE = re.compile(r"(`+)(.+?)\1|\*\*(.+?)\*\*|(?<![\w*])\*(?!\s)(.+?)"
                    r"(?<!\s)\*(?![\w*])|\[([^\]]+)\]\([^)]*\)")


def inline(text, breaks=False):
    """One paragraph's Markdown inline markup as font changes; breaks: in
    a table cell, code may break (see esc())."""
    out, pos = [], 0
    for m in INLINE.finditer(text):
        out.append(esc(text[pos:m.start()]))
        if m.group(2) is not None:
            out.append(r"\fB" + esc(m.group(2).strip(), code=True,
                                     breaks=breaks) + r"\fR")
        elif m.group(3) is not None:
            out.append(r"\fB" + inline(m.group(3), breaks) + r"\fR")
        elif m.group(4) is not None:
            out.append(r"\fI" + inline(m.group(4), breaks) + r"\fR")
        else:
            out.append(inline(m.group(5), breaks))
        pos = m.end()
    out.append(esc(text[pos:]))
    return "".join(out)


def line(text):
    """A text line that roff never takes for a request."""
    text = text.strip()
    if text.startswith((".", "'")):
        return r"\&" + text
    return text


def cells(row):
    row = row.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    parts, cur, i = [], "", 0
    while i < len(row):
        if row[i] == "\\" and i + 1 < len(row) and row[i + 1] == "|":
            cur += "|"
            i += 2
            continue
        if row[i] == "|":
            parts.append(cur.strip())
            cur = ""
        else:
            cur += row[i]
        i += 1
    parts.append(cur.strip())
    return parts


def table(rows):
    head = cells(rows[0])
    body = [cells(r) for r in rows[2:]]
    n = len(head)
    out = [".PP", ".TS", "allbox;", " ".join(["lb"] * (n - 1) + ["lbx"]),
           " ".join(["l"] * (n - 1) + ["lx"]) + ".",
           "\t".join("T{\n%s\nT}" % line(inline(c, True)) for c in head)]
    for r in body:
        r = (r + [""] * n)[:n]
        out.append("\t".join("T{\n%s\nT}" % line(inline(c, True)) if c
                             else "" for c in r))
    out.append(".TE")
    return out


def convert(md):
    """Markdown lines (one README section's body) as roff lines."""
    out, para, i = [], [], 0

    def flush():
        if para:
            out.append(".PP")
            text = inline(" ".join(p.strip() for p in para))
            out.extend(line(w) for w in wrap(text))
            para.clear()

    while i < len(md):
        s = md[i]
        if s.startswith("```"):
            flush()
            out += [".PP", ".RS 4", ".nf"]
            i += 1
            while i < len(md) and not md[i].startswith("```"):
                t = esc(md[i].rstrip("\n"), code=True)
                out.append(r"\&" + t if t.startswith((".", "'")) else t)
                i += 1
            out += [".fi", ".RE"]
            i += 1
            continue
        if s.startswith("### "):
            flush()
            out.append(".SS " + quote(inline(s[4:].strip())))
        elif s.startswith("|") and i + 1 < len(md) \
                and re.match(r"^\|[\s:|-]+\|\s*$", md[i + 1]):
            flush()
            rows = []
            while i < len(md) and md[i].startswith("|"):
                rows.append(md[i])
                i += 1
            out += table(rows)
            continue
        elif re.match(r"^(\*|-|\d+\.) ", s):
            flush()
            m = re.match(r"^(\*|-|(\d+)\.) (.*)", s)
            mark = r"\(bu" if m.group(2) is None else m.group(2) + "."
            item = [m.group(3)]
            i += 1
            while i < len(md) and md[i].startswith("  ") \
                    and md[i].strip():
                item.append(md[i])
                i += 1
            out.append(".IP %s 4" % mark)
            text = inline(" ".join(p.strip() for p in item))
            out.extend(line(w) for w in wrap(text))
            continue
        elif not s.strip():
            flush()
        else:
            para.append(s)
        i += 1
    flush()
    return out


def wrap(text, width=72):
    """Short source lines; roff fills them again."""
    lines, cur = [], ""
    for word in text.split(" "):
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur = word
        else:
            cur = cur + " " + word if cur else word
    if cur:
        lines.append(cur)
    return lines


def quote(s):
    return '"' + s.replace('"', r'\(dq') + '"'


def sections(readme):
    """{"Heading": [lines]} for every "##" and "###" heading."""
    found, name, depth = {}, None, 0
    for s in readme.splitlines():
        m = re.match(r"^(##|###) (.*)", s)
        if m:
            name, depth = m.group(2).strip(), len(m.group(1))
            found[name] = (depth, [])
            continue
        if name:
            found[name][1].append(s)
    return found


def body(found, title, skip):
    """A section with its "###" subsections, but not those in skip."""
    depth, own = found[title]
    lines, keys = list(own), list(found)
    for k in keys[keys.index(title) + 1:]:
        d, sub = found[k]
        if d <= depth:
            break
        if k in skip:
            continue
        lines += ["### " + k] + sub
    return lines


def page(spec, found, version):
    name, sec = spec["name"], spec["section"]
    out = ["'\\\" t",
           '.TH %s %s "" "nginx-relay %s" "nginx-relay"'
           % (name.upper(), sec, version),
           ".ad l", ".nh", ".SH NAME",
           "%s \\- %s" % (esc(name, True), esc(spec["what"])),
           ".SH SYNOPSIS"]
    for n, syn in enumerate(spec["synopsis"]):
        out += [".PP" if n == 0 else ".br", syn]
    for n, title in enumerate(spec["readme"]):
        if title not in found:
            raise SystemExit("mkman: README.md has no section %r" % title)
        head = "DESCRIPTION" if n == 0 else title.upper()
        out.append(".SH " + quote(inline(head)))
        out += convert(body(found, title, spec["skip"]))
    out.append(".SH FILES")
    for f, what in spec["files"]:
        out += [".TP", r"\fI%s\fR" % esc(f, True), what]
    out += [".SH SEE ALSO",
            ", ".join(r"\fB%s\fR(%s)" % tuple(s[:-1].split("("))
                      for s in spec["see_also"]),
            "and README.md of nginx-relay, the source of this page: "
            "/usr/share/doc/%s/README.md.gz." % spec["package"]]
    return "\n".join(out) + "\n"


def main(argv):
    if len(argv) not in (3, 4):
        raise SystemExit("usage: mkman.py README.md OUTDIR [VERSION]")
    readme = Path(argv[1])
    outdir = Path(argv[2])
    version = argv[3] if len(argv) == 4 else \
        (readme.parent / "VERSION").read_text().split()[0]
    found = sections(readme.read_text(encoding="utf-8"))
    outdir.mkdir(parents=True, exist_ok=True)
    for spec in PAGES:
        f = outdir / ("%s.%s" % (spec["name"], spec["section"]))
        f.write_text(page(spec, found, version), encoding="ascii")


if __name__ == "__main__":
    main(sys.argv)
