"""Revocation end to end (DESIGN §6, include/certmap/revocation.h) with real servers that this
module starts inside netns-run's namespace:

- a PKI made at test time (revocation_pki.py) whose CDP/AIA URLs point at those servers;
- nginx serving CRLs (current, stale, base + delta, forged, corrupt) and garbage at an OCSP
  path; `openssl ocsp` responders (delegated signer; a signer from an unrelated CA); closed and
  silent ports; Samba AD publishing a CRL and a delta CRL on a cRLDistributionPoint object in
  the configuration partition (ldap:/// and ldap://host/ CDP URLs); slapd (dialect rfc4523)
  publishing another CA's CRL and delta CRL as certificateRevocationList;binary and
  deltaRevocationList;binary (ldap:/// CDP URLs without ";binary": certmap appends it);
- one AD account per test certificate (member of ActiveSync Users, the cert in
  userCertificate), so every decision that is not a revocation denial is `allowed`; the
  Rev LDAP CA's leaves also have slapd accounts (userCertificate;binary, same group).

`certmapctl check --json --trace` decides the matrix (stateless); certmapd shows the same
decisions over TLS (403.13 page, access and audit lines), reloads a CRL file replaced under
it (dropping cached decisions), logs refused data and exports the revocation metrics.
The Infrastructure class checks the servers and accounts themselves (with `openssl ocsp`,
`openssl crl`, ldapsearch and revocation "off"), independent of certmap's revocation code.
"""

import datetime
import hashlib
import os
import re
import signal
import subprocess
import time
import unittest
import urllib.parse

import revocation_pki as rp
from certmap_test import Workdir, base_config, run_check, skip_or_fail
from certmapd_harness import (CERTMAPD, EAS, IIS_TEXT, Certmapd, LabUpstream, tag, wait_for)
from harness import SambaAD, Slapd, ldif_attr

AD = None
LDAP = None
UP = None
WORK = None
REV = None
SERVERS = []
INSTANCES = []
NGINX = None

ALLOW, DENY = 0, 1
AD_GROUP = "ActiveSync Users"
CDP_CONTAINER = "CN=CDP,CN=Public Key Services,CN=Services,CN=Configuration,DC=lab,DC=test"

STATUS = {"allowed": (200, 0), "revoked": (403, 13), "revocation_unknown": (403, 13)}


def setUpModule():
    global AD, LDAP, UP, WORK, REV, NGINX
    if os.geteuid() != 0:
        skip_or_fail("Samba AD needs root and a private network namespace (run under netns-run)")
    missing = rp.have_tools()
    if missing:
        skip_or_fail("not installed: %s" % ", ".join(missing))
    WORK = Workdir("certmap-it-revocation-")
    try:
        REV = rp.RevocationPKI(WORK.path / "pki")
        NGINX = rp.Nginx(WORK.path / "nginx", REV.www).start()
        SERVERS.append(NGINX)
        SERVERS.append(rp.OcspResponder(
            REV, rp.OCSP_PORT, REV.cas["ocsp-responder"].pem, REV.cas["ocsp-responder"].key_path,
            REV.cas["ocsp"].pem, WORK.path).start())
        SERVERS.append(rp.OcspResponder(
            REV, rp.OCSP_WRONG_PORT, REV.cas["wrong-responder"].pem,
            REV.cas["wrong-responder"].key_path, REV.cas["ocsp"].pem, WORK.path).start())
        SERVERS.append(rp.SilentListener())
        AD = SambaAD(str(WORK.path / "ad"))
        AD.start()
        AD.seed()
        AD.add_users(sorted(rp.LEAVES), group=AD_GROUP,
                     certs={n: [REV.leaf(n).der] for n in rp.LEAVES})
        publish_ad_cdp()
        LDAP = Slapd(str(WORK.path / "slapd"))
        LDAP.start()
        LDAP.seed()
        LDAP.add_users(rp.SLAPD_LEAVES, group=AD_GROUP,
                       certs={n: [REV.leaf(n).der] for n in rp.SLAPD_LEAVES})
        publish_slapd_cdp()
        UP = LabUpstream(WORK.path / "upstream").start()
    except BaseException:
        tearDownModule()
        raise


def tearDownModule():
    for d in INSTANCES:
        try:
            d.stop(sig=signal.SIGKILL if d.alive() else signal.SIGTERM, timeout=10)
        except Exception:
            pass
    for s in SERVERS:
        try:
            s.stop()
        except Exception:
            pass
    if UP is not None:
        UP.stop()
    if AD is not None:
        AD.stop()
    if LDAP is not None:
        LDAP.stop()
    if WORK is not None and not os.environ.get("CERTMAP_KEEP_SCRATCH"):
        WORK.remove()


def publish_ad_cdp():
    """The Rev Issuing CA's CRL and delta CRL on CN=Rev Issuing CA,CN=CDP,... as AD CS
    publishes them (objectClass cRLDistributionPoint)."""
    if not AD.search("(objectClass=*)", ["cn"], base=CDP_CONTAINER, scope="base", bind="admin"):
        raise AssertionError("%s missing in the provisioned domain" % CDP_CONTAINER)
    ldif = ("dn: %s\nchangetype: add\nobjectClass: cRLDistributionPoint\n%s%s"
            % (rp.AD_CDP_DN, ldif_attr("certificateRevocationList", REV.ldap_crl),
               ldif_attr("deltaRevocationList", REV.ldap_delta)))
    AD.ldapmodify(ldif)


