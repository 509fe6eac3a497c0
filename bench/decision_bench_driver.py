"""Driver of bench/run-decision-bench (see bench/README.md): inside a private network namespace,
start slapd and Samba AD with the test harness, write certmap configs with
certmap_test.base_config, run build/bench/decision_bench for each scenario, print a summary
table and write one JSON results file.

Run through bench/run-decision-bench (which builds and enters tests/integration/netns-run);
needs PYTHONPATH=tests/integration. Every scenario is bounded by its iteration count, the
bench's --duration-limit and a subprocess timeout.
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
import time
from pathlib import Path

from certmap_test import PKI, base_config
from harness import SambaAD, Slapd

BENCH_DIR = Path(__file__).resolve().parent
SOURCE_DIR = BENCH_DIR.parent

ALICE = ["alice.pem"]
# Certificates every seeded directory allows with the base config (tests/integration/test_check.py).
ROTATION = ["alice.pem", "carol.pem", "carol2.pem", "nina-large.pem", "oscar-meta.pem", "pat.pem"]


def scenarios(quick):
    """(label, target, bench args, certs); target: x509 | slapd | ad | slapd-plain | ad-plain
    (the last two: the directory's ldap:// URI instead of ldaps://)."""
    n = (lambda full, q: q if quick else full)
    return [
        ("x509 alice", "x509", ["--mode", "x509", "--iterations", n(5000, 200),
                                "--warmup", n(200, 20), "--duration-limit", "10"], ALICE),
        ("x509 rotation", "x509", ["--mode", "x509", "--iterations", n(5000, 200),
                                   "--warmup", n(200, 20), "--duration-limit", "10"], ROTATION),
        ("decide slapd alice", "slapd", ["--mode", "decide", "--iterations", n(2000, 100),
                                         "--warmup", n(100, 10), "--duration-limit", "15"], ALICE),
        ("decide slapd rotation", "slapd", ["--mode", "decide", "--iterations", n(2000, 100),
                                            "--warmup", n(100, 10), "--duration-limit", "15"],
         ROTATION),
        ("decide slapd reconnect", "slapd", ["--mode", "decide", "--reconnect",
                                             "--iterations", n(300, 30), "--warmup", n(10, 2),
                                             "--duration-limit", "15"], ALICE),
        ("decide ad alice", "ad", ["--mode", "decide", "--iterations", n(1000, 100),
                                   "--warmup", n(50, 10), "--duration-limit", "20"], ALICE),
        ("decide ad rotation", "ad", ["--mode", "decide", "--iterations", n(1000, 100),
                                      "--warmup", n(50, 10), "--duration-limit", "20"], ROTATION),
        ("decide ad reconnect", "ad", ["--mode", "decide", "--reconnect",
                                       "--iterations", n(300, 30), "--warmup", n(10, 2),
                                       "--duration-limit", "15"], ALICE),
        # The same over plain ldap:// (uris[1]): the difference is the TLS connection setup.
        ("decide slapd reconn. ldap", "slapd-plain", ["--mode", "decide", "--reconnect",
                                                      "--iterations", n(300, 30),
                                                      "--warmup", n(10, 2),
                                                      "--duration-limit", "15"], ALICE),
        ("decide ad reconn. ldap", "ad-plain", ["--mode", "decide", "--reconnect",
                                                "--iterations", n(300, 30), "--warmup", n(10, 2),
                                                "--duration-limit", "15"], ALICE),
    ]


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
    commit = tool_version(["git", "-C", str(SOURCE_DIR), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(SOURCE_DIR), "status", "--porcelain", "--",
                            "common", "include"], capture_output=True, text=True).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "commit": commit,
        "libcertmap_dirty": bool(dirty),
        "samba": tool_version(["samba", "--version"]),
        "slapd": tool_version(["dpkg-query", "-W", "-f=${Version}", "slapd"]),
        "openssl": tool_version(["openssl", "version"]),
    }


