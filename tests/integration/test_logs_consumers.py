"""certmap's logs and metrics read by the real consumers they are written for (DESIGN §8):
the IIS W3C access log by GoAccess (--log-format=W3C, JSON report), the /metrics text by the
Prometheus client library's own parser, the audit log by a JSON parser line by line.

tests/logs_driver (tests/integration/tools/logs_driver.c) writes known requests through
libcertmap's cm_accesslog / cm_auditlog / cm_metrics; the consumers must count exactly what was
written — including requests whose fields carry spaces, control bytes, forged log lines and
invalid UTF-8.

Tools: goaccess (Debian goaccess), prometheus_client (Debian python3-prometheus-client). The
parser runs in a child process of a python3 that can import it (this interpreter if it can,
else /usr/bin/python3; CERTMAP_PROMETHEUS_PYTHON overrides), as harness/samba_ad.py does for
Samba's modules.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from collections import Counter
from pathlib import Path

from certmap_test import BUILD_DIR, skip_or_fail

DRIVER = BUILD_DIR / "tests" / "logs_driver"
START = 1795341600  # 2026-11-22 10:00:00 UTC
EAS = "/Microsoft-Server-ActiveSync"
IPHONE = "Apple-iPhone9C1/1602.92"

# One row = one kind of request, written `count` times.
ENTRIES = [
    dict(count=5, status=200, substatus=0, method="POST", path=EAS,
         query="Cmd=Sync&User=alice&DeviceId=AAA&DeviceType=iPhone", user="LAB\\alice",
         client_ip="198.51.100.1", user_agent=IPHONE, time_taken_ms=31, directory_ms=3.5,
         reason="allowed", map_method="user_certificate"),
    dict(count=3, status=403, substatus=16, method="POST", path=EAS, query="Cmd=Ping",
         client_ip="198.51.100.2", user_agent="Android 13 Mail", time_taken_ms=2,
         reason="untrusted"),
    dict(count=2, status=401, substatus=3, method="OPTIONS", path=EAS, user="LAB\\bob",
         client_ip="198.51.100.3", user_agent=IPHONE, time_taken_ms=12, directory_ms=40,
         reason="not_in_group", map_method="upn"),
    # Hostile text: spaces, tab, CR/LF and a whole forged line in the path; a user name with
    # a newline; a user agent of invalid UTF-8 and control bytes.
    dict(count=4, status=403, substatus=7, method="GET",
         path=EAS + "/a b\tc\r\n2026-11-22 10:00:00 192.0.2.1 GET / - 443 LAB\\admin "
              "203.0.113.9 - - 200 0 0 1",
         query="x=1\ny=2", user="LAB\\eve\nLAB\\admin", client_ip="198.51.100.4",
         user_agent_hex="ff20c328" + "0a0d09" + "7f41", time_taken_ms=1, reason="no_certificate"),
    dict(count=1, status=503, substatus=0, method="POST", path=EAS, query="Cmd=Sync",
         user="LAB\\carol", client_ip="198.51.100.5", user_agent=IPHONE, time_taken_ms=2000,
         directory_ms=2000, reason="directory_unavailable", map_method="user_certificate"),
    dict(count=1, status=502, substatus=3, method="POST", path=EAS, query="Cmd=Sync",
         user="LAB\\carol", client_ip="198.51.100.5", user_agent=IPHONE, time_taken_ms=5),
]
TOTAL = sum(e["count"] for e in ENTRIES)
STATUS = Counter()
for _e in ENTRIES:
    STATUS[_e["status"]] += _e["count"]

SPEC_EXTRA = dict(connections=7, held=-1 + 3, cache=dict(hit=4, miss=2, coalesced=1),
                  upstream_errors=dict(upstream_unavailable=1, upstream_timeout=2),
                  reloads=dict(ok=3, failed=1))

PARSE_METRICS = r"""
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type, "help": f.documentation,
                "samples": [[s.name, s.labels, s.value] for s in f.samples]})