def publish_slapd_cdp():
    """The Rev LDAP CA's CRL and delta CRL on cn=Rev LDAP CA,ou=CDP,dc=lab,dc=test
    (objectClass cRLDistributionPoint from core.schema; slapd stores and returns these
    attributes only with ;binary)."""
    ldif = ("dn: %s\nchangetype: add\nobjectClass: top\nobjectClass: organizationalUnit\n"
            "ou: CDP\n\n" % rp.SLAPD_CDP_CONTAINER)
    ldif += ("dn: %s\nchangetype: add\nobjectClass: top\nobjectClass: cRLDistributionPoint\n"
             "cn: Rev LDAP CA\n%s%s"
             % (rp.SLAPD_CDP_DN, ldif_attr("certificateRevocationList;binary", REV.slapd_crl),
                ldif_attr("deltaRevocationList;binary", REV.slapd_delta)))
    LDAP.ldapmodify(ldif)


def rev_config(mode, fetch_cdp=False, ocsp=False, ocsp_responder=None, crl_files=(),
               timeout_ms=2000):
    return {"client_certificates": {
        "trusted_issuers": [str(REV.anchor)],
        "revocation": {"mode": mode, "crl_files": [str(f) for f in crl_files],
                       "fetch_cdp": fetch_cdp, "ocsp": ocsp, "ocsp_responder": ocsp_responder,
                       "timeout_ms": timeout_ms}}}


def rev_lines(trace):
    return [ln for ln in trace if ln.startswith("revocation:")]


def sha256(leaf):
    return hashlib.sha256(leaf.der).hexdigest()


# ------------------------------------------------------------------------------------------
# 0. The servers and accounts themselves (independent of certmap's revocation code)


class Infrastructure(unittest.TestCase):

    def test_ocsp_responders_answer_as_designed(self):
        for leaf, url, want in (("rv-ocsp-good", rp.OCSP_URL, "good"),
                                ("rv-ocsp-revoked", rp.OCSP_URL, "revoked"),
                                ("rv-ocsp-unknown", rp.OCSP_URL, "unknown"),
                                ("rv-ocsp-noaia", rp.OCSP_URL, "revoked")):
            with self.subTest(leaf=leaf):
                rc, out = rp.ocsp_query(REV, leaf, url)
                self.assertEqual(rc, 0, out)
                self.assertIn("%s.pem: %s" % (leaf, want), out)
                self.assertIn("Response verify OK", out)
        # the wrong signer says "good" but its signature does not chain to our anchor
        rc, out = rp.ocsp_query(REV, "rv-ocsp-wrongsig", rp.OCSP_WRONG_URL)
        self.assertIn("rv-ocsp-wrongsig.pem: good", out)
        self.assertIn("Response Verify Failure", out)
        rc, out = rp.ocsp_query(REV, "rv-ocsp-garbage", rp.OCSP_GARBAGE_URL)
        self.assertNotEqual(rc, 0, out)

    def test_crls_served_and_signed(self):
        import urllib.request
        checks = [(rp.ROOT_CRL_URL, "root", True), (rp.ISSUING_CRL_URL, "issuing", True),
                  (rp.STALE_CRL_URL, "issuing", True), (rp.BASE_CRL_URL, "issuing", True),
                  (rp.DELTA_CRL_URL, "issuing", True), (rp.SUB_CRL_URL, "sub", True),
                  (rp.FORGED_CRL_URL, "issuing", False)]
        for url, ca, valid in checks:
            with self.subTest(url=url):
                data = urllib.request.urlopen(url, timeout=5).read()
                r = subprocess.run(["openssl", "crl", "-inform", "DER", "-noout", "-CAfile",
                                    str(REV.cas[ca].pem)], input=data, capture_output=True)
                out = (r.stdout + r.stderr).decode()
                if valid:
                    self.assertIn("verify OK", out)
                else:
                    self.assertNotIn("verify OK", out)
        data = urllib.request.urlopen(rp.CORRUPT_CRL_URL, timeout=5).read()
        r = subprocess.run(["openssl", "crl", "-inform", "DER", "-noout"], input=data,
                           capture_output=True)
        self.assertNotEqual(r.returncode, 0)

    def test_ad_cdp_object_readable_by_service_account(self):
        entries = AD.search("(objectClass=cRLDistributionPoint)",
                            ["certificateRevocationList", "deltaRevocationList"],
                            base=rp.AD_CDP_DN, scope="base", bind="service")
        self.assertEqual(len(entries), 1, entries)
        attrs = {k.lower(): v for k, v in entries[0][1].items()}
        self.assertEqual(attrs["certificaterevocationlist"], [REV.ldap_crl])
        self.assertEqual(attrs["deltarevocationlist"], [REV.ldap_delta])

    def test_slapd_cdp_object_readable_by_service_account(self):
        entries = LDAP.search("(objectClass=cRLDistributionPoint)",
                              ["certificateRevocationList;binary",
                               "deltaRevocationList;binary"],
                              base=rp.SLAPD_CDP_DN, scope="base", bind="service")
        self.assertEqual(len(entries), 1, entries)
        attrs = {k.lower(): v for k, v in entries[0][1].items()}
        self.assertEqual(attrs["certificaterevocationlist;binary"], [REV.slapd_crl])
        self.assertEqual(attrs["deltarevocationlist;binary"], [REV.slapd_delta])
        for data in (REV.slapd_crl, REV.slapd_delta):
            r = subprocess.run(["openssl", "crl", "-inform", "DER", "-noout", "-CAfile",
                                str(REV.cas["ldapca"].pem)], input=data, capture_output=True)
            self.assertIn("verify OK", (r.stdout + r.stderr).decode())
        self.assertEqual(LDAP.search("(objectClass=*)", ["1.1"], base=rp.SLAPD_CDP_CONTAINER,
                                     scope="one", bind="service"),
                         [(rp.SLAPD_CDP_DN, {})], "only the Rev LDAP CA's CDP object exists")

    def test_slapd_leaves_map_with_revocation_off(self):
        cfg = WORK.write_config(base_config(LDAP, **rev_config("off")))
        for name in rp.SLAPD_LEAVES:
            with self.subTest(leaf=name):
                leaf = REV.leaf(name)
                res = run_check(cfg, str(leaf.pem), chain=str(leaf.chain))
                self.assertIsNotNone(res.json, repr(res))
                self.assertEqual(res.json["reason"], "allowed", res.json)
                self.assertEqual(res.json["user"]["name"], name)

    def test_every_leaf_maps_with_revocation_off(self):
        """With revocation off every test certificate is `allowed` as its own account: the
        decisions below differ only by revocation."""
        cfg = WORK.write_config(base_config(AD, **rev_config("off")))
        for name in sorted(rp.LEAVES):
            with self.subTest(leaf=name):
                leaf = REV.leaf(name)
                res = run_check(cfg, str(leaf.pem), chain=str(leaf.chain))
                self.assertIsNotNone(res.json, repr(res))
                self.assertEqual(res.json["reason"], "allowed", res.json)
                self.assertEqual(res.json["user"]["name"], name)


