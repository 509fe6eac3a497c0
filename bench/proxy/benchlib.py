#!/usr/bin/env python3
"""benchlib.py -- small helpers for bench/run-proxy-bench (standard library only).

  freeport                      a free TCP port on 127.0.0.1
  procs PID                     the processes to measure: PID's children (nginx workers), else PID
  rss PID...                    sum of VmRSS, KiB
  hwm-reset PID...              reset the peak-RSS counters (echo 5 > /proc/PID/clear_refs)
  hwm PID...                    sum of VmHWM (peak RSS since the reset), KiB
  cpu PID...                    sum of CPU time (user + system), seconds
  record --file F --proxy P --round N --test T [--set K=V]...
                                stdin = certmap-loadgen output; appends one JSON line to F
  summarize --runs F --out OUT [--set K=V]...
                                medians per proxy and test, ratios certmapd/nginx, a table
  certmapd-config ...           HOOK: writes a certmapd config equivalent to bench/nginx/proxy.conf.in
  storm-certs --pki P --count N --cache C
                                N distinct user certificates (mkcerts.py), cached in
                                C/storm-<hash of the issuing CA and mkcerts.py>/<N>; prints the dir
  storm-accounts --slapd-info F --cert-dir D [--config F]
                                one account per certificate in D (one ldapadd; direct member of
                                the config's required groups, if any); needs the harness on
                                PYTHONPATH
  slapd-srch LOGFILE [--since-byte N]
                                searches slapd logged (loglevel 256 "SRCH base=" lines) from byte
                                N on, as JSON: srch (all), srch_cert (filter on userCertificate),
                                etime_ms p50/p99/max/sum of their results, bytes (the log's size)
  metrics URL                   certmapd's /metrics: decisions and cache lookups, as JSON
  access-times LOG --since-byte N
                                certmapd access log lines from byte N on: count, time-taken
                                (request head -> response sent) p50/p90/p99/max ms, bytes
"""
import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request


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


def cmd_cpu(a):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in a.pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    print(round(total / tick, 2))


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
    ("storm_all_answered_s", "storm", lambda r: r["loadgen"]["storm"]["all_answered_ms"] / 1e3,
     "s", False),
    ("storm_handshakes_per_s", "storm", lambda r: r["loadgen"]["handshakes"]["per_s"], "/s", True),
    ("storm_status_200", "storm", lambda r: r["loadgen"]["status"].get("200", 0), "", True),
    ("storm_decisions", "storm", lambda r: r["directory"]["decisions"], "", False),
    ("storm_slapd_searches", "storm", lambda r: r["directory"]["slapd_srch_cert"], "", False),
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
    for r in runs:
        if r["test"] != "storm" or not r.get("loadgen"):
            continue
        lg = r["loadgen"]
        line = (f"storm round {r['round']} {r['proxy']}: {lg['connections']} connections, "
                f"{lg['identities']} identities: status {json.dumps(lg['status'], sort_keys=True)}"
                f", errors {lg['errors']}, all answered in {lg['storm']['all_answered_ms'] / 1e3:.2f} s"
                f", {lg['handshakes']['per_s']:.0f} handshakes/s, CPU s: proxy {r.get('proxy_cpu_s')}"
                + (f" slapd {r['slapd_cpu_s']}" if "slapd_cpu_s" in r else ""))
        d = r.get("directory")
        if d:
            line += (f"; decisions {d['decisions']} {json.dumps(d['decisions_by_reason'], sort_keys=True)}"
                     f", cache miss {d['cache_miss']} coalesced {d['cache_coalesced']}"
                     f" hit {d['cache_hit']}, slapd SRCH {d['slapd_srch']}"
                     f" (userCertificate {d['slapd_srch_cert']}, etime ms"
                     f" {json.dumps(d.get('slapd_etime_ms'), sort_keys=True)})"
                     f", certmapd directory time {d.get('directory_latency_sum_s')} s"
                     f", time-taken ms {json.dumps(r.get('time_taken_ms'), sort_keys=True)}")
        print(line)
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
    if a.admin_port:
        cfg["admin"] = {"address": "127.0.0.1", "port": a.admin_port}
    with open(a.out, "w") as f:
        json.dump(cfg, f, indent=1)
        f.write("\n")


