"""Helpers for certmapd's end-to-end tests (test_certmapd.py): the lab upstream, certmapd
instances with their own config, logs and admin listener, and real clients (curl, openssl
s_client, Python ssl sockets).

Everything runs inside the private network namespace of tests/integration/netns-run; scratch
files live under /tmp/certmap-it-* (tempfile).
"""

import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from certmap_test import BUILD_DIR, PKI, base_config, deep_merge
from harness import free_port

CERTMAPD = BUILD_DIR / "server" / "certmapd"
UPSTREAM = BUILD_DIR / "tools" / "certmap-lab-upstream"
CA_BUNDLE = PKI / "ca-bundle.pem"
EAS = "/Microsoft-Server-ActiveSync"

W3C_FIELDS = ["date", "time", "s-ip", "cs-method", "cs-uri-stem", "cs-uri-query", "s-port",
              "cs-username", "c-ip", "cs(User-Agent)", "cs(Referer)", "sc-status",
              "sc-substatus", "sc-win32-status", "time-taken"]

# IIS's texts for status.substatus (the first line of certmapd's error pages).
IIS_TEXT = {
    (400, 0): "Bad Request",
    (401, 1): "Logon failed.",
    (401, 2): "Logon failed due to server configuration.",
    (401, 3): "Unauthorized due to ACL on resource.",
    (403, 7): "Client certificate required.",
    (403, 12): "Mapper denied access.",
    (403, 13): "Client certificate revoked.",
    (403, 16): "Client certificate is untrusted or invalid.",
    (403, 17): "Client certificate has expired or is not yet valid.",
    (431, 0): "Request Header Fields Too Large",
    (502, 3): "Bad Gateway: forwarder connection error.",
    (503, 0): "Service Unavailable",
    (504, 0): "Gateway Timeout",
}


def tag():
    """A unique query value, to find a request's access-log line."""
    return uuid.uuid4().hex[:12]