# ------------------------------------------------------------------------------------------
# 1. The matrix through `certmapctl check --json --trace`

H, S = "hard", "soft"
CDP_OCSP = {"fetch_cdp": True, "ocsp": True}
CDP = {"fetch_cdp": True}


# (test name, leaf, mode, config, reason, revocation.status, source substrings,
#  [substrings that one "revocation:" trace line must hold all of, ...],
#  [substrings no "revocation:" trace line may hold], max seconds)
def row(name, leaf, mode, cfg, reason, status, source=(), lines=(), never=(), max_s=None):
    return (name, leaf, mode, cfg, reason, status, tuple(source), list(lines), list(never), max_s)


MATRIX = [
    # --- OCSP (Rev OCSP CA: leaves with AIA, no CDP; the CA itself has root.crl as CDP)
    row("ocsp_good_hard", "rv-ocsp-good", H, CDP_OCSP, "allowed", "good",
        [], [("OCSP", "127.0.0.1:8092", "good"),
                                     ("CDP", "/crl/root.crl", "not listed")]),
    row("ocsp_revoked_soft", "rv-ocsp-revoked", S, {"ocsp": True}, "revoked", "revoked",
        ["OCSP", "127.0.0.1:8092"], [("OCSP", "127.0.0.1:8092", "revoked")]),
    row("ocsp_revoked_hard", "rv-ocsp-revoked", H, CDP_OCSP, "revoked", "revoked",
        ["OCSP", "127.0.0.1:8092"], [("OCSP", "127.0.0.1:8092", "revoked")]),
    row("ocsp_unknown_hard", "rv-ocsp-unknown", H, CDP_OCSP, "revocation_unknown", "unknown",
        [], [("OCSP", "127.0.0.1:8092", "unknown")]),
    row("ocsp_unknown_soft", "rv-ocsp-unknown", S, CDP_OCSP, "allowed", "unknown",
        [], [("OCSP", "127.0.0.1:8092", "unknown")]),
    row("ocsp_down_hard", "rv-ocsp-down", H, CDP_OCSP, "revocation_unknown", "unknown",
        [], [("OCSP", "127.0.0.1:8094", "fetch failed")], max_s=15),
    row("ocsp_down_soft", "rv-ocsp-down", S, CDP_OCSP, "allowed", "unknown",
        [], [("OCSP", "127.0.0.1:8094", "fetch failed")], max_s=15),
    row("ocsp_wrong_signer_refused_hard", "rv-ocsp-wrongsig", H, CDP_OCSP,
        "revocation_unknown", "unknown", [], [("OCSP", "127.0.0.1:8093", "refused")],
        never=[("OCSP", "good")]),
    row("ocsp_wrong_signer_refused_soft", "rv-ocsp-wrongsig", S, CDP_OCSP, "allowed", "unknown",
        [], [("OCSP", "127.0.0.1:8093", "refused")], never=[("OCSP", "good")]),
    row("ocsp_garbage_refused_hard", "rv-ocsp-garbage", H, CDP_OCSP, "revocation_unknown",
        "unknown", [], [("OCSP", "/ocsp-garbage", "refused")], never=[("OCSP", "good")]),
    row("ocsp_garbage_refused_soft", "rv-ocsp-garbage", S, CDP_OCSP, "allowed", "unknown",
        [], [("OCSP", "/ocsp-garbage", "refused")], never=[("OCSP", "good")]),
    row("ocsp_responder_used_without_aia", "rv-ocsp-noaia", S,
        {"ocsp": True, "ocsp_responder": rp.OCSP_URL}, "revoked", "revoked",
        ["OCSP", "127.0.0.1:8092"], [("OCSP", "127.0.0.1:8092", "revoked")]),
    row("ocsp_no_aia_no_responder_hard", "rv-ocsp-noaia", H, CDP_OCSP, "revocation_unknown",
        "unknown", [], [], never=[("OCSP", "8092")]),
    row("ocsp_responder_not_used_when_aia_present", "rv-ocsp-good", H,
        dict(CDP_OCSP, ocsp_responder=rp.OCSP_DOWN_URL), "allowed", "good",
        [], [("depth 0", "OCSP", "127.0.0.1:8092", "good")],
        never=[("depth 0", "OCSP", "8094")]),
    row("ocsp_disabled_not_consulted", "rv-ocsp-revoked", S, {"ocsp": False}, "allowed", None,
        [], [], never=[("OCSP",)]),
    row("mode_off_consults_nothing", "rv-ocsp-revoked", "off", CDP_OCSP, "allowed", "off",
        [], [], never=[("OCSP",), ("CDP",)]),
    # hard: the intermediate (Rev OCSP CA) needs an answer too, from root.crl
    row("hard_needs_answer_for_intermediate", "rv-ocsp-good", H, {"ocsp": True},
        "revocation_unknown", "unknown", [], [("OCSP", "127.0.0.1:8092", "good")]),
    row("hard_intermediate_from_crl_file", "rv-ocsp-good", H,
        {"ocsp": True, "crl_files": ["ROOT_CRL_FILE"]}, "allowed", "good", [],
        [("OCSP", "127.0.0.1:8092", "good"), ("CRL file", "root.crl.pem", "not listed")]),
    # --- CDP over HTTP (Rev Issuing CA: leaves with CDP, no AIA)
    row("cdp_good_hard", "rv-crl-good", H, CDP, "allowed", "good", [],
        [("CDP", "/crl/rev-issuing.crl", "not listed"), ("CDP", "/crl/root.crl")]),
    row("cdp_revoked_soft", "rv-crl-revoked", S, CDP, "revoked", "revoked",
        ["CDP", "/crl/rev-issuing.crl"], [("CDP", "/crl/rev-issuing.crl", "revoked")]),
    row("cdp_not_fetched_when_disabled", "rv-crl-revoked", S, {"ocsp": True}, "allowed", None,
        [], [], never=[("CDP",)]),
    row("cdp_second_url_of_point", "rv-crl-second-url", S, CDP, "revoked", "revoked",
        ["/crl/rev-issuing.crl"], [("CDP", "127.0.0.1:8095", "fetch failed"),
                                   ("CDP", "/crl/rev-issuing.crl", "revoked")]),
    row("cdp_stale_hard", "rv-crl-stale", H, CDP, "revocation_unknown", "unknown", [],
        [("CDP", "/crl/stale.crl")]),
    row("cdp_stale_soft", "rv-crl-stale", S, CDP, "allowed", "unknown", [],
        [("CDP", "/crl/stale.crl")]),
    row("cdp_stale_but_listed_is_revoked_hard", "rv-crl-stale-rev", H, CDP, "revoked",
        "revoked", ["/crl/stale.crl"], [("CDP", "/crl/stale.crl", "revoked")]),
    row("cdp_stale_but_listed_is_revoked_soft", "rv-crl-stale-rev", S, CDP, "revoked",
        "revoked", ["/crl/stale.crl"], [("CDP", "/crl/stale.crl", "revoked")]),
    row("cdp_unreachable_hard", "rv-crl-unreach", H, CDP, "revocation_unknown", "unknown", [],
        [("CDP", "127.0.0.1:8095", "fetch failed")], max_s=15),
    row("cdp_unreachable_soft", "rv-crl-unreach", S, CDP, "allowed", "unknown", [],
        [("CDP", "127.0.0.1:8095", "fetch failed")], max_s=15),
    row("cdp_silent_bounded_by_timeout_hard", "rv-crl-silent", H, dict(CDP, timeout_ms=1000),
        "revocation_unknown", "unknown", [], [("CDP", "127.0.0.1:8096", "fetch failed")],
        max_s=8),
    row("cdp_corrupt_refused_hard", "rv-broken", H, CDP, "revocation_unknown", "unknown", [],
        [("CDP", "/crl/corrupt.crl", "refused")], never=[("corrupt.crl", "not listed")]),
    row("cdp_corrupt_refused_soft", "rv-broken", S, CDP, "allowed", "unknown", [],
        [("CDP", "/crl/corrupt.crl", "refused")], never=[("corrupt.crl", "not listed")]),
    row("cdp_forged_signature_refused_hard", "rv-crl-forged", H, CDP, "revocation_unknown",
        "unknown", [], [("/crl/forged.crl", "refused")],
        never=[("forged.crl", "not listed")]),
    # --- delta CRLs (Freshest CRL in the cert and in the base CRL)
    row("delta_only_listing_is_revoked_soft", "rv-crl-delta", S, CDP, "revoked", "revoked",
        ["delta.crl"], [("delta", "/crl/delta.crl", "revoked")]),
    row("delta_only_listing_is_revoked_hard", "rv-crl-delta", H, CDP, "revoked", "revoked",
        ["delta.crl"], [("delta", "/crl/delta.crl", "revoked")]),
    row("delta_base_and_delta_clean_hard", "rv-crl-delta-ok", H, CDP, "allowed", "good", [],
        [("/crl/base.crl", "not listed"), ("delta", "/crl/delta.crl", "not listed")]),
    row("delta_named_but_unreachable_hard", "rv-crl-delta-down", H, CDP,
        "revocation_unknown", "unknown", [], [("/crl/base-nofresh.crl", "not listed"),
                                              ("delta", "127.0.0.1:8095", "fetch failed")]),
    row("delta_named_but_unreachable_soft", "rv-crl-delta-down", S, CDP, "allowed", "unknown",
        [], [("delta", "127.0.0.1:8095", "fetch failed")]),
    # --- revoked intermediate: root.crl lists Rev Revoked Sub CA
    row("revoked_intermediate_denies_leaf_a", "rv-sub-a", S, CDP, "revoked", "revoked",
        ["/crl/root.crl"], [("depth 1", "/crl/root.crl", "revoked")]),
    row("revoked_intermediate_denies_leaf_b_hard", "rv-sub-b", H, CDP, "revoked", "revoked",
        ["/crl/root.crl"], [("depth 1", "/crl/root.crl", "revoked")]),
    # --- crl_files (Rev File CA: nothing in the certs)
    row("crl_file_revoked_soft", "rv-file-b", S, {"crl_files": ["FILE_CRL_B"]}, "revoked",
        "revoked", ["CRL file", "file-b.crl.pem"], [("CRL file", "file-b.crl.pem", "revoked")]),
    row("crl_file_good_hard", "rv-file-a", H, {"crl_files": ["FILE_CRL_B", "ROOT_CRL_FILE"]},
        "allowed", "good", [], [("CRL file", "file-b.crl.pem", "not listed"),
                                ("CRL file", "root.crl.pem", "not listed")]),
    row("crl_file_missing_intermediate_answer_hard", "rv-file-a", H,
        {"crl_files": ["FILE_CRL_B"]}, "revocation_unknown", "unknown", [], []),
    # --- CDP over LDAP from Samba AD (host-less ldap:/// through the directory connection)
    row("ldap_cdp_good_hard", "rv-ldap-good", H, CDP, "allowed", "good", [],
        [("CDP", "ldap://", "not listed")]),
    row("ldap_cdp_revoked_soft", "rv-ldap-revoked", S, CDP, "revoked", "revoked",
        ["CDP", "ldap://"], [("CDP", "ldap://", "revoked")]),
    row("ldap_delta_only_listing_is_revoked", "rv-ldap-delta", H, CDP, "revoked", "revoked",
        [], [("delta", "ldap://", "revoked")]),
    row("ldap_host_cdp_revoked", "rv-ldaphost-rev", S, CDP, "revoked", "revoked",
        ["ldap://127.0.0.1/"], [("CDP", "ldap://127.0.0.1/", "revoked")]),
]