def cmd_storm_certs(a):
    """Generation takes ~1.5 s for 2,000 (EC P-256, python3-cryptography); the cache makes reruns
    instant. Keyed by the issuing CA (certificate + key) and mkcerts.py, so new fixtures or a
    changed generator give a new set."""
    here = os.path.dirname(os.path.abspath(__file__))
    mk = os.path.join(here, "mkcerts.py")
    ca_cert = os.path.join(a.pki, "issuing-ca.pem")
    ca_key = os.path.join(a.pki, "issuing-ca.key")
    h = hashlib.sha256()
    for p in (ca_cert, ca_key, mk):
        with open(p, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    base = os.path.join(a.cache, "storm-" + h.hexdigest()[:16])
    out = os.path.join(base, str(a.count))
    if os.path.exists(os.path.join(out, ".complete")):
        print(out)
        return 0
    os.makedirs(base, exist_ok=True)
    tmp = f"{out}.tmp.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, mk, "--ca-cert", ca_cert, "--ca-key", ca_key, "--out", tmp,
                        "--count", str(a.count), "--prefix", "storm-"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"benchlib: mkcerts.py failed: {r.stderr.strip()}", file=sys.stderr)
        return 1
    open(os.path.join(tmp, ".complete"), "w").close()
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    print(f"benchlib: {a.count} certificates generated in {time.monotonic() - t0:.1f} s: {out}",
          file=sys.stderr)
    print(out)
    return 0


def cmd_storm_accounts(a):
    """One inetOrgPerson per NAME.pem in the directory (uid = NAME, userCertificate;binary = the
    certificate), in one ldapadd (harness Slapd.add_users), then direct membership in the
    required groups of the certmapd config, if it names any."""
    from harness import Slapd  # tests/integration on PYTHONPATH

    with open(a.slapd_info) as f:
        info = json.load(f)
    names = sorted(n[:-4] for n in os.listdir(a.cert_dir) if n.endswith(".pem"))
    d = Slapd(workdir=info["workdir"], port=info["port"], ldaps_port=info["ldaps_port"])
    groups = []
    if a.config:
        with open(a.config) as f:
            groups = (json.load(f).get("authorization") or {}).get("required_groups") or []
    t0 = time.monotonic()
    certs = {n: [os.path.join(a.cert_dir, n + ".pem")] for n in names}
    first = None
    suffix = ",ou=groups," + d.base_dn
    # add_users takes a group name under ou=groups (created when missing)
    for g in groups:
        if g.lower().startswith("cn=") and g.lower().endswith(suffix.lower()):
            first = g[3:len(g) - len(suffix)]
            break
    dns = d.add_users(names, group=first, certs=certs)
    for g in groups:
        if first is not None and g.lower() == d.group_dn(first).lower():
            continue
        text = "dn: %s\nchangetype: modify\nadd: member\n" % g
        text += "".join("member: %s\n" % dn for dn in dns) + "-\n"
        d.ldapmodify(text, ok_codes=(0, 20))
    print(f"benchlib: {len(names)} storm accounts added in {time.monotonic() - t0:.1f} s"
          + (f" (member of {', '.join(groups)})" if groups else ""), file=sys.stderr)
    return 0