print(json.dumps(out))
"""

WORK = None
OUT = None  # driver results: paths and metrics text


def prometheus_python():
    env = os.environ.get("CERTMAP_PROMETHEUS_PYTHON")
    for py in [env] if env else [sys.executable, "/usr/bin/python3"]:
        if py and os.path.exists(py) and subprocess.run(
                [py, "-c", "import prometheus_client.parser"],
                capture_output=True).returncode == 0:
            return py
    return None


def setUpModule():
    global WORK, OUT
    if not DRIVER.exists():
        raise AssertionError("logs_driver not built at %s" % DRIVER)
    WORK = Path(tempfile.mkdtemp(prefix="certmap-it-logs-"))
    spec = dict(access_log=str(WORK / "access.log"), audit_log=str(WORK / "audit.log"),
                start=START, entries=ENTRIES, **SPEC_EXTRA)
    proc = subprocess.run([str(DRIVER)], input=json.dumps(spec), capture_output=True,
                          text=True, timeout=60)
    if proc.returncode != 0:
        raise AssertionError("logs_driver failed: rc=%d %s" % (proc.returncode, proc.stderr))
    OUT = dict(access=WORK / "access.log", audit=WORK / "audit.log", metrics=proc.stdout)


def tearDownModule():
    if WORK is not None:
        shutil.rmtree(WORK, ignore_errors=True)


class AccessLogShape(unittest.TestCase):
    """What every W3C consumer relies on: header block, then one 15-field line per request."""

    def test_header_and_one_line_per_request(self):
        raw = OUT["access"].read_bytes()
        lines = raw.split(b"\n")
        self.assertEqual(lines[-1], b"", "file ends with a newline")
        lines = lines[:-1]
        self.assertTrue(lines[0].startswith(b"#Software: certmap "), lines[0])
        self.assertEqual(lines[1], b"#Version: 1.0")
        self.assertRegex(lines[2].decode(), r"^#Date: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
        self.assertEqual(lines[3].decode().split(" ")[1:], [
            "date", "time", "s-ip", "cs-method", "cs-uri-stem", "cs-uri-query", "s-port",
            "cs-username", "c-ip", "cs(User-Agent)", "cs(Referer)", "sc-status",
            "sc-substatus", "sc-win32-status", "time-taken"])
        body = lines[4:]
        self.assertEqual(len(body), TOTAL)
        for i, line in enumerate(body):
            line.decode("utf-8")  # valid UTF-8 throughout
            self.assertFalse(any(b < 0x20 or b == 0x7F for b in line), line)
            f = line.split(b" ")
            self.assertEqual(len(f), 15, line)
            self.assertRegex(f[1].decode(), r"^10:00:\d\d$")
        hostile = [ln for ln in body if b"198.51.100.4" in ln]
        self.assertEqual(len(hostile), 4)
        f = hostile[0].split(b" ")
        self.assertEqual(f[4], EAS.encode() + b"/a+b%09c%0D%0A2026-11-22+10:00:00+192.0.2.1+GET+/"
                         b"+-+443+LAB\\admin+203.0.113.9+-+-+200+0+0+1")
        self.assertEqual(f[5], b"x=1%0Ay=2")
        self.assertEqual(f[7], b"LAB\\eve%0ALAB\\admin")
        self.assertEqual(f[9], b"%FF+%C3(%0A%0D%09%7FA")


class GoAccess(unittest.TestCase):
    """GoAccess 1.7 reads the log with --log-format=W3C and counts what was written."""

    @classmethod
    def setUpClass(cls):
        if shutil.which("goaccess") is None:
            skip_or_fail("goaccess not installed (Debian package goaccess)")
        cls.plain = cls.report("plain.json")
        cls.with4xx = cls.report("4xx.json", "--4xx-to-unique-count")

    @staticmethod
    def report(name, *extra):
        out = WORK / name
        argv = ["goaccess", str(OUT["access"]), "--no-global-config", "--log-format=W3C",
                "--date-format=%Y-%m-%d", "--time-format=%H:%M:%S", "-o", str(out), *extra]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise AssertionError("goaccess failed: %s %s" % (proc.stdout, proc.stderr))
        return json.loads(out.read_text())

    @staticmethod
    def panel(report, name):
        return {d["data"]: d for d in report[name]["data"]}

    def test_totals(self):
        g = self.plain["general"]
        self.assertEqual(g["total_requests"], TOTAL)
        self.assertEqual(g["valid_requests"], TOTAL)
        self.assertEqual(g["failed_requests"], 0)
        self.assertEqual(g["start_date"], "22/Nov/2026")
        self.assertEqual(g["end_date"], "22/Nov/2026")

    def test_status_codes(self):
        got = Counter()
        for group in self.plain["status_codes"]["data"]:
            for item in group["items"]:
                got[int(item["data"].split(" ", 1)[0])] += item["hits"]["count"]
        self.assertEqual(got, STATUS)
        self.assertEqual(got[403], 7)

    def test_hosts(self):
        hosts = self.panel(self.plain, "hosts")
        want = Counter()
        for e in ENTRIES:
            want[e["client_ip"]] += e["count"]
        self.assertEqual({h: d["hits"]["count"] for h, d in hosts.items()}, dict(want))

    def test_unique_visitors(self):
        # A visitor is (client IP, date, user agent). GoAccess leaves 4xx hits out of the
        # count unless --4xx-to-unique-count.
        def visitors(entries):
            return len({(e["client_ip"], e.get("user_agent", e.get("user_agent_hex")))
                        for e in entries})
        non4xx = [e for e in ENTRIES if not 400 <= e["status"] < 500]
        self.assertEqual(self.plain["general"]["unique_visitors"], visitors(non4xx))
        self.assertEqual(self.with4xx["general"]["unique_visitors"], visitors(ENTRIES))

    def test_time_taken_is_milliseconds(self):
        # GoAccess keeps time served in microseconds; time-taken is read as ms (%L).
        hosts = self.panel(self.plain, "hosts")
        self.assertEqual(hosts["198.51.100.1"]["cumts"], 5 * 31 * 1000)
        self.assertEqual(hosts["198.51.100.5"]["maxts"], 2000 * 1000)


class Prometheus(unittest.TestCase):
    """The metrics text parsed by prometheus_client's own text-format parser."""

    @classmethod
    def setUpClass(cls):
        py = prometheus_python()
        if py is None:
            skip_or_fail("python3 module prometheus_client not available "
                         "(Debian package python3-prometheus-client)")
        proc = subprocess.run([py, "-c", PARSE_METRICS], input=OUT["metrics"],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise AssertionError("prometheus_client could not parse:\n%s\n%s"
                                 % (proc.stderr, OUT["metrics"]))
        cls.fam = {f["name"]: f for f in json.loads(proc.stdout)}

    def samples(self, family, sample=None):
        f = self.fam[family]
        return {tuple(sorted(labels.items())): value for name, labels, value in f["samples"]
                if sample is None or name == sample}

    def test_families_and_types(self):
        self.assertEqual({n: f["type"] for n, f in self.fam.items()}, {
            "certmap_requests": "counter",
            "certmap_decisions": "counter",
            "certmap_cache_lookups": "counter",
            "certmap_directory_latency_seconds": "histogram",
            "certmap_upstream_errors": "counter",
            "certmap_connections_open": "gauge",
            "certmap_requests_held": "gauge",
            "certmap_config_reloads": "counter",
            "certmap_build_info": "gauge",
        })
        for f in self.fam.values():
            self.assertTrue(f["help"], f["name"])

    def test_requests_by_status(self):
        want = {}
        for e in ENTRIES:
            k = (("status", str(e["status"])), ("substatus", str(e["substatus"])))
            want[k] = want.get(k, 0) + e["count"]
        self.assertEqual(self.samples("certmap_requests", "certmap_requests_total"), want)

    def test_decisions(self):
        want = {}
        for e in ENTRIES:
            if "reason" in e:
                k = (("method", e.get("map_method", "none")), ("reason", e["reason"]))
                want[k] = want.get(k, 0) + e["count"]
        self.assertEqual(self.samples("certmap_decisions", "certmap_decisions_total"), want)

    def test_histogram(self):
        lat = [e["directory_ms"] / 1000 for e in ENTRIES if "directory_ms" in e
               for _ in range(e["count"])]
        buckets = self.samples("certmap_directory_latency_seconds",
                               "certmap_directory_latency_seconds_bucket")
        by_le = {float(dict(k)["le"]): v for k, v in buckets.items()}  # "+Inf" → inf
        les = sorted(by_le)
        self.assertEqual(les, [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                               2.5, 5, 10, float("inf")])
        prev = 0
        for le in les:
            self.assertGreaterEqual(by_le[le], prev, "cumulative")
            self.assertEqual(by_le[le], sum(1 for x in lat if x <= le), "le=%s" % le)
            prev = by_le[le]
        count = self.samples("certmap_directory_latency_seconds",
                             "certmap_directory_latency_seconds_count")[()]
        total = self.samples("certmap_directory_latency_seconds",
                             "certmap_directory_latency_seconds_sum")[()]
        self.assertEqual(count, len(lat))
        self.assertEqual(count, prev)
        self.assertAlmostEqual(total, sum(lat), places=9)

    def test_other_counters_and_gauges(self):
        self.assertEqual(self.samples("certmap_cache_lookups", "certmap_cache_lookups_total"), {
            (("result", "hit"),): 4, (("result", "miss"),): 2, (("result", "coalesced"),): 1})
        self.assertEqual(self.samples("certmap_upstream_errors", "certmap_upstream_errors_total"), {
            (("reason", "upstream_unavailable"),): 1, (("reason", "upstream_timeout"),): 2})
        self.assertEqual(self.samples("certmap_config_reloads", "certmap_config_reloads_total"), {
            (("result", "ok"),): 3, (("result", "failed"),): 1})
        self.assertEqual(self.samples("certmap_connections_open"), {(): 7})
        self.assertEqual(self.samples("certmap_requests_held"), {(): 2})
        info = self.samples("certmap_build_info")
        self.assertEqual(len(info), 1)
        (labels, value), = info.items()
        self.assertEqual(dict(labels).keys(), {"version"})
        self.assertRegex(dict(labels)["version"], r"^\d+\.\d+\.\d+")
        self.assertEqual(value, 1)


class AuditLog(unittest.TestCase):
    """One JSON object per computed decision, exactly DESIGN §8's keys."""

    def test_lines(self):
        raw = OUT["audit"].read_bytes()
        self.assertTrue(raw.endswith(b"\n"))
        raw.decode("ascii")  # JSON_ENSURE_ASCII
        lines = raw.split(b"\n")[:-1]
        decided = [e for e in ENTRIES if "reason" in e for _ in range(e["count"])]
        self.assertEqual(len(lines), len(decided))
        for line, e in zip(lines, decided):
            o = json.loads(line)
            self.assertEqual(list(o), ["time", "request_id", "client_ip", "decision", "reason",
                                       "status", "substatus", "detail", "method", "user",
                                       "cert", "directory_ms", "revocation", "trace"])
            self.assertRegex(o["time"], r"^2026-11-22T10:00:\d\d\.\d{3}Z$")
            self.assertEqual(o["client_ip"], e["client_ip"])
            self.assertEqual(o["reason"], e["reason"])
            self.assertEqual(o["decision"], "allow" if e["reason"] == "allowed" else "deny")
            self.assertEqual((o["status"], o["substatus"]), (e["status"], e["substatus"]))
            self.assertEqual(o["method"], e.get("map_method"))
            self.assertEqual(o["directory_ms"], e.get("directory_ms", 0))


if __name__ == "__main__":
    unittest.main()