PLACEHOLDERS = {
    "ROOT_CRL_FILE": lambda: REV.root_crl_file,
    "FILE_CRL_B": lambda: _file(WORK.path / "file-b.crl.pem", REV.file_crl_b),
}


def _file(path, data):
    if not path.exists():
        path.write_bytes(data)
    return path


class RowCheck:
    """check_row() for matrix rows, against the directory of the test class."""
    maxDiff = None

    def directory(self):
        return AD

    def check_row(self, r):
        name, leaf_name, mode, cfg, reason, status, source, lines, never, max_s = r
        cfg = dict(cfg)
        if "crl_files" in cfg:
            cfg["crl_files"] = [PLACEHOLDERS[f]() for f in cfg["crl_files"]]
        leaf = REV.leaf(leaf_name)
        config = WORK.write_config(base_config(self.directory(), **rev_config(mode, **cfg)),
                                   name="matrix-%s.json" % name)
        res = run_check(config, str(leaf.pem), chain=str(leaf.chain), extra=["--trace"])
        self.assertIsNotNone(res.json, repr(res))
        j = res.json
        ctx = "%s: %s" % (name, "\n".join(j.get("trace") or []))
        self.assertEqual(j["reason"], reason, ctx)
        self.assertEqual((j["status"], j["substatus"]), STATUS[reason], ctx)
        self.assertEqual(res.rc, ALLOW if reason == "allowed" else DENY, ctx)
        if reason == "allowed":
            self.assertEqual(j["user"]["name"], leaf_name, ctx)
        self.assertIsInstance(j.get("revocation"), dict, "no revocation object: %s" % ctx)
        if status is not None:
            self.assertEqual(j["revocation"]["status"], status, ctx)
        for s in source:
            self.assertIn(s, j["revocation"].get("source") or "", ctx)
        rl = rev_lines(j["trace"])
        for want in lines:
            self.assertTrue(any(all(w in ln for w in want) for ln in rl),
                            "%s: no revocation trace line holds %s" % (ctx, want))
        for bad in never:
            hit = [ln for ln in rl if all(b in ln for b in bad)]
            self.assertFalse(hit, "%s: unexpected revocation trace line(s) %s" % (ctx, hit))
        if mode != "off" and (lines or reason != "allowed"):
            self.assertTrue(rl, ctx)
        if max_s is not None:
            self.assertLess(res.elapsed, max_s, ctx)
        return j