def cmd_slapd_srch(a):
    srch = cert = 0
    etimes = []
    with open(a.log, "rb") as f:
        f.seek(a.since_byte)
        data = f.read()
    end = data.rfind(b"\n") + 1  # whole lines only
    for line in data[:end].splitlines():
        if b" SRCH base=" in line:
            srch += 1
            if b'filter="(usercertificate' in line.lower():
                cert += 1
        elif b" SEARCH RESULT " in line and b" etime=" in line:
            try:
                etimes.append(float(line.split(b" etime=", 1)[1].split()[0]) * 1e3)
            except (ValueError, IndexError):
                pass
    etimes.sort()
    pct = (lambda q: round(etimes[min(len(etimes) - 1, int(len(etimes) * q))], 3)) if etimes else (
        lambda q: None)
    print(json.dumps({"srch": srch, "srch_cert": cert, "bytes": a.since_byte + end,
                      "etime_ms": {"p50": pct(0.5), "p99": pct(0.99),
                                   "max": round(etimes[-1], 3) if etimes else None,
                                   "sum": round(sum(etimes), 1)}}))


def cmd_access_times(a):
    with open(a.log, "rb") as f:
        f.seek(a.since_byte)
        data = f.read()
    end = data.rfind(b"\n") + 1
    ms = []
    for line in data[:end].splitlines():
        try:
            ms.append(int(line.rsplit(None, 1)[1]))  # W3C: time-taken (ms) is the last field
        except (IndexError, ValueError):
            pass
    ms.sort()
    pct = (lambda q: ms[min(len(ms) - 1, int(len(ms) * q))]) if ms else (lambda q: None)
    print(json.dumps({"count": len(ms), "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99),
                      "max": ms[-1] if ms else None, "bytes": a.since_byte + end}))


def cmd_metrics(a):
    with urllib.request.urlopen(a.url, timeout=5) as resp:
        text = resp.read().decode()
    out = {"decisions": 0, "decisions_by_reason": {}, "cache_hit": 0, "cache_miss": 0,
           "cache_coalesced": 0, "directory_lookups": 0}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            v = int(float(value))
        except ValueError:
            continue
        if name.startswith("certmap_decisions_total{"):
            reason = name.split('reason="', 1)[1].split('"', 1)[0]
            out["decisions"] += v
            out["decisions_by_reason"][reason] = out["decisions_by_reason"].get(reason, 0) + v
        elif name.startswith("certmap_cache_lookups_total{"):
            res = name.split('result="', 1)[1].split('"', 1)[0]
            out["cache_" + res] = v
        elif name == "certmap_directory_latency_seconds_count":
            out["directory_lookups"] = v
        elif name == "certmap_directory_latency_seconds_sum":
            out["directory_latency_sum_s"] = round(float(value), 3)
    print(json.dumps(out, sort_keys=True))


def main():
    ap = argparse.ArgumentParser(description="helpers for bench/run-proxy-bench")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("freeport").set_defaults(fn=cmd_freeport)
    p = sub.add_parser("procs")
    p.add_argument("pid", type=int)
    p.set_defaults(fn=cmd_procs)
    for name, fn in (("rss", cmd_rss), ("hwm", cmd_hwm), ("hwm-reset", cmd_hwm_reset),
                     ("cpu", cmd_cpu)):
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
    p.add_argument("--admin-port", type=int, default=0)
    p.set_defaults(fn=cmd_certmapd_config)
    p = sub.add_parser("storm-certs")
    p.add_argument("--pki", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--cache", required=True)
    p.set_defaults(fn=cmd_storm_certs)
    p = sub.add_parser("storm-accounts")
    p.add_argument("--slapd-info", required=True)
    p.add_argument("--cert-dir", required=True)
    p.add_argument("--config")
    p.set_defaults(fn=cmd_storm_accounts)
    p = sub.add_parser("slapd-srch")
    p.add_argument("log")
    p.add_argument("--since-byte", type=int, default=0)
    p.set_defaults(fn=cmd_slapd_srch)
    p = sub.add_parser("access-times")
    p.add_argument("log")
    p.add_argument("--since-byte", type=int, default=0)
    p.set_defaults(fn=cmd_access_times)
    p = sub.add_parser("metrics")
    p.add_argument("url")
    p.set_defaults(fn=cmd_metrics)
    a = ap.parse_args()
    return a.fn(a) or 0


if __name__ == "__main__":
    sys.exit(main())
