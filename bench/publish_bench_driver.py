"""Driver of bench/run-publish-bench (see bench/README.md, "Publish and audit at scale"): inside a
private network namespace, for each directory (Samba AD, slapd) and each size N, start a fresh
seeded directory with the test harness, add N accounts as members of a group "Bulk", write N
per-user certificates (one file each), and time certmapctl:

  publish-initial   publish --cert-dir (N adds)
  publish-again     the same again (nothing to add: idempotence costs reads only)
  audit             audit --group Bulk (members + every certificate holder, directory-wide)
  audit-3000ms      the same with timeout_ms 3000 (certmap's default) instead of the bench's
  prune-dry-run     10% of Bulk removed from the group, publish --cert-dir --prune --dry-run
  prune             the same for real (N/10 deletes)

Each step records wall time, certmapctl's CPU time and peak RSS, and the LDAP operations it
issued (its --json "ldap" counters). Prints a table and writes one JSON results file.

Run through bench/run-publish-bench; needs PYTHONPATH=tests/integration. Certificates are made
with python3-cryptography when present (one key, N signatures: seconds), else with the openssl
CLI (slow).
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from certmap_test import PKI, base_config
from harness import SambaAD, Slapd

BENCH_DIR = Path(__file__).resolve().parent
SOURCE_DIR = BENCH_DIR.parent
USER_CERTIFICATE_GUID = "bf967a7f-0de6-11d0-a285-00aa003049e2"
USER_CLASS_GUID = "bf967aba-0de6-11d0-a285-00aa003049e2"
STEP_TIMEOUT = 1800


def name_of(i):
    return "u%05d" % i


# ---- certificates -----------------------------------------------------------------------

def make_certs(out, n):
    """N client certificates under the lab's issuing CA, out/<name>.pem, UPN + e-mail SAN.
    Returns (seconds, method)."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        return _make_certs_openssl(out, n, t0)
    ca = x509.load_pem_x509_certificate((PKI / "issuing-ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((PKI / "issuing-ca.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
    end = datetime.datetime(2125, 1, 1, tzinfo=datetime.timezone.utc)
    upn_oid = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
    for i in range(n):
        name = name_of(i)
        upn = ("%s@lab.test" % name).encode()
        # otherName value: [0] EXPLICIT UTF8String
        value = b"\x0c" + bytes([len(upn)]) + upn
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Certmap Lab"),
                                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Users"),
                                         x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(ca.subject).public_key(key.public_key())
                .serial_number(0x500000 + i).not_valid_before(start).not_valid_after(end)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
                .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                             False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .add_extension(x509.SubjectAlternativeName([
                    x509.OtherName(upn_oid, value),
                    x509.RFC822Name("%s@lab.test" % name)]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        (out / ("%s.pem" % name)).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return time.monotonic() - t0, "python3-cryptography"


def _make_certs_openssl(out, n, t0):
    key = out / "key.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", str(key)], check=True, capture_output=True)
    for i in range(n):
        name = name_of(i)
        ext = out / "ext.cnf"
        ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                       "extendedKeyUsage=clientAuth\nsubjectAltName=otherName:"
                       "1.3.6.1.4.1.311.20.2.3;UTF8:%s@lab.test,email:%s@lab.test\n" % (name, name))
        csr = subprocess.run(["openssl", "req", "-new", "-key", str(key), "-subj",
                              "/C=US/O=Certmap Lab/OU=Users/CN=%s" % name],
                             check=True, capture_output=True).stdout
        subprocess.run(["openssl", "x509", "-req", "-CA", str(PKI / "issuing-ca.pem"), "-CAkey",
                        str(PKI / "issuing-ca.key"), "-set_serial", str(0x500000 + i), "-days",
                        "3650", "-extfile", str(ext), "-out", str(out / ("%s.pem" % name))],
                       input=csr, check=True, capture_output=True)
    (out / "ext.cnf").unlink()
    key.unlink()
    return time.monotonic() - t0, "openssl CLI"


# ---- directories ------------------------------------------------------------------------

def slapd_extra(base):
    svc = "cn=svc-certmap," + base
    return ('limits dn.exact="{svc}" size=unlimited time=unlimited\n'
            'access to dn.children="ou=people,{base}" attrs=userCertificate\n'
            '    by dn.exact="{svc}" write\n    by self read\n    by * none\n'
            ).format(svc=svc, base=base)


def start_directory(kind, work):
    if kind == "ad":
        d = SambaAD(str(work / "ad"))
    else:
        d = Slapd(str(work / "slapd"), extra_db_config=slapd_extra("dc=lab,dc=test"))
    d.start(fresh=True)
    d.seed()
    if kind == "ad":
        # svc-certmap may write userCertificate on every user: the seeded ones explicitly,
        # the bulk ones by inheritance from CN=Users
        sid = d.object_sid("svc-certmap")
        people = [u for u in ("alice", "bob", "carol", "dave", "erin", "frank", "gina", "hank",
                              "mallory", "ivan", "judy", "kim", "leo", "mike", "nina", "oscar",
                              "pat")]
        d.add_aces([(u, "(OA;;WP;%s;;%s)" % (USER_CERTIFICATE_GUID, sid)) for u in people] +
                   [("CN=Users," + d.base_dn,
                     "(OA;CI;WP;%s;%s;%s)" % (USER_CERTIFICATE_GUID, USER_CLASS_GUID, sid))])
    return d


def remove_members(d, names):
    gdn = d.group_dn("Bulk")
    text = "dn: %s\nchangetype: modify\ndelete: member\n%s-\n" % (
        gdn, "".join("member: %s\n" % d.user_dn(n) for n in names))
    d.ldapmodify(text)


# ---- running certmapctl -----------------------------------------------------------------

def run_ctl(ctl, args, label):
    """certmapctl with --json: (wall seconds, exit status, stdout, stderr, its own rusage)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        p = subprocess.Popen([str(ctl)] + [str(a) for a in args] + ["--json"], stdout=out,
                             stderr=err)
        timer = threading.Timer(STEP_TIMEOUT, p.kill)
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        wall = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return wall, p.returncode, out.read().decode(), err.read().decode(), ru


def step(results, ctl, label, args, expect_rc=(0,), allow_failure=False):
    wall, rc, out, err, ru = run_ctl(ctl, args, label)
    try:
        j = json.loads(out)
    except ValueError:
        j = None
    if allow_failure and j is None:
        results.append({"step": label, "seconds": round(wall, 3), "exit": rc,
                        "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 3),
                        "max_rss_mb": round(ru.ru_maxrss / 1024.0, 1), "ldap": None,
                        "error": err.strip()[:500]})
        sys.stderr.write("  %-16s %8.2f s  FAILED: %s\n" % (label, wall, err.strip()[:200]))
        return None
    if rc not in expect_rc or j is None:
        raise RuntimeError("%s: exit %d\nstdout: %s\nstderr: %s" % (label, rc, out[:2000], err[:2000]))
    r = {
        "step": label, "seconds": round(wall, 3), "exit": rc,
        "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 3),
        "max_rss_mb": round(ru.ru_maxrss / 1024.0, 1),
        "ldap": j.get("ldap"),
    }
    if "summary" in j:
        r["summary"] = j["summary"]
        r["members"] = j.get("members")
    if "counts" in j:
        r["counts"] = j["counts"]
        r["scanned"] = j["scanned"]
    results.append(r)
    ops = r["ldap"]["operations"] if r["ldap"] else "?"
    sys.stderr.write("  %-16s %8.2f s  cpu %6.2f s  rss %6.1f MB  %6s LDAP ops\n"
                     % (label, wall, r["cpu_seconds"], r["max_rss_mb"], ops))
    return j


def bench_one(kind, n, ctl, certs_dir, scratch, timeout_ms):
    work = Path(tempfile.mkdtemp(prefix="dir-", dir=str(scratch)))
    res = {"directory": kind, "accounts": n, "steps": []}
    d = start_directory(kind, work)
    try:
        names = [name_of(i) for i in range(n)]
        t0 = time.monotonic()
        d.add_users(names, group="Bulk")
        res["create_accounts_seconds"] = round(time.monotonic() - t0, 2)
        cfg_data = base_config(d, directory={"timeout_ms": timeout_ms})
        cfg = work / "config.json"
        cfg.write_text(json.dumps(cfg_data, indent=2))
        common = ["--config", cfg, "--group", "Bulk"]
        sys.stderr.write("%s, %d accounts (created in %.1f s):\n"
                         % (kind, n, res["create_accounts_seconds"]))
        j = step(res["steps"], ctl, "publish-initial", ["publish"] + common + ["--cert-dir", certs_dir])
        assert j["summary"]["added"] == n, j["summary"]
        j = step(res["steps"], ctl, "publish-again", ["publish"] + common + ["--cert-dir", certs_dir])
        assert j["summary"]["added"] == 0 and j["summary"]["already_present"] == n, j["summary"]
        # audit exits 1: the lab's shared certificate is a critical finding
        j = step(res["steps"], ctl, "audit", ["audit", "--config", cfg, "--group", "Bulk"],
                 expect_rc=(0, 1))
        assert j["scanned"]["members"] == n, j["scanned"]
        # the same audit with certmap's default timeout_ms (3000): does one page fit?
        default_cfg = work / "config-3000.json"
        default_cfg.write_text(json.dumps(base_config(d, directory={"timeout_ms": 3000}), indent=2))
        step(res["steps"], ctl, "audit-3000ms", ["audit", "--config", default_cfg, "--group", "Bulk"],
             expect_rc=(0, 1), allow_failure=True)
        gone = names[::10]
        remove_members(d, gone)
        j = step(res["steps"], ctl, "prune-dry-run",
                 ["publish"] + common + ["--cert-dir", certs_dir, "--prune", "--dry-run"])
        pruned = [c for c in j["changes"] if c["action"] == "delete" and c["account"] in set(gone)]
        assert len(pruned) == len(gone), (len(pruned), len(gone))
        j = step(res["steps"], ctl, "prune",
                 ["publish"] + common + ["--cert-dir", certs_dir, "--prune"])
        assert j["summary"]["failed"] == 0, j["summary"]
        assert j["summary"]["removed"] >= len(gone), j["summary"]
    finally:
        d.stop()
        shutil.rmtree(str(work), ignore_errors=True)
    return res


def environment():
    cpu = None
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ctl", required=True, help="path of certmapctl")
    ap.add_argument("--out", required=True, help="results JSON file to write")
    ap.add_argument("--sizes", default="1000,10000", help="comma-separated account counts")
    ap.add_argument("--only", choices=["ad", "slapd"], action="append", help="one directory")
    ap.add_argument("--timeout-ms", type=int, default=10000,
                    help="directory.timeout_ms of the config (per operation and page)")
    ap.add_argument("--quick", action="store_true", help="sizes 200,1000")
    args = ap.parse_args()
    sizes = [200, 1000] if args.quick else [int(x) for x in args.sizes.split(",")]
    kinds = args.only or ["ad", "slapd"]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    scratch = Path(tempfile.mkdtemp(prefix="certmap-publish-bench-"))
    results = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
               "environment": environment(), "timeout_ms": args.timeout_ms, "runs": []}
    try:
        certs = scratch / "certs"
        secs, method = make_certs(certs, max(sizes))
        results["certificates"] = {"count": max(sizes), "seconds": round(secs, 2), "method": method}
        sys.stderr.write("%d certificates in %.1f s (%s)\n" % (max(sizes), secs, method))
        for n in sizes:
            # --cert-dir takes every file of a directory: one directory per size
            sub = scratch / ("certs-%d" % n)
            sub.mkdir()
            for i in range(n):
                os.link(str(certs / ("%s.pem" % name_of(i))), str(sub / ("%s.pem" % name_of(i))))
            for kind in kinds:
                results["runs"].append(bench_one(kind, n, args.ctl, sub, scratch, args.timeout_ms))
    finally:
        shutil.rmtree(str(scratch), ignore_errors=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print("\n%-6s %7s  %-16s %9s %9s %8s %9s %9s" % ("dir", "N", "step", "seconds", "cpu s",
                                                     "rss MB", "LDAP ops", "modifies"))
    for run in results["runs"]:
        for s in run["steps"]:
            ldap = s["ldap"] or {}
            print("%-6s %7d  %-16s %9.2f %9.2f %8.1f %9s %9s%s" % (
                run["directory"], run["accounts"], s["step"], s["seconds"], s["cpu_seconds"],
                s["max_rss_mb"], ldap.get("operations", "?"), ldap.get("modifies", "?"),
                "  (failed: %s)" % s["error"][:100] if s.get("error") else ""))
    print("\nresults: %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