class RevocationMatrix(RowCheck, unittest.TestCase):

    def test_empty_crl_counts_zero_entries(self):
        j = self.check_row([r for r in MATRIX if r[0] == "delta_base_and_delta_clean_hard"][0])
        for ln in rev_lines(j["trace"]):
            m = re.search(r"/crl/base\.crl: .*?(\d+) entr", ln)
            if m:
                self.assertEqual(int(m.group(1)), 0, ln)

    def test_cdp_fetched_from_nginx(self):
        """The CDP answer really comes from the HTTP server (one GET per URL and run)."""
        n0 = len(NGINX.requests("GET /crl/rev-issuing.crl"))
        self.check_row([r for r in MATRIX if r[0] == "cdp_revoked_soft"][0])
        self.assertEqual(len(NGINX.requests("GET /crl/rev-issuing.crl")), n0 + 1)


def _matrix_test(r):
    def test(self):
        self.check_row(r)
    test.__name__ = "test_" + r[0]
    return test


for _r in MATRIX:
    setattr(RevocationMatrix, "test_" + _r[0], _matrix_test(_r))


# --- CDP over LDAP from slapd, dialect rfc4523 (Rev LDAP CA). The URLs in the certificates
# name certificateRevocationList / deltaRevocationList without ";binary"; slapd refuses to
# store them without it. The trace names the URL as written in the certificate.
SLAPD_CDP = "ldap:///" + urllib.parse.quote(rp.SLAPD_CDP_DN, safe=",=")
SLAPD_MISSING = "ldap:///" + urllib.parse.quote(rp.SLAPD_MISSING_DN, safe=",=")
SLAPD_MATRIX = [
    row("slapd_cdp_good_hard", "rv-slapd-good", H, CDP, "allowed", "good", [],
        [("depth 0", "CDP " + SLAPD_CDP + "?certificateRevocationList?", "not listed"),
         ("depth 0", "delta", SLAPD_CDP + "?deltaRevocationList?", "not listed"),
         ("depth 1", "CDP", "/crl/root.crl", "not listed")],
        never=[("ldap://127.0.0.1",)]),
    row("slapd_cdp_revoked_soft", "rv-slapd-revoked", S, CDP, "revoked", "revoked",
        ["CDP " + SLAPD_CDP],
        [("depth 0", "CDP " + SLAPD_CDP, "revoked")]),
    row("slapd_cdp_revoked_hard", "rv-slapd-revoked", H, CDP, "revoked", "revoked",
        ["CDP ldap:///"], [("depth 0", "CDP " + SLAPD_CDP, "revoked")]),
    row("slapd_delta_only_listing_is_revoked_hard", "rv-slapd-delta", H, CDP, "revoked",
        "revoked", ["ldap:///", "deltaRevocationList"],
        [("depth 0", "CDP " + SLAPD_CDP, "not listed"),
         ("depth 0", "delta", SLAPD_CDP + "?deltaRevocationList?", "revoked")]),
    row("slapd_cdp_no_such_entry_hard", "rv-slapd-nodn", H, CDP, "revocation_unknown",
        "unknown", [], [("depth 0", "CDP " + SLAPD_MISSING, "no such entry")],
        never=[("depth 0", "not listed")]),
    row("slapd_cdp_no_such_entry_soft", "rv-slapd-nodn", S, CDP, "allowed", "unknown", [],
        [("depth 0", "CDP " + SLAPD_MISSING, "no such entry")]),
]