def run_bench(bench, cfg, certs, args, label, timeout):
    argv = [str(bench), "--config", str(cfg), "--label", label] + [str(a) for a in args]
    for c in certs:
        argv += ["--cert", str(PKI / c)]
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    sys.stderr.write(p.stderr)
    if p.returncode != 0:
        raise SystemExit("run-decision-bench: %s failed (exit %d): %s" % (label, p.returncode,
                                                                          " ".join(argv)))
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["certs_used"] = certs
    res["elapsed_s"] = round(time.monotonic() - t0, 3)
    return res


def summary(results):
    head = "%-26s %-8s %7s %9s %9s %9s %9s %9s %10s" % (
        "scenario", "dialect", "n", "p50 us", "p90 us", "p99 us", "max us", "mean us", "dec/s")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append("%-26s %-8s %7d %9.1f %9.1f %9.1f %9.1f %9.1f %10.0f%s" % (
            r["label"], r["dialect"] or "-", r["iterations"], r["p50_us"], r["p90_us"],
            r["p99_us"], r["max_us"], r["mean_us"], r["decisions_per_s"],
            "  (truncated)" if r["truncated"] else ""))
    ops = [r for r in results if r.get("ldap_ops")]
    if ops:
        lines.append("")
        lines.append("LDAP searches inside the decisions (p50 / p99 us, per search):")
        for r in ops:
            for name, s in r["ldap_ops"].items():
                if isinstance(s, dict):
                    lines.append("  %-26s %-44s %9.1f %9.1f  (n=%d)" % (
                        r["label"], name, s["p50_us"], s["p99_us"], s["n"]))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", required=True, help="path of the decision_bench binary")
    ap.add_argument("--out", required=True, help="results JSON file to write")
    ap.add_argument("--quick", action="store_true", help="few iterations (smoke run)")
    ap.add_argument("--only", choices=["x509", "slapd", "ad"], action="append",
                    help="run only these targets (repeatable; slapd/ad include their ldap:// "
                         "variants)")
    args = ap.parse_args()
    # run-decision-bench's timeout sends SIGTERM: unwind through finally: (stops the directories).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("run-decision-bench: terminated"))

    work = Path(tempfile.mkdtemp(prefix="certmap-bench-"))
    dirs = {}
    results = []
    started = {}
    t_start = time.monotonic()
    todo = [s for s in scenarios(args.quick)
            if not args.only or s[1].replace("-plain", "") in args.only]
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        sys.stderr.write("run-decision-bench: warning: load average %.2f: other work on this "
                         "machine will show in the tails (p99, max)\n" % load_before[0])
    try:
        need = {s[1].replace("-plain", "") for s in todo}
        if need & {"slapd", "x509"}:
            t0 = time.monotonic()
            dirs["slapd"] = Slapd(str(work / "slapd"))
            dirs["slapd"].start()
            dirs["slapd"].seed()
            started["slapd_s"] = round(time.monotonic() - t0, 2)
        if "ad" in need:
            t0 = time.monotonic()
            dirs["ad"] = SambaAD(str(work / "ad"))
            dirs["ad"].start()
            dirs["ad"].seed()
            started["samba_ad_s"] = round(time.monotonic() - t0, 2)
        sys.stderr.write("run-decision-bench: directories up (%s)\n" % json.dumps(started))

        configs = {}
        for name, d in dirs.items():
            for suffix, uri in (("", d.uris[0]), ("-plain", d.uris[1])):
                p = work / ("config-%s%s.json" % (name, suffix))
                p.write_text(json.dumps(base_config(d, directory={"uris": [uri]}), indent=2))
                configs[name + suffix] = p
        # x509 mode never contacts the directory; it only needs the client_certificates section.
        configs["x509"] = configs.get("slapd")

        for label, target, bench_args, certs in todo:
            results.append(run_bench(args.bench, configs[target], certs, bench_args, label,
                                     timeout=60))
    finally:
        for d in dirs.values():
            try:
                d.stop()
            except Exception as e:  # keep stopping the others
                sys.stderr.write("run-decision-bench: stopping %s: %s\n" % (d.kind, e))
        shutil.rmtree(work, ignore_errors=True)

    doc = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quick": args.quick,
        "environment": environment(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "directory_start": started,
        "total_s": round(time.monotonic() - t_start, 2),
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(summary(results))
    print("\nwrote %s (%.1f s)" % (out, doc["total_s"]))


if __name__ == "__main__":
    main()