def cert_sha256(name):
    """Lowercase hex SHA-256 of the leaf (first certificate) of a PKI file."""
    data = (PKI / name).read_bytes()
    m = re.search(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", data, re.S)
    der = base64.b64decode(b"".join(m.group(1).split())) if m else data
    return hashlib.sha256(der).hexdigest()


def wait_for(pred, timeout, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


class Scratch:
    """A /tmp/certmap-it-* directory for one module; client cert files with chains."""

    def __init__(self, prefix="certmap-it-certmapd-"):
        self.path = Path(tempfile.mkdtemp(prefix=prefix))

    def client_pem(self, cert, chain=None):
        """A PEM file with the leaf then the chain (what curl --cert sends)."""
        if chain is None:
            return PKI / cert
        p = self.path / ("client-%s-%s" % (cert, chain))
        if not p.exists():
            p.write_bytes((PKI / cert).read_bytes() + b"\n" + (PKI / chain).read_bytes())
        return p

    def remove(self):
        shutil.rmtree(self.path, ignore_errors=True)


# ------------------------------------------------------------------------------------------
# The lab upstream


class LabUpstream:
    def __init__(self, workdir, threads=None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.threads = threads
        self.proc = None
        self.port = None

    def start(self):
        if not UPSTREAM.exists():
            raise AssertionError("lab upstream not built at %s" % UPSTREAM)
        argv = [str(UPSTREAM), "--listen", "127.0.0.1:0", "--quiet"]
        if self.threads:
            argv += ["--threads", str(self.threads)]
        self.err = open(self.dir / "upstream.stderr", "w")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.err, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on ([0-9.]+):(\d+)", line)
        if not m:
            raise AssertionError("lab upstream did not start: %r" % line)
        self.port = int(m.group(2))
        return self

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def stats(self):
        with urllib.request.urlopen(self.url + "/lab/stats", timeout=5) as f:
            return json.loads(f.read())

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ------------------------------------------------------------------------------------------
# certmapd


class Certmapd:
    """One certmapd with its own directory (config, key, logs, stderr)."""

    def __init__(self, workdir, name, directory, upstream_url, overrides=None):
        self.dir = Path(workdir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.key = self.dir / "server.key"
        shutil.copy(PKI / "server.key", self.key)
        os.chmod(self.key, 0o600)
        self.port = free_port()
        self.admin_port = free_port()
        self.access_path = self.dir / "access.log"
        self.audit_path = self.dir / "audit.jsonl"
        self.config_path = self.dir / "certmapd.json"
        self.stderr_path = self.dir / "certmapd.stderr"
        cfg = base_config(directory)
        cfg.update({
            "listen": [{"address": "127.0.0.1", "port": self.port,
                        "certificate": str(PKI / "server-chain.pem"), "key": str(self.key)}],
            "admin": {"address": "127.0.0.1", "port": self.admin_port},
            "locations": [{"path": EAS, "client_certificate": "require"},
                          {"path": "/public", "client_certificate": "ignore"},
                          {"path": "/", "client_certificate": "accept"}],
            "upstream": {"url": upstream_url, "identity": "headers"},
            "logging": {"access_log": str(self.access_path), "audit_log": str(self.audit_path)},
            "errors": "custom",
            "server": {"threads": 2, "decision_threads": 2},
        })
        self.config = deep_merge(cfg, overrides or {})
        self.proc = None
        self.wrapper = []  # argv run before certmapd's (e.g. unshare ... exec "$@")
        self.write_config(self.config)

    def write_config(self, cfg):
        self.config = cfg
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cfg, indent=2) + "\n")
        os.replace(tmp, self.config_path)

    def write_raw_config(self, text):
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)

    def start(self, timeout=15):
        if not CERTMAPD.exists():
            raise AssertionError("certmapd not built at %s" % CERTMAPD)
        self.err = open(self.stderr_path, "w")
        argv = list(self.wrapper) + [str(CERTMAPD), "--config", str(self.config_path)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.err)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stderr()
            if re.search(r"certmapd \S+ ready", text) or " ready" in text:
                m = re.search(r"listening on https://[0-9.]+:(\d+)", text)
                if m:
                    self.port = int(m.group(1))
                m = re.search(r"admin listener on http://[0-9.]+:(\d+)", text)
                if m:
                    self.admin_port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("certmapd %s did not start (rc=%s):\n%s"
                             % (self.name, self.proc.poll(), self.stderr()))

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stderr_tail(self, n=30):
        return "\n".join(self.stderr().splitlines()[-n:])

    def reload(self, expect_ok=True, timeout=10):
        """SIGHUP; waits for the 'reloaded' (or 'reload failed') line."""
        text = self.stderr()
        ok0, bad0 = text.count("configuration reloaded"), text.count("reload failed")
        self.proc.send_signal(signal.SIGHUP)

        def done():
            t = self.stderr()
            return t.count("configuration reloaded") > ok0 or t.count("reload failed") > bad0
        wait_for(done, timeout, what="certmapd reload")
        t = self.stderr()
        ok = t.count("configuration reloaded") > ok0
        if ok != expect_ok:
            raise AssertionError("reload %s, expected %s:\n%s"
                                 % ("succeeded" if ok else "failed",
                                    "success" if expect_ok else "failure", self.stderr_tail()))
        return ok

    def stop(self, sig=signal.SIGTERM, timeout=40):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("certmapd %s did not stop within %d s" % (self.name, timeout))

    def rss_kib(self):
        for line in Path("/proc/%d/status" % self.pid).read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS for %d" % self.pid)

    # ---- logs ----

    def access_raw(self):
        try:
            return self.access_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def access_entries(self):
        out = []
        fields = W3C_FIELDS
        for line in self.access_raw().splitlines():
            if line.startswith("#Fields:"):
                fields = line.split(" ")[1:]
                continue
            if line.startswith("#") or not line:
                continue
            parts = line.split(" ")
            e = dict(zip(fields, parts))
            e["_line"] = line
            e["_nfields"] = len(parts)
            out.append(e)
        return out

    def wait_access(self, pred, timeout=4, what="access-log line"):
        def find():
            hits = [e for e in self.access_entries() if pred(e)]
            return hits or None
        return wait_for(find, timeout, what=what)

    def access_for(self, t, timeout=4):
        """The one access-log line whose query holds the tag t."""
        hits = self.wait_access(lambda e: t in e.get("cs-uri-query", ""), timeout,
                                what="access-log line with %s" % t)
        if len(hits) != 1:
            raise AssertionError("%d access-log lines hold %s: %s" % (len(hits), t, hits))
        return hits[0]

    def audit_entries(self):
        out = []
        try:
            text = self.audit_path.read_text()
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out

    def audit_for_cert(self, sha, timeout=4):
        def find():
            hits = [a for a in self.audit_entries()
                    if (a.get("cert") or {}).get("sha256") == sha]
            return hits or None
        return wait_for(find, timeout, what="audit line for cert %s" % sha[:16])

    # ---- admin ----

    def admin_get(self, path, timeout=10):
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read().decode(errors="replace")
        finally:
            c.close()

    def metrics(self):
        status, text = self.admin_get("/metrics")
        if status != 200:
            raise AssertionError("/metrics answered %d" % status)
        return parse_metrics(text)

    # ---- clients ----

    def url(self, path):
        return "https://127.0.0.1:%d%s" % (self.port, path)

    def curl(self, path, cert=None, chain=None, key=None, args=(), scratch=None, timeout=30,
             urls=None):
        return curl(self, path, cert=cert, chain=chain, key=key, args=args, scratch=scratch,
                    timeout=timeout, urls=urls)


PARSE_METRICS = r"""
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type,
                "samples": [[s.name, s.labels, s.value] for s in f.samples]})
print(json.dumps(out))
"""


def prometheus_python():
    for py in [os.environ.get("CERTMAP_PROMETHEUS_PYTHON"), sys.executable, "/usr/bin/python3"]:
        if py and os.path.exists(py) and subprocess.run(
                [py, "-c", "import prometheus_client.parser"], capture_output=True).returncode == 0:
            return py
    return None


class Metrics:
    def __init__(self, families, text):
        self.fam = {f["name"]: f for f in families}
        self.text = text

    def samples(self, sample_name):
        """{frozenset(labels.items()): value} of every sample with this name."""
        out = {}
        for f in self.fam.values():
            for name, labels, value in f["samples"]:
                if name == sample_name:
                    out[frozenset(labels.items())] = value
        return out

    def value(self, sample_name, **labels):
        want = {k: str(v) for k, v in labels.items()}
        total = 0.0
        for key, v in self.samples(sample_name).items():
            d = dict(key)
            if all(d.get(k) == val for k, val in want.items()):
                total += v
        return total


def parse_metrics(text):
    py = prometheus_python()
    if py is None:
        raise AssertionError("prometheus_client not importable (python3-prometheus-client)")
    proc = subprocess.run([py, "-c", PARSE_METRICS], input=text, capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0:
        raise AssertionError("prometheus_client could not parse /metrics:\n%s\n%s"
                             % (proc.stderr, text))
    return Metrics(json.loads(proc.stdout), text)


# ------------------------------------------------------------------------------------------
# curl


class Answer:
    def __init__(self, status, headers, body, raw_headers="", stderr="", rc=0):
        self.status = status
        self.headers = headers  # lower-case name -> last value
        self.body = body
        self.raw_headers = raw_headers
        self.stderr = stderr
        self.rc = rc

    @property
    def text(self):
        return self.body.decode("utf-8", errors="replace")

    @property
    def first_line(self):
        return self.text.split("\n", 1)[0]

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            raise AssertionError("not JSON (status %s): %r" % (self.status, self.body[:500]))

    def __repr__(self):
        return "Answer(status=%s, rc=%s, body=%r, stderr=%r)" % (
            self.status, self.rc, self.body[:300], self.stderr[-300:])


def parse_header_block(raw):
    """Last response's headers of a curl -D dump."""
    blocks = [b for b in re.split(r"\r?\n\r?\n", raw) if b.strip()]
    headers = {}
    status = None
    if blocks:
        lines = blocks[-1].splitlines()
        m = re.match(r"HTTP/\S+ (\d+)", lines[0]) if lines else None
        status = int(m.group(1)) if m else None
        for ln in lines[1:]:
            if ":" in ln:
                k, v = ln.split(":", 1)
                headers[k.strip().lower()] = v.strip()
    return status, headers


_curl_n = [0]


def curl(d, path, cert=None, chain=None, key=None, args=(), scratch=None, timeout=30, urls=None):
    """curl against certmapd d with client cert `cert` (a PKI file name, or None)."""
    _curl_n[0] += 1
    out = Path(tempfile.gettempdir()) / ("certmap-it-curl-%d-%d" % (os.getpid(), _curl_n[0]))
    hdr = out.with_suffix(".h")
    urls = urls or [path]
    outs = [out] + [out.with_suffix(".%d" % i) for i in range(1, len(urls))]
    argv = ["curl", "-sS", "--cacert", str(CA_BUNDLE), "-D", str(hdr),
            "-w", "%{http_code}\\n", "--max-time", str(timeout)]
    if cert is not None:
        certfile = scratch.client_pem(cert, chain) if chain else PKI / cert
        keyfile = PKI / (key or cert.rsplit(".", 1)[0] + ".key")
        argv += ["--cert", str(certfile), "--key", str(keyfile)]
    argv += list(args)
    for u, o in zip(urls, outs):
        argv += ["-o", str(o), d.url(u)]
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout + 10)
        codes = proc.stdout.decode().split()
        status = int(codes[-1]) if codes and codes[-1].isdigit() and codes[-1] != "000" else None
        raw = hdr.read_text(errors="replace") if hdr.exists() else ""
        _, headers = parse_header_block(raw)
        body = out.read_bytes() if out.exists() else b""
        a = Answer(status, headers, body, raw, proc.stderr.decode(errors="replace"),
                   proc.returncode)
        a.codes = [int(c) for c in codes if c.isdigit()]
        a.bodies = [o.read_bytes() if o.exists() else b"" for o in outs]
        return a
    finally:
        for p in outs + [hdr]:
            try:
                p.unlink()
            except FileNotFoundError:
                pass


# ------------------------------------------------------------------------------------------
# Python ssl clients


def client_context(cert=None, chain_file=None, key=None):
    ctx = ssl.create_default_context(cafile=str(CA_BUNDLE))
    if cert is not None:
        ctx.load_cert_chain(str(chain_file or PKI / cert),
                            str(PKI / (key or cert.rsplit(".", 1)[0] + ".key")))
    return ctx


def https_connection(d, ctx, timeout=30):
    return http.client.HTTPSConnection("127.0.0.1", d.port, context=ctx, timeout=timeout)


def tls_socket(d, ctx=None, timeout=10):
    ctx = ctx or client_context()
    s = socket.create_connection(("127.0.0.1", d.port), timeout=timeout)
    return ctx.wrap_socket(s, server_hostname="127.0.0.1")


def recv_all(sock, timeout=10, limit=1 << 20):
    """Reads until EOF (or timeout); returns (bytes, eof)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while len(data) < limit:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except (socket.timeout, TimeoutError):
        return data, False
    except (ConnectionResetError, ssl.SSLError, OSError):
        return data, True
    return data, False


def parse_raw_response(data):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/\S+ (\d+)", lines[0]) if lines and lines[0] else None
    headers = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return (int(m.group(1)) if m else None), headers, body


def openssl_s_client(d, request_bytes, cert=None, timeout=15):
    """Raw request bytes through `openssl s_client` (-ign_eof: read the whole answer)."""
    argv = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % d.port, "-quiet", "-ign_eof",
            "-CAfile", str(CA_BUNDLE), "-verify_return_error", "-servername", "localhost"]
    if cert is not None:
        argv += ["-cert", str(PKI / cert), "-key", str(PKI / (cert.rsplit(".", 1)[0] + ".key"))]
    proc = subprocess.run(argv, input=request_bytes, capture_output=True, timeout=timeout)
    return proc