def slapd_searches(log_text):
    """slapd stats log -> [(base DN, [requested attributes])] of every SRCH, in order."""
    ops, order = {}, []
    for ln in log_text.splitlines():
        m = re.search(r"(conn=\d+ op=\d+) SRCH (.*)$", ln)
        if not m:
            continue
        key, rest = m.groups()
        b = re.match(r'base="(.*?)" scope=', rest)
        if b:
            ops[key] = (b.group(1), [])
            order.append(key)
        elif rest.startswith("attr=") and key in ops:
            ops[key][1].extend(rest[5:].split())
    return [ops[k] for k in order]


class SlapdCdpMatrix(RowCheck, unittest.TestCase):
    """ldap:/// CDPs through the directory connection in the rfc4523 dialect."""

    def directory(self):
        return LDAP

    def test_attributes_requested_with_binary_option(self):
        """slapd returns certificateRevocationList;binary also to a request without the
        option, so only its stats log shows what certmap asked for: the attribute from the
        URL with ";binary" appended, for the base and the delta CRL."""
        with open(LDAP.log_file, "rb") as f:
            f.seek(0, os.SEEK_END)
            start = f.tell()
        self.check_row([r for r in SLAPD_MATRIX if r[0] == "slapd_cdp_good_hard"][0])
        with open(LDAP.log_file, "rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", "replace")
        cdp = [attrs for base, attrs in slapd_searches(text)
               if base.lower() == rp.SLAPD_CDP_DN.lower()]
        self.assertEqual(sorted(cdp), [["certificateRevocationList;binary"],
                                       ["deltaRevocationList;binary"]],
                         "searches of %s in the slapd log:\n%s" % (rp.SLAPD_CDP_DN, text))


for _r in SLAPD_MATRIX:
    setattr(SlapdCdpMatrix, "test_" + _r[0], _matrix_test(_r))


# ------------------------------------------------------------------------------------------
# 2. certmapd: TLS clients, logs, metrics, reload


def start_certmapd(name, rev):
    d = Certmapd(WORK.path, name, AD, UP.url, rev)
    INSTANCES.append(d)
    return d.start()


