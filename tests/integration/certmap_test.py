"""Shared pieces of certmap's integration tests: where the binaries and fixtures are, how to
write a config for a running directory, how to run `certmapctl check` and read its answer.

Tests run under tests/integration/netns-run (see tests/CMakeLists.txt), so every peer they
start lives in a private network namespace.
"""

import copy
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
from pathlib import Path

SOURCE_DIR = Path(os.environ.get("CERTMAP_SOURCE_DIR", Path(__file__).resolve().parents[2]))
BUILD_DIR = Path(os.environ.get("CERTMAP_BUILD_DIR", SOURCE_DIR / "build"))
PKI = SOURCE_DIR / "certs-fixtures" / "pki"
CERTMAPCTL = BUILD_DIR / "tools" / "certmapctl"
IN_CI = os.environ.get("CI") == "true"


def skip_or_fail(reason):
    """A missing tool may skip locally; under CI=true a skip is a failure."""
    if IN_CI:
        raise AssertionError("CI=true: cannot skip: " + reason)
    raise unittest.SkipTest(reason)


def deep_merge(base, override):
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def base_config(d, **overrides):
    """A check config for a started harness directory (SambaAD or Slapd)."""
    if d.dialect == "ad":
        groups = ["CN=ActiveSync Users,CN=Users,DC=lab,DC=test"]
        netbios = {"netbios_domain": "LAB"}
    else:
        groups = ["cn=ActiveSync Users,ou=groups,dc=lab,dc=test"]
        netbios = {}
    cfg = {
        "client_certificates": {
            "trusted_issuers": [str(PKI / "issuing-ca.pem")],
            "require_client_auth_eku": True,
            "revocation": {"mode": "soft", "crl_files": [str(PKI / "issuing-ca.crl.pem")]},
        },
        "directory": dict({
            "uris": [d.uris[0]],
            "dialect": d.dialect,
            "base_dn": d.base_dn,
            "bind_dn": d.bind_dn,
            "bind_password_file": str(d.bind_password_file),
            "ca_file": str(PKI / "ca-bundle.pem"),
            "timeout_ms": 2000,
        }, **netbios),
        "mapping": {"methods": ["user_certificate"], "on_ambiguous": "deny"},
        "authorization": {"required_groups": groups, "check_account_state": True,
                          "basic_user_binding": "off"},
    }
    return deep_merge(cfg, overrides)


class Workdir:
    """A temp dir for configs of one test module."""

    def __init__(self, prefix):
        self.path = Path(tempfile.mkdtemp(prefix=prefix))
        self.n = 0

    def write_config(self, cfg, name=None):
        self.n += 1
        p = self.path / (name or "config-%d.json" % self.n)
        p.write_text(json.dumps(cfg, indent=2))
        return p

    def remove(self):
        shutil.rmtree(self.path, ignore_errors=True)


class Result:
    def __init__(self, proc, elapsed):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.elapsed = elapsed
        self.json = None
        if self.stdout.strip().startswith("{"):
            self.json = json.loads(self.stdout)

    def __repr__(self):
        return "rc=%d stdout=%s stderr=%s" % (self.rc, self.stdout[:2000], self.stderr[:2000])


def run_check(config, cert, chain=None, basic_user=None, json_out=True, extra=(), timeout=60):
    if not CERTMAPCTL.exists():
        raise AssertionError("certmapctl not built at %s" % CERTMAPCTL)
    argv = [str(CERTMAPCTL), "check", "--config", str(config), "--cert",
            str(cert if os.path.isabs(str(cert)) else PKI / cert)]
    if chain:
        argv += ["--chain", str(PKI / chain)]
    if basic_user is not None:
        argv += ["--basic-user", basic_user]
    if json_out:
        argv += ["--json"]
    argv += list(extra)
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    return Result(proc, time.monotonic() - t0)


class SilentServer:
    """Accepts TCP connections and never answers (a hung directory server)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        self.stopping = True
        self.sock.close()
        for c in self.conns:
            c.close()


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
