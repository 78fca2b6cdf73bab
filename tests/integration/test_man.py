"""
The manual pages, made from README.md by deploy/man/mkman.py: they render
with man -l without a warning, carry the version, and say what the code
has: every directive heading of the README, every option of --help.
"""

import os
import re
import subprocess

import pytest

import controlharness as ch

VERSION = (ch.TOP / "VERSION").read_text().split()[0]
PAGES = ("controld.8", "relayctl.8", "nginx-relay.5")


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    d = tmp_path_factory.mktemp("man")
    subprocess.run(["/usr/bin/python3", str(ch.TOP / "deploy/man/mkman.py"),
                    str(ch.TOP / "README.md"), str(d)], check=True)
    out = {}
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    for name in PAGES:
        p = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l",
                            "-Tutf8", "-Z", str(d / name)], env=env,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and p.stderr == "", (name, p.stderr)
        text = subprocess.run(["man", "-l", str(d / name)], env=env,
                              capture_output=True, text=True,
                              timeout=60).stdout
        text = re.sub(r"-\s*\n\s*(?:\u2502\s*)*", "-", text)   # cell breaks
        out[name] = re.sub(r"\s+", " ", text)
    return out


def test_pages_render_with_the_version(pages):
    for name in PAGES:
        text = pages[name]
        title = name.rsplit(".", 1)[0].upper()
        assert text.startswith("%s(%s)" % (title, name[-1])), text[:80]
        assert "nginx-relay %s" % VERSION in text
        for sh in ("NAME", "SYNOPSIS", "DESCRIPTION", "FILES", "SEE ALSO"):
            assert " %s " % sh in text, (name, sh)


def test_every_directive_is_in_nginx_relay_5(pages):
    readme = (ch.TOP / "README.md").read_text()
    heads = re.findall(r"^### (relay_\S+.*)$", readme, re.M)
    assert len(heads) > 40
    for h in heads:
        for d in re.findall(r"relay_\w+", h):
            assert d in pages["nginx-relay.5"], d


@pytest.mark.parametrize("tool", ["controld", "relayctl"])
def test_every_option_of_help_is_in_the_page(pages, tool):
    path = ch.CONTROLD if tool == "controld" else ch.RELAYCTL
    out = subprocess.run([path, "--help"], capture_output=True, text=True,
                         timeout=10).stdout
    opts = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", out))
    assert "--version" in opts and len(opts) > 5, opts
    missing = [o for o in sorted(opts) if o not in pages[tool + ".8"]]
    assert not missing, missing