class CertmapdRevocation(unittest.TestCase):
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        if not CERTMAPD.exists():
            raise AssertionError("certmapd not built at %s" % CERTMAPD)
        cls.soft_file = WORK.path / "certmapd-soft-file.crl.pem"
        cls.soft_file.write_bytes(REV.file_crl_empty)
        cls.hard_file = WORK.path / "certmapd-hard-file.crl.pem"
        cls.hard_file.write_bytes(REV.file_crl_empty)
        cls.soft = start_certmapd("rev-soft", rev_config(
            "soft", fetch_cdp=True, ocsp=True, crl_files=[cls.soft_file]))
        cls.hard = start_certmapd("rev-hard", rev_config(
            "hard", fetch_cdp=True, ocsp=True, crl_files=[cls.hard_file]))

    @classmethod
    def tearDownClass(cls):
        for d in (cls.soft, cls.hard):
            try:
                d.stop(timeout=10)
            except Exception:
                pass

    def diag(self, d):
        return "\n--- certmapd %s stderr (tail) ---\n%s" % (d.name, d.stderr_tail())

    def request(self, d, leaf_name):
        leaf = REV.leaf(leaf_name)
        t = tag()
        a = d.curl(EAS + "?t=" + t, cert=str(leaf.client_pem), key=str(leaf.key_path))
        return a, d.access_for(t)

    def expect(self, d, leaf_name, reason, rev_status=None, source=()):
        """One request; checks the answer, the access line and the newest audit line."""
        a, e = self.request(d, leaf_name)
        status, sub = STATUS[reason]
        self.assertEqual(a.status, status, "%r%s" % (a, self.diag(d)))
        self.assertEqual((e["sc-status"], e["sc-substatus"]), (str(status), str(sub)),
                         e["_line"])
        if status == 403:
            self.assertEqual(a.first_line, "403.13 - " + IIS_TEXT[(403, 13)], a)
            self.assertEqual(e["cs-username"], "-")
        else:
            self.assertEqual(e["cs-username"], "LAB\\" + leaf_name)
        audits = d.audit_for_cert(sha256(REV.leaf(leaf_name)))
        au = audits[-1]
        self.assertEqual(au["reason"], reason, au)
        self.assertEqual((au["status"], au["substatus"]), (status, sub), au)
        if rev_status is not None:
            self.assertIsInstance(au.get("revocation"), dict, au)
            self.assertEqual(au["revocation"]["status"], rev_status, au)
            for s in source:
                self.assertIn(s, au["revocation"]["source"], au)
            self.assertTrue(rev_lines(au["trace"]), au)
        return a, e, audits

    def warm(self, d, leaf_name, tries=3):
        """Requests until one is answered from the decision cache (no new audit line), so
        that a later denial proves the cached allow was dropped. (The first decision that
        loads a CDP CRL may itself be dropped: the CRL store changed under it.)"""
        sha = sha256(REV.leaf(leaf_name))
        self.expect(d, leaf_name, "allowed", "good")
        for _ in range(tries):
            n = len(d.audit_for_cert(sha))
            self.expect(d, leaf_name, "allowed")
            time.sleep(1.2)  # audit lines are written at most ~1 s late
            if len(d.audit_for_cert(sha)) == n:
                return n
        self.fail("%s: no cache hit after %d requests: %s" % (leaf_name, tries + 1,
                                                             d.audit_for_cert(sha)))

    def metric_with_source(self, m, name, fragment):
        for key, v in m.samples(name).items():
            if fragment in dict(key).get("source", ""):
                return v
        self.fail("no %s sample with a source holding %r:\n%s" % (
            name, fragment, "\n".join(ln for ln in m.text.splitlines() if name in ln)))

    def test_ocsp_revoked_and_good_end_to_end(self):
        d = self.soft
        m0 = d.metrics()
        self.expect(d, "rv-ocsp-revoked", "revoked", "revoked", ["OCSP", "127.0.0.1:8092"])
        self.expect(d, "rv-ocsp-good2", "allowed", "good")
        m1 = d.metrics()
        self.assertGreaterEqual(m1.value("certmap_revocation_checks_total", result="revoked"),
                                m0.value("certmap_revocation_checks_total", result="revoked") + 1)
        self.assertGreaterEqual(m1.value("certmap_revocation_checks_total", result="good"),
                                m0.value("certmap_revocation_checks_total", result="good") + 1)
        self.assertGreaterEqual(m1.value("certmap_revocation_ocsp_latency_seconds_count"),
                                m0.value("certmap_revocation_ocsp_latency_seconds_count") + 2)
        self.assertGreater(m1.value("certmap_revocation_ocsp_latency_seconds_sum"), 0)
        self.assertTrue(m1.samples("certmap_revocation_ocsp_latency_seconds_bucket"))
        self.assertEqual(m1.fam["certmap_revocation_ocsp_latency_seconds"]["type"], "histogram")

    def test_cdp_http_revoked_end_to_end_and_crl_cached(self):
        d = self.soft
        n0 = len(NGINX.requests("GET /crl/rev-issuing.crl"))
        loads0 = d.metrics().value("certmap_revocation_crl_loads_total")
        self.expect(d, "rv-crl-revoked", "revoked", "revoked", ["CDP", "/crl/rev-issuing.crl"])
        self.expect(d, "rv-crl-good", "allowed", "good")
        self.assertEqual(len(NGINX.requests("GET /crl/rev-issuing.crl")), n0 + 1,
                         "the CDP CRL is kept until nextUpdate, not fetched per decision")
        m = d.metrics()
        self.assertGreater(m.value("certmap_revocation_crl_loads_total"), loads0)
        age = self.metric_with_source(m, "certmap_revocation_crl_age_seconds", "rev-issuing.crl")
        self.assertGreaterEqual(age, 3600 - 5)     # thisUpdate is an hour ago
        self.assertLess(age, 3 * 3600)
        nxt = self.metric_with_source(m, "certmap_revocation_crl_next_update_seconds",
                                      "rev-issuing.crl")
        self.assertGreater(nxt, 0)

    def test_crl_file_replaced_while_running(self):
        d = self.soft
        n_audit = self.warm(d, "rv-file-a")
        loads0 = d.metrics().value("certmap_revocation_crl_loads_total")

        def reload_lines():
            return [ln for ln in d.stderr().splitlines()
                    if "revocation" in ln and "reloaded" in ln]
        before = len(reload_lines())
        tmp = self.soft_file.with_suffix(".tmp")
        tmp.write_bytes(REV.file_crl_a_b)
        os.replace(tmp, self.soft_file)
        t0 = time.monotonic()
        wait_for(lambda: len(reload_lines()) > before, 5,
                 what="certmapd's revocation reload line%s" % self.diag(d))
        self.assertIn(self.soft_file.name, reload_lines()[-1])
        took = time.monotonic() - t0
        a, e, audits = self.expect(d, "rv-file-a", "revoked", "revoked",
                                   ["CRL file", str(self.soft_file)])
        self.assertEqual(len(audits), n_audit + 1,
                         "the cached allow must be dropped (%.1f s)" % took)
        self.assertGreater(d.metrics().value("certmap_revocation_crl_loads_total"), loads0)

    def test_cdp_crl_refreshed_drops_cached_allow(self):
        """A CDP CRL is refreshed before its nextUpdate; new content drops cached decisions."""
        d = self.soft
        www = REV.www / "crl" / "refresh.crl"

        def publish(data):
            tmp = www.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, www)
        # valid for 10 s: certmapd refreshes it after 80 % (8 s), before it goes stale
        now = rp._now()
        publish(REV.crl("refresh", (), number=2, this_update=now,
                        next_update=now + datetime.timedelta(seconds=10)))
        self.addCleanup(publish, REV.crl("refresh", ["rv-cdp-refresh"], number=4,
                                         this_update=rp._now()))
        n0 = len(NGINX.requests("GET /crl/refresh.crl"))
        self.warm(d, "rv-cdp-refresh")
        publish(REV.crl("refresh", ["rv-cdp-refresh"], number=3, this_update=rp._now()))
        t0 = time.monotonic()

        def denied():
            a, _ = self.request(d, "rv-cdp-refresh")
            return a.status == 403 or None
        wait_for(denied, 20, interval=0.5,
                 what="the refreshed CDP CRL to deny the cached certificate%s" % self.diag(d))
        took = time.monotonic() - t0
        self.expect(d, "rv-cdp-refresh", "revoked", "revoked", ["CDP", "/crl/refresh.crl"])
        self.assertGreaterEqual(len(NGINX.requests("GET /crl/refresh.crl")), n0 + 2)
        self.assertLess(took, 15)

    def test_stale_cdp_crl_is_not_refetched_in_a_loop(self):
        """A CDP that keeps serving a stale CRL is asked again at most about once a second
        (cm_revstore_poll), not in a loop."""
        d = self.soft
        n0 = len(NGINX.requests("GET /crl/stale.crl"))
        self.expect(d, "rv-crl-stale", "allowed", "unknown")
        time.sleep(4)
        fetched = NGINX.requests("GET /crl/stale.crl")[n0:]
        self.assertGreaterEqual(len(fetched), 1)
        self.assertLessEqual(len(fetched), 6, "%d fetches of a stale CRL in ~4 s:\n%s%s" % (
            len(fetched), "\n".join(fetched[:20]), self.diag(d)))

    def test_corrupt_data_hard_is_revocation_unknown_and_logged(self):
        d = self.hard
        m0 = d.metrics()
        self.expect(d, "rv-ocsp-garbage", "revocation_unknown", "unknown")
        self.expect(d, "rv-broken", "revocation_unknown", "unknown")
        wait_for(lambda: [ln for ln in d.stderr().splitlines() if "revocation:" in ln
                          and "refused" in ln and "ocsp-garbage" in ln], 3,
                 what="a 'refused' log line for the OCSP garbage%s" % self.diag(d))
        wait_for(lambda: [ln for ln in d.stderr().splitlines() if "revocation:" in ln
                          and "refused" in ln and "corrupt.crl" in ln], 3,
                 what="a 'refused' log line for the corrupt CRL%s" % self.diag(d))
        m1 = d.metrics()
        for kind in ("ocsp", "crl"):
            self.assertGreaterEqual(
                m1.value("certmap_revocation_fetch_failures_total", kind=kind),
                m0.value("certmap_revocation_fetch_failures_total", kind=kind) + 1, kind)
        self.assertGreaterEqual(m1.value("certmap_revocation_checks_total", result="unknown"),
                                m0.value("certmap_revocation_checks_total", result="unknown") + 2)

    def test_corrupt_data_soft_is_allowed_but_never_good(self):
        d = self.soft
        self.expect(d, "rv-ocsp-garbage", "allowed", "unknown")
        self.expect(d, "rv-broken", "allowed", "unknown")

    def test_hard_good_paths_allowed(self):
        # the anchor is never checked; intermediates answer from root.crl
        self.expect(self.hard, "rv-crl-good", "allowed", "good")
        self.expect(self.hard, "rv-ocsp-good", "allowed", "good")

    def test_revoked_intermediate_denies_every_leaf(self):
        for leaf in ("rv-sub-a", "rv-sub-b"):
            with self.subTest(leaf=leaf):
                self.expect(self.hard, leaf, "revoked", "revoked", ["/crl/root.crl"])


if __name__ == "__main__":
    unittest.main()
