#!/usr/bin/env python3
"""benchlib.py -- small helpers for bench/run-proxy-bench (standard library only).

  freeport                      a free TCP port on 127.0.0.1
  procs PID                     the processes to measure: PID's children (nginx workers), else PID
  rss PID...                    sum of VmRSS, KiB
  hwm-reset PID...              reset the peak-RSS counters (echo 5 > /proc/PID/clear_refs)
  hwm PID...                    sum of VmHWM (peak RSS since the reset), KiB
  record --file F --proxy P --round N --test T [--set K=V]...
                                stdin = certmap-loadgen output; appends one JSON line to F
  summarize --runs F --out OUT [--set K=V]...
                                medians per proxy and test, ratios certmapd/nginx, a table
  certmapd-config ...           HOOK: writes a certmapd config equivalent to bench/nginx/proxy.conf.in
"""
import argparse
import json
import os
import socket
import statistics
import sys


def cmd_freeport(_a):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        # field 4 (ppid) follows the ")" that ends the command name
        if int(st.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(d))
    return sorted(out)


def cmd_procs(a):
    kids = children(a.pid)
    print(" ".join(str(p) for p in (kids or [a.pid])))


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cmd_rss(a):
    print(sum(status_kib(p, "VmRSS") for p in a.pids))


def cmd_hwm(a):
    print(sum(status_kib(p, "VmHWM") for p in a.pids))


def cmd_hwm_reset(a):
    for p in a.pids:
        with open(f"/proc/{p}/clear_refs", "w") as f:
            f.write("5")


def parse_sets(items):
    out = {}
    for kv in items or []:
        k, _, v = kv.partition("=")
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def cmd_record(a):
    text = sys.stdin.read()
    lg = None
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                lg = json.loads(line)
            except ValueError:
                pass
    rec = {"proxy": a.proxy, "round": a.round, "test": a.test, "loadgen": lg}
    rec.update(parse_sets(a.set))
    with open(a.file, "a") as f:
        f.write(json.dumps(rec, sort_keys=True) + "\n")
    if lg is None:
        print(f"benchlib: {a.proxy} {a.test}: no JSON line from certmap-loadgen", file=sys.stderr)
        return 1
    return 0


# metric name -> (test, how to read it from a record, unit, higher is better)
METRICS = [
    ("keepalive_req_per_s", "keepalive", lambda r: r["loadgen"]["req_per_s"], "req/s", True),
    ("keepalive_p99_ms", "keepalive", lambda r: r["loadgen"]["latency_ms"]["p99"], "ms", False),
    ("handshakes_per_s", "handshake", lambda r: r["loadgen"]["handshakes"]["per_s"], "/s", True),
    ("resumptions_per_s", "resume", lambda r: r["loadgen"]["handshakes"]["resumed_per_s"], "/s", True),
    ("resumption_rate", "resume", lambda r: r["loadgen"]["handshakes"]["resumption_rate"], "", True),
    ("idle_kib_per_conn", "idle", lambda r: r["kib_per_conn"], "KiB", False),
    ("upload_peak_rss_kib", "upload", lambda r: r["peak_rss_kib"], "KiB", False),
    ("upload_rss_growth_kib", "upload", lambda r: r["peak_rss_delta_kib"], "KiB", False),
    ("upload_mib_per_s", "upload", lambda r: r["loadgen"]["upload"]["mib_per_s"], "MiB/s", True),
]


