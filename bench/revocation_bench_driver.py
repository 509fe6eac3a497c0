"""Driver of bench/run-revocation-bench (see bench/README.md, "Revocation"): the cost of one
revocation check on a cached CRL of 1,000 / 10,000 / 100,000 entries and on a cached OCSP
answer, measured with build/bench/decision_bench --mode x509 (its `cm_revocation_check` stage).

Everything is made at run time in a scratch directory: an EC P-256 CA, a leaf with the
clientAuth EKU, CRLs of N random serials (DER, encoded here directly: the `cryptography` CRL
builder is quadratic in the entry count; signed with the CA key by `cryptography`), one
variant per N that does not list the leaf (expect allowed) and one that lists it at a random
position (expect revoked), and an `openssl ocsp` responder whose index has the leaf as valid.
Configs use revocation mode hard, so an unanswered check would fail the run.

Per CRL size: the measured run (warmup + iterations, p50/p99 of the revocation stage), and
--load-runs separate one-decision processes giving the process wall time (config load, CRL
parse and sort) and the first check (which verifies the CRL signature; later checks reuse
the memoized verdict). OCSP: the measured run (the warmup's first check fetches, the measured
ones hit the cache) and --load-runs one-decision processes whose only check is the fetch.

Run through bench/run-revocation-bench (which builds and enters tests/integration/netns-run:
the responder uses a fixed port). Bounded by iteration counts, decision_bench's
--duration-limit and subprocess timeouts.
"""

import argparse
import datetime
import json
import os
import platform
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BENCH_DIR = Path(__file__).resolve().parent
SOURCE_DIR = BENCH_DIR.parent
STAGE = "cm_revocation_check"
SIZES = (1000, 10000, 100000)
DEFAULT_OCSP_PORT = 8190

# ---- DER encoding (just what a CRL needs) ----


def der_len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def tlv(tag, content):
    return bytes([tag]) + der_len(len(content)) + content