def num(v):
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def cmd_summarize(a):
    runs = []
    with open(a.runs) as f:
        for line in f:
            if line.strip():
                runs.append(json.loads(line))
    proxies = sorted({r["proxy"] for r in runs}, key=lambda p: (p != "nginx", p))
    result = {"runs": runs, "metrics": {}, "ratios_certmapd_over_nginx": {}}
    result.update(parse_sets(a.set))
    for name, test, get, unit, _hib in METRICS:
        per = {}
        for p in proxies:
            vals = []
            for r in runs:
                if r["proxy"] != p or r["test"] != test or not r.get("loadgen"):
                    continue
                try:
                    vals.append(float(get(r)))
                except (KeyError, TypeError, ValueError):
                    pass
            if vals:
                per[p] = {"median": statistics.median(vals), "values": vals, "unit": unit}
        result["metrics"][name] = per
        if "nginx" in per and "certmapd" in per and per["nginx"]["median"]:
            result["ratios_certmapd_over_nginx"][name] = round(
                per["certmapd"]["median"] / per["nginx"]["median"], 3
            )
    errors = {}
    for r in runs:
        lg = r.get("loadgen") or {}
        if lg.get("errors"):
            errors.setdefault(r["proxy"], {}).setdefault(r["test"], 0)
            errors[r["proxy"]][r["test"]] += lg["errors"]
    result["loadgen_errors"] = errors
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
        f.write("\n")

    both = "certmapd" in proxies and "nginx" in proxies
    cols = proxies + (["certmapd/nginx"] if both else [])
    print(f"{'metric (median)':<24}" + "".join(f"{c:>16}" for c in cols) + "  better")
    for name, _test, _get, unit, hib in METRICS:
        per = result["metrics"][name]
        row = f"{name:<24}"
        for p in proxies:
            v = per.get(p, {}).get("median")
            row += f"{'-' if v is None else num(v) + (' ' + unit if unit else ''):>16}"
        if both:
            ratio = result["ratios_certmapd_over_nginx"].get(name)
            row += f"{'-' if ratio is None else format(ratio, '.3f'):>16}"
        print(row + ("  higher" if hib else "  lower"))
    if errors:
        print(f"loadgen errors: {json.dumps(errors, sort_keys=True)}")
    print(f"results: {a.out}")
    return 0


def cmd_certmapd_config(a):
    """HOOK (draft, to confirm with server/): a certmapd config equal in duties to
    bench/nginx/proxy.conf.in, against the harness's slapd (the rfc4523 dialect) seeded from
    certs-fixtures/accounts.json. Keys follow common/config.c and tests/unit/data/config/."""
    with open(a.slapd_info) as f:
        d = json.load(f)
    cfg = {
        "listen": [
            {"address": "127.0.0.1", "port": a.port, "certificate": a.cert, "key": a.key}
        ],
        "client_certificates": {
            "trusted_issuers": [a.trusted],
            "require_client_auth_eku": True,
            "revocation": {"mode": "off"},
        },
        "directory": {
            "uris": d["uris"],
            "dialect": d.get("dialect", "rfc4523"),
            "base_dn": d["base_dn"],
            "bind_dn": d.get("bind_dn"),
            "bind_password_file": d.get("bind_password_file"),
            "ca_file": d.get("ca_file"),
        },
        "mapping": {"methods": ["user_certificate"], "on_ambiguous": "deny"},
        "authorization": {"required_groups": [], "check_account_state": True},
        "upstream": {"url": f"http://127.0.0.1:{a.upstream_port}", "identity": "headers"},
        "logging": {"access_log": a.access_log, "audit_log": None},
        "server": {"threads": a.threads, "tls_session_tickets": True},
    }
    with open(a.out, "w") as f:
        json.dump(cfg, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description="helpers for bench/run-proxy-bench")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("freeport").set_defaults(fn=cmd_freeport)
    p = sub.add_parser("procs")
    p.add_argument("pid", type=int)
    p.set_defaults(fn=cmd_procs)
    for name, fn in (("rss", cmd_rss), ("hwm", cmd_hwm), ("hwm-reset", cmd_hwm_reset)):
        p = sub.add_parser(name)
        p.add_argument("pids", type=int, nargs="+")
        p.set_defaults(fn=fn)
    p = sub.add_parser("record")
    p.add_argument("--file", required=True)
    p.add_argument("--proxy", required=True)
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--set", action="append")
    p.set_defaults(fn=cmd_record)
    p = sub.add_parser("summarize")
    p.add_argument("--runs", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--set", action="append")
    p.set_defaults(fn=cmd_summarize)
    p = sub.add_parser("certmapd-config")
    for k in ("slapd-info", "out", "cert", "key", "trusted", "access-log"):
        p.add_argument("--" + k, required=True)
    for k in ("port", "upstream-port", "threads"):
        p.add_argument("--" + k, type=int, required=True)
    p.set_defaults(fn=cmd_certmapd_config)
    a = ap.parse_args()
    return a.fn(a) or 0


if __name__ == "__main__":
    sys.exit(main())