def der_int(v):
    return tlv(0x02, v.to_bytes(v.bit_length() // 8 + 1, "big", signed=True))


def der_seq(*parts):
    return tlv(0x30, b"".join(parts))


def der_utctime(t):
    return tlv(0x17, t.strftime("%y%m%d%H%M%SZ").encode())


ECDSA_SHA256 = der_seq(tlv(0x06, bytes.fromhex("2a8648ce3d040302")))  # 1.2.840.10045.4.3.2


def der_ext(oid_der, value_der):
    return der_seq(tlv(0x06, oid_der), tlv(0x04, value_der))


def make_crl(ca_key, ca_cert, serials, this_update, next_update, number):
    """A v2 CRL (DER) of `serials` (order kept), with AKI and CRL number, signed ECDSA-SHA256."""
    rev_date = der_utctime(this_update - datetime.timedelta(hours=1))
    entries = b"".join(der_seq(der_int(s), rev_date) for s in serials)
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()).public_bytes()
    exts = der_seq(der_ext(bytes.fromhex("551d23"), aki),             # 2.5.29.35
                   der_ext(bytes.fromhex("551d14"), der_int(number)))  # 2.5.29.20
    tbs = der_seq(der_int(1), ECDSA_SHA256, ca_cert.subject.public_bytes(),
                  der_utctime(this_update), der_utctime(next_update),
                  der_seq(entries) if serials else b"", tlv(0xA0, exts))
    sig = ca_key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return der_seq(tbs, ECDSA_SHA256, tlv(0x03, b"\x00" + sig))


# ---- PKI ----


class Pki:
    def __init__(self, d):
        self.dir = d
        self.now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certmap bench"),
                             x509.NameAttribute(NameOID.COMMON_NAME, "Revocation Bench CA")])
        ski = x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key())
        self.ca = (x509.CertificateBuilder()
                   .subject_name(ca_name).issuer_name(ca_name)
                   .public_key(self.ca_key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(self.now - datetime.timedelta(days=1))
                   .not_valid_after(self.now + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False,
                                                key_agreement=False, key_cert_sign=True,
                                                crl_sign=True, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .add_extension(ski, critical=False)
                   .sign(self.ca_key, hashes.SHA256()))
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        self.leaf_serial = x509.random_serial_number()
        self.leaf_not_after = self.now + datetime.timedelta(days=10)
        self.leaf = (x509.CertificateBuilder()
                     .subject_name(x509.Name([
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certmap bench"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "bench-leaf")]))
                     .issuer_name(ca_name)
                     .public_key(leaf_key.public_key())
                     .serial_number(self.leaf_serial)
                     .not_valid_before(self.now - datetime.timedelta(hours=1))
                     .not_valid_after(self.leaf_not_after)
                     .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                    critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                  key_encipherment=False, data_encipherment=False,
                                                  key_agreement=False, key_cert_sign=False,
                                                  crl_sign=False, encipher_only=False,
                                                  decipher_only=False), critical=True)
                     .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                                    critical=False)
                     .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                         ski), critical=False)
                     .sign(self.ca_key, hashes.SHA256()))
        self.ca_pem = d / "ca.pem"
        self.ca_keyfile = d / "ca.key"
        self.leaf_pem = d / "leaf.pem"
        self.ca_pem.write_bytes(self.ca.public_bytes(serialization.Encoding.PEM))
        self.ca_keyfile.write_bytes(self.ca_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        os.chmod(self.ca_keyfile, 0o600)
        self.leaf_pem.write_bytes(self.leaf.public_bytes(serialization.Encoding.PEM))

    def crl(self, n, listed, rng):
        """Writes crl-<n>[-listed].der: n random 127-bit serials (never the leaf's); when listed,
        the leaf's serial replaces the one at a random position. Returns (path, bytes, pos)."""
        serials = set()
        while len(serials) < n:
            s = rng.getrandbits(127) | (1 << 126)
            if s != self.leaf_serial:
                serials.add(s)
        serials = list(serials)
        rng.shuffle(serials)
        pos = None
        if listed:
            pos = rng.randrange(n)
            serials[pos] = self.leaf_serial
        der = make_crl(self.ca_key, self.ca, serials, self.now - datetime.timedelta(minutes=5),
                       self.now + datetime.timedelta(days=7), number=n + (1 if listed else 0))
        crl = x509.load_der_x509_crl(der)  # sanity: well formed, signed by the CA
        if not crl.is_signature_valid(self.ca_key.public_key()) or len(crl) != n:
            raise SystemExit("run-revocation-bench: generated CRL for n=%d is broken" % n)
        if (crl.get_revoked_certificate_by_serial_number(self.leaf_serial) is not None) != listed:
            raise SystemExit("run-revocation-bench: CRL n=%d: leaf listing is wrong" % n)
        p = self.dir / ("crl-%d%s.der" % (n, "-listed" if listed else ""))
        p.write_bytes(der)
        return p, len(der), pos

    def ocsp_index(self):
        """openssl ca database with the leaf as valid (V)."""
        dn = "/O=certmap bench/CN=bench-leaf"
        line = "\t".join(["V", self.leaf_not_after.strftime("%y%m%d%H%M%SZ"), "",
                          "%X" % self.leaf_serial, "unknown", dn])
        idx = self.dir / "index.txt"
        idx.write_text(line + "\n")
        (self.dir / "index.txt.attr").write_text("unique_subject = no\n")
        return idx


# ---- config, responder, bench ----


def write_config(work, name, revocation):
    pw = work / "bind.pw"
    if not pw.exists():
        pw.write_text("unused\n")
        os.chmod(pw, 0o600)
    rev = {"mode": "hard", "crl_files": [], "fetch_cdp": False, "ocsp": False,
           "timeout_ms": 3000}
    rev.update(revocation)
    cfg = {
        "client_certificates": {
            "trusted_issuers": [str(work / "ca.pem")],
            "require_client_auth_eku": True,
            "revocation": rev,
        },
        # x509 mode loads this section and never contacts it (nothing listens on port 1)
        "directory": {"uris": ["ldap://127.0.0.1:1"], "dialect": "ad",
                      "base_dn": "DC=lab,DC=test",
                      "bind_dn": "CN=svc-certmap,CN=Users,DC=lab,DC=test",
                      "bind_password_file": str(pw), "timeout_ms": 2000,
                      "netbios_domain": "LAB"},
        "mapping": {"methods": ["user_certificate"], "on_ambiguous": "deny"},
        "authorization": {"required_groups": ["CN=ActiveSync Users,CN=Users,DC=lab,DC=test"],
                          "check_account_state": True, "basic_user_binding": "off"},
    }
    p = work / ("config-%s.json" % name)
    p.write_text(json.dumps(cfg, indent=2))
    return p


class Responder:
    def __init__(self, pki, port, logdir):
        self.argv = ["openssl", "ocsp", "-index", str(pki.ocsp_index()), "-port", str(port),
                     "-rsigner", str(pki.ca_pem), "-rkey", str(pki.ca_keyfile),
                     "-CA", str(pki.ca_pem), "-nmin", "60", "-ignore_err", "-timeout", "3"]
        self.log = logdir / ("ocsp-%d.log" % port)
        self.proc = None

    def start(self):
        self.out = open(self.log, "wb")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while b"waiting for OCSP client connections" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("run-revocation-bench: openssl ocsp did not start (rc %s): %s" % (
                    self.proc.poll(), self.log.read_text(errors="replace")))
            time.sleep(0.05)
        return self

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.close()


def run_bench(bench, cfg, cert, label, iterations, warmup, expect="allowed", timeout=60,
              must_trace=None):
    """One decision_bench run. must_trace: a string the revocation trace of the first measured
    decision (--show-trace) must contain (e.g. that the OCSP answer came from the cache)."""
    argv = [str(bench), "--mode", "x509", "--config", str(cfg), "--cert", str(cert),
            "--label", label, "--iterations", str(iterations), "--warmup", str(warmup),
            "--duration-limit", "30", "--expect", expect]
    if must_trace:
        argv.append("--show-trace")
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        raise SystemExit("run-revocation-bench: %s failed (exit %d): %s" % (
            label, p.returncode, " ".join(argv)))
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["process_wall_ms"] = round(wall * 1000.0, 1)
    if must_trace:
        trace = [ln.strip() for ln in p.stderr.splitlines() if ln.strip().startswith("revocation:")]
        if not any(must_trace in ln for ln in trace):
            sys.stderr.write(p.stderr)
            raise SystemExit("run-revocation-bench: %s: trace lacks %r" % (label, must_trace))
        res["revocation_trace"] = trace
    return res, "".join(ln + "\n" for ln in p.stderr.splitlines()  # without the trace
                        if not ln.strip().startswith(("x509:", "revocation:", "mapping:",
                                                      "policy:")) and " trace:" not in ln)


def cold(bench, cfg, cert, label, runs, expect="allowed"):
    """runs one-decision processes: median process wall ms and median first-check us."""
    walls, firsts = [], []
    for _ in range(runs):
        r, _ = run_bench(bench, cfg, cert, label + " (cold)", 1, 0, expect, timeout=30)
        walls.append(r["process_wall_ms"])
        firsts.append(r["stages"][STAGE]["p50_us"])
    return {"runs": runs, "process_wall_ms": round(statistics.median(walls), 1),
            "process_wall_ms_all": walls, "first_check_us": round(statistics.median(firsts), 1),
            "first_check_us_all": firsts}


def tool_version(argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        out = (p.stdout or p.stderr).strip().splitlines()
        return out[0].strip() if out else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment():
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dirty = subprocess.run(["git", "-C", str(SOURCE_DIR), "status", "--porcelain", "--",
                            "common", "include"], capture_output=True, text=True).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "commit": tool_version(["git", "-C", str(SOURCE_DIR), "rev-parse", "--short", "HEAD"]),
        "libcertmap_dirty": bool(dirty),
        "openssl": tool_version(["openssl", "version"]),
    }


def summary(doc):
    rows = doc["results"]
    base = {r["listed"]: r["stage"]["p50_us"] for r in rows
            if r["kind"] == "crl" and r["n"] == SIZES[0]}
    head = "%-22s %9s %8s %8s %8s %10s %12s %10s" % (
        "scenario", "CRL bytes", "p50 us", "p99 us", "ratio", "stage mean", "first chk us",
        "startup ms")
    lines = [head, "-" * len(head)]
    for r in rows:
        st = r["stage"]
        b = base.get(r["listed"]) if r["kind"] == "crl" else None
        ratio = "%.2f" % (st["p50_us"] / b) if b else "-"
        lines.append("%-22s %9s %8.1f %8.1f %8s %10.1f %12s %10s" % (
            r["label"], r.get("crl_bytes", "-"), st["p50_us"], st["p99_us"], ratio,
            st["mean_us"], "%.1f" % r["cold"]["first_check_us"] if r.get("cold") else "-",
            "%.1f" % r["cold"]["process_wall_ms"] if r.get("cold") else "-"))
    lines.append("")
    lines.append("p50/p99: cm_revocation_check of the measured (cached) checks; ratio: p50 vs "
                 "the 1k CRL of the same kind (leaf listed or not);")
    lines.append("first chk: the first check of a fresh process (CRL: signature verify; OCSP: "
                 "the fetch), median of %d;" % doc["load_runs"])
    lines.append("startup: process wall time of a one-decision run (config + CRL load).")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", required=True, help="path of the decision_bench binary")
    ap.add_argument("--out", required=True, help="results JSON file to write")
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--load-runs", type=int, default=3,
                    help="one-decision processes per scenario for startup / first check")
    ap.add_argument("--ocsp-port", type=int, default=DEFAULT_OCSP_PORT)
    ap.add_argument("--seed", type=int, help="random seed for the CRL serials")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("run-revocation-bench: terminated"))

    seed = args.seed if args.seed is not None else secrets.randbits(32)
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="certmap-revbench-"))
    t_start = time.monotonic()
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        sys.stderr.write("run-revocation-bench: warning: load average %.2f: other work on this "
                         "machine will show in the tails (p99)\n" % load_before[0])
    results = []
    responder = None
    try:
        t0 = time.monotonic()
        pki = Pki(work)
        crls = {}
        for n in SIZES:
            for listed in (False, True):
                crls[(n, listed)] = pki.crl(n, listed, rng)
        gen_s = round(time.monotonic() - t0, 2)
        sys.stderr.write("run-revocation-bench: PKI and CRLs made in %.1f s (seed %d)\n"
                         % (gen_s, seed))

        for n in SIZES:
            for listed in (False, True):
                path, size, pos = crls[(n, listed)]
                name = "crl-%d%s" % (n, "-listed" if listed else "")
                label = "CRL %dk%s" % (n // 1000, " leaf listed" if listed else "")
                expect = "revoked" if listed else "allowed"
                cfg = write_config(work, name, {"crl_files": [str(path)]})
                res, err = run_bench(args.bench, cfg, pki.leaf_pem, label, args.iterations,
                                     args.warmup, expect,
                                     must_trace="%s (current, %d entries" % (
                                         "revoked" if listed else "not listed", n))
                sys.stderr.write(err)
                results.append({
                    "label": label, "kind": "crl", "n": n, "listed": listed,
                    "listed_position": pos, "crl_bytes": size, "expect": expect,
                    "stage": res["stages"][STAGE],
                    "cold": cold(args.bench, cfg, pki.leaf_pem, label, args.load_runs, expect),
                    "bench": res})

        responder = Responder(pki, args.ocsp_port, work).start()
        cfg = write_config(work, "ocsp", {"ocsp": True, "ocsp_responder":
                                          "http://127.0.0.1:%d" % args.ocsp_port})
        res, err = run_bench(args.bench, cfg, pki.leaf_pem, "OCSP cached", args.iterations,
                             args.warmup, must_trace="signer issuer, cached)")
        sys.stderr.write(err)
        results.append({"label": "OCSP cached", "kind": "ocsp", "n": None, "listed": False,
                        "expect": "allowed", "stage": res["stages"][STAGE],
                        "cold": cold(args.bench, cfg, pki.leaf_pem, "OCSP", args.load_runs),
                        "bench": res})
    finally:
        if responder is not None:
            responder.stop()
        if args.keep:
            sys.stderr.write("run-revocation-bench: scratch kept in %s\n" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)

    doc = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": environment(),
        "seed": seed,
        "iterations": args.iterations,
        "warmup": args.warmup,
        "load_runs": args.load_runs,
        "generate_s": gen_s,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "total_s": round(time.monotonic() - t_start, 2),
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(summary(doc))
    print("\nwrote %s (%.1f s)" % (out, doc["total_s"]))


if __name__ == "__main__":
    main()
