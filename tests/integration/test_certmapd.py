"""certmapd end to end with real clients (curl --cert, openssl s_client, Python ssl sockets)
against Samba AD and the lab upstream (tools/lab_upstream.c), as issue 3 item 9 asks:

- every decision reason with the IIS status.substatus, the error page's first line, the W3C
  access-log line and the JSON audit line (DESIGN §4, §8);
- accept / ignore locations, upstream identity (headers, basic), spoofed identity headers, raw
  query bytes, EAS OPTIONS (§6, §7, §9);
- streaming (50 MB up, 200 MB down, bounded RSS), 200 held Pings next to short requests,
  upstream / directory outages, reload during held requests and on keep-alive connections, a
  broken reload, bad input (garbage, plain HTTP, oversized heads, slow senders, silent
  clients), admin endpoints and metrics through prometheus_client, the decision cache, SIGTERM
  draining, and GoAccess reading the access log.

One Samba AD and one lab upstream serve the whole module; each class starts the certmapd
instances it needs (a few hundred ms each) with its own config, logs and admin port.
"""

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import unittest

from certmap_test import PKI, SilentServer, closed_port, deep_merge, skip_or_fail
from certmapd_harness import (CA_BUNDLE, CERTMAPD, EAS, IIS_TEXT, Certmapd, LabUpstream,
                              Scratch, cert_sha256, client_context, https_connection,
                              openssl_s_client, parse_raw_response, recv_all, tag, tls_socket,
                              wait_for)
from harness import SambaAD

AD = None
UP = None
SCRATCH = None
MAIN = None  # the shared certmapd (require on EAS, accept on /, ignore on /public, headers)
INSTANCES = []

AD_GROUP = "CN=ActiveSync Users,CN=Users,DC=lab,DC=test"


def setUpModule():
    global AD, UP, SCRATCH, MAIN
    if os.geteuid() != 0:
        skip_or_fail("Samba AD needs root and a private network namespace (run under netns-run)")
    for tool in ("curl", "openssl"):
        if shutil.which(tool) is None:
            skip_or_fail("%s not installed" % tool)
    if not CERTMAPD.exists():
        raise AssertionError("certmapd not built at %s" % CERTMAPD)
    SCRATCH = Scratch()
    try:
        AD = SambaAD(str(SCRATCH.path / "ad"))
        AD.start()
        AD.seed()
        UP = LabUpstream(SCRATCH.path / "upstream").start()
        MAIN = start_certmapd("main")
    except BaseException:
        tearDownModule()
        raise


def tearDownModule():
    for d in INSTANCES:
        try:
            d.stop(sig=signal.SIGKILL if d.alive() else signal.SIGTERM, timeout=10)
        except Exception:
            pass
    if UP is not None:
        UP.stop()
    if AD is not None:
        AD.stop()
    if SCRATCH is not None and not os.environ.get("CERTMAP_KEEP_SCRATCH"):
        SCRATCH.remove()


def start_certmapd(name, overrides=None, upstream_url=None):
    d = Certmapd(SCRATCH.path, name, AD, upstream_url or UP.url, overrides)
    INSTANCES.append(d)
    return d.start()


def ad_user_dn(name):
    return "CN=%s,CN=Users,DC=lab,DC=test" % name


class CertmapdCase(unittest.TestCase):
    """Assertions shared by the classes below."""

    d = None  # the certmapd under test

    def diag(self, d=None):
        d = d or self.d
        return "\n--- certmapd %s stderr (tail) ---\n%s" % (d.name, d.stderr_tail())

    def assertAlive(self, d=None):
        d = d or self.d
        self.assertTrue(d.alive(), "certmapd %s died (rc=%s)%s" % (d.name, d.proc.poll(),
                                                                     self.diag(d)))

    def assertErrorPage(self, a, status, substatus):
        self.assertEqual(a.status, status, "%r%s" % (a, self.diag()))
        self.assertEqual(a.first_line, "%d.%d - %s" % (status, substatus,
                                                        IIS_TEXT[(status, substatus)]), a)
        self.assertIn("<title>%d.%d - " % (status, substatus), a.text)

    def assertAccess(self, e, method, stem, query, user, status, substatus):
        self.assertEqual(e["_nfields"], 15, e["_line"])
        self.assertEqual(e["cs-method"], method, e["_line"])
        self.assertEqual(e["cs-uri-stem"], stem, e["_line"])
        self.assertEqual(e["cs-uri-query"], query, e["_line"])
        self.assertEqual(e["cs-username"], user, e["_line"])
        self.assertEqual(e["sc-status"], str(status), e["_line"])
        self.assertEqual(e["sc-substatus"], str(substatus), e["_line"])
        self.assertEqual(e["c-ip"], "127.0.0.1", e["_line"])
        self.assertEqual(e["s-port"], str(self.d.port), e["_line"])

    def echo(self, a):
        self.assertEqual(a.status, 200, "%r%s" % (a, self.diag()))
        return a.json()


# ------------------------------------------------------------------------------------------
# 1. Every reason end to end


# (test name, cert, chain, extra curl args, status, substatus, reason, audit user or None)
REASONS = [
    ("allowed_alice", "alice.pem", None, [], 200, 0, "allowed", "alice"),
    ("untrusted_rogue_alice", "rogue-alice.pem", "rogue-ca.pem", [], 403, 16, "untrusted", None),
    ("untrusted_mallory_selfsigned", "mallory-selfsigned.pem", None, [], 403, 16, "untrusted",
     None),
    ("untrusted_mike_serverauth_eku", "mike-serverauth.pem", None, [], 403, 16, "untrusted",
     None),
    ("expired_kim", "kim-expired.pem", None, [], 403, 17, "expired", None),
    ("not_yet_valid_leo", "leo-notyet.pem", None, [], 403, 17, "not_yet_valid", None),
    ("revoked_judy", "judy-revoked.pem", None, [], 403, 13, "revoked", None),
    ("not_mapped_peggy", "peggy-unmapped.pem", None, [], 401, 2, "not_mapped", None),
    ("ambiguous_shared", "shared.pem", None, [], 403, 12, "ambiguous", None),
    ("account_disabled_dave", "dave.pem", None, [], 401, 1, "account_disabled", "dave"),
    ("account_locked_frank", "frank.pem", None, [], 401, 1, "account_locked", "frank"),
    ("account_expired_erin", "erin.pem", None, [], 401, 1, "account_expired", "erin"),
    ("not_in_group_bob", "bob.pem", None, [], 401, 3, "not_in_group", "bob"),
]


class Reasons(CertmapdCase):
    """The shared instance: one request per certificate (so each is a computed decision)."""

    @classmethod
    def setUpClass(cls):
        cls.d = MAIN

    def check_reason(self, cert, chain, extra, status, substatus, reason, user, d=None,
                     method="GET"):
        d = d or self.d
        t = tag()
        query = "Cmd=Sync&User=x&DeviceId=D%s&DeviceType=curl" % t
        args = list(extra) + (["-X", method] if method != "GET" else [])
        a = d.curl(EAS + "?" + query, cert=cert, chain=chain, args=args, scratch=SCRATCH)
        if status == 200:
            echo = self.echo(a)
            self.assertEqual(echo["path"], EAS)
            self.assertEqual(echo["query"], query)
            self.assertEqual(echo["method"], method)
        else:
            self.assertErrorPage(a, status, substatus)
        e = d.access_for(t)
        self.assertAccess(e, method, EAS, query,
                          "LAB\\%s" % user if status == 200 else "-", status, substatus)
        if cert is not None:
            audits = d.audit_for_cert(cert_sha256(cert))
            au = audits[-1]
            self.assertEqual(au["reason"], reason, au)
            self.assertEqual((au["status"], au["substatus"]),
                             (status if status != 200 else 200, substatus), au)
            self.assertEqual(au["decision"], "allow" if reason == "allowed" else "deny", au)
            self.assertEqual(au["client_ip"], "127.0.0.1")
            if user is None:
                self.assertIsNone(au["user"], au)
            else:
                self.assertEqual(au["user"]["sAMAccountName"], user, au)
                self.assertEqual(au["user"]["dn"].lower(), ad_user_dn(user).lower(), au)
        return a

    def test_no_certificate(self):
        before = [a for a in self.d.audit_entries() if a["reason"] == "no_certificate"]
        self.check_reason(None, None, [], 403, 7, "no_certificate", None)
        after = wait_for(lambda: [a for a in self.d.audit_entries()
                                  if a["reason"] == "no_certificate"][len(before):] or None,
                         4, what="no_certificate audit line")
        self.assertEqual(len(after), 1)
        self.assertEqual((after[0]["status"], after[0]["substatus"]), (403, 7))
        self.assertIsNone(after[0]["user"])

    def test_access_log_header(self):
        MAIN.curl("/?t=" + tag())
        raw = wait_for(lambda: MAIN.access_raw() or None, 4, what="access log")
        lines = raw.split("\n")
        self.assertTrue(lines[0].startswith("#Software: certmap "), lines[0])
        self.assertEqual(lines[1], "#Version: 1.0")
        self.assertRegex(lines[2], r"^#Date: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
        self.assertEqual(lines[3], "#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query "
                         "s-port cs-username c-ip cs(User-Agent) cs(Referer) sc-status "
                         "sc-substatus sc-win32-status time-taken")


def _reason_test(row):
    name, cert, chain, extra, status, substatus, reason, user = row

    def test(self):
        self.check_reason(cert, chain, extra, status, substatus, reason, user)
    test.__name__ = "test_" + name
    return test


for _row in REASONS:
    setattr(Reasons, "test_" + _row[0], _reason_test(_row))


class ReasonsOtherConfigs(CertmapdCase):
    """Reasons that need another policy: hard revocation, Basic binding, outages."""

    @classmethod
    def setUpClass(cls):
        cls.hard = start_certmapd("hard", {"client_certificates": {"revocation": {
            "mode": "hard", "crl_files": [str(PKI / "issuing-ca-stale.crl.pem")]}}})
        cls.required = start_certmapd("basic-required", {
            "authorization": {"basic_user_binding": "required"},
            "upstream": {"identity": "basic"}})
        cls.if_present = start_certmapd("basic-if-present", {
            "authorization": {"basic_user_binding": "if_present"}})
        cls.silent = SilentServer()
        cls.dirdown = start_certmapd("directory-down", {"directory": {
            "uris": ["ldap://127.0.0.1:%d" % closed_port()], "timeout_ms": 1000}})
        cls.updown = start_certmapd("upstream-down",
                                    upstream_url="http://127.0.0.1:%d" % closed_port())
        cls.upslow = start_certmapd("upstream-silent", {"upstream": {"timeout_s": 2}},
                                    upstream_url="http://127.0.0.1:%d" % cls.silent.port)

    @classmethod
    def tearDownClass(cls):
        cls.silent.close()

    check = Reasons.check_reason

    def test_revocation_unknown_hard_stale_crl(self):
        self.d = self.hard
        self.check("alice.pem", None, [], 403, 13, "revocation_unknown",
                   None, d=self.hard)

    def test_basic_user_mismatch_required_without_basic(self):
        self.d = self.required
        self.check("alice.pem", None, [], 401, 1, "basic_user_mismatch", "alice",
                   d=self.required)

    def test_basic_required_with_matching_user_passes_authorization(self):
        self.d = self.required
        t = tag()
        a = self.required.curl(EAS + "?t=" + t, cert="carol.pem", args=["-u", "LAB\\carol:pw"])
        echo = self.echo(a)
        want = "Basic " + base64.b64encode(b"LAB\\carol:pw").decode()
        self.assertEqual(echo["headers"].get("Authorization"), want, echo["headers"])
        # identity "basic": certmapd adds no identity headers of its own
        for h in ("X-Certmap-User", "X-Certmap-UPN", "X-Certmap-DN", "Client-Cert"):
            self.assertNotIn(h, echo["headers"])
        e = self.required.access_for(t)
        self.assertAccess(e, "GET", EAS, "t=" + t, "LAB\\carol", 200, 0)

    def test_basic_user_mismatch_if_present_other_user(self):
        self.d = self.if_present
        self.check("alice.pem", None, ["-u", "bob:pw"], 401, 1, "basic_user_mismatch", "alice",
                   d=self.if_present)

    def test_directory_unavailable_503(self):
        self.d = self.dirdown
        a = self.check("carol.pem", None, [], 503, 0, "directory_unavailable", None,
                       d=self.dirdown)
        self.assertEqual(a.headers.get("retry-after"), "30", a.raw_headers)

    def test_directory_down_readyz_503_healthz_200(self):
        self.d = self.dirdown
        self.assertEqual(self.dirdown.admin_get("/healthz")[0], 200)
        status, body = self.dirdown.admin_get("/readyz")
        self.assertEqual(status, 503, body)
        self.assertEqual(MAIN.admin_get("/readyz")[0], 200)

    def test_upstream_unavailable_502_3(self):
        self.d = self.updown
        t = tag()
        a = self.updown.curl(EAS + "?t=" + t, cert="alice.pem")
        self.assertErrorPage(a, 502, 3)
        self.assertAccess(self.updown.access_for(t), "GET", EAS, "t=" + t, "LAB\\alice", 502, 3)
        au = self.updown.audit_for_cert(cert_sha256("alice.pem"))
        self.assertEqual(au[-1]["reason"], "allowed")  # the decision; the proxy failed after

    def test_upstream_timeout_504_0(self):
        self.d = self.upslow
        t = tag()
        t0 = time.monotonic()
        a = self.upslow.curl(EAS + "?t=" + t, cert="alice.pem")
        took = time.monotonic() - t0
        self.assertErrorPage(a, 504, 0)
        self.assertLess(took, 8, "upstream.timeout_s 2")
        self.assertAccess(self.upslow.access_for(t), "GET", EAS, "t=" + t, "LAB\\alice", 504, 0)


class BadRequests(CertmapdCase):
    """Paths that cannot be normalized and header names with '_': 400, never proxied."""

    @classmethod
    def setUpClass(cls):
        cls.d = MAIN

    def bad(self, path_query, args=(), stem=None):
        t = tag()
        before = UP.stats()["requests"]
        a = self.d.curl(path_query + ("&" if "?" in path_query else "?") + "t=" + t,
                        cert="alice.pem", args=["--path-as-is"] + list(args))
        self.assertErrorPage(a, 400, 0)
        e = self.d.access_for(t)
        self.assertEqual((e["sc-status"], e["sc-substatus"]), ("400", "0"), e["_line"])
        self.assertEqual(e["cs-method"], "GET")
        self.assertEqual(e["cs-username"], "-")
        if stem is not None:
            self.assertEqual(e["cs-uri-stem"], stem, e["_line"])
        self.assertEqual(UP.stats()["requests"], before + 1, "only the stats request itself")
        return a

    def test_encoded_slash(self):
        self.bad(EAS + "/a%2fb")

    def test_encoded_backslash(self):
        self.bad(EAS + "/a%5cb")

    def test_dotdot_above_root(self):
        self.bad("/../Microsoft-Server-ActiveSync")

    def test_header_name_with_underscore(self):
        self.bad(EAS, args=["-H", "X_Certmap_User: LAB\\administrator"])

    def test_dotdot_above_root_raw_s_client(self):
        t = tag()
        req = ("GET /a/../../etc/passwd?t=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               "Connection: close\r\n\r\n" % t).encode()
        proc = openssl_s_client(self.d, req, cert="alice.pem")
        status, headers, body = parse_raw_response(
            proc.stdout[proc.stdout.find(b"HTTP/"):])
        self.assertEqual(status, 400, proc.stdout[:500])
        self.assertTrue(body.startswith(b"400.0 - Bad Request"), body[:200])
        e = self.d.access_for(t)
        self.assertEqual(e["sc-status"], "400")

    def test_normalized_path_is_forwarded(self):
        t = tag()
        a = self.d.curl("/Microsoft-Server-ActiveSync/./x/..//%41bc?t=" + t, cert="alice.pem",
                        args=["--path-as-is"])
        echo = self.echo(a)
        self.assertEqual(echo["path"], EAS + "/Abc")
        self.assertEqual(echo["headers"].get("X-Certmap-User"), "LAB\\alice")

    def test_location_match_is_case_insensitive(self):
        # /microsoft-server-activesync is the EAS location (require): no cert -> 403.7
        a = self.d.curl("/microsoft-server-activesync?t=" + tag())
        self.assertErrorPage(a, 403, 7)


# ------------------------------------------------------------------------------------------
# 2., 3., 4., 5.: locations, identity, spoofing, raw query, OPTIONS


IDENTITY = ("X-Certmap-User", "X-Certmap-UPN", "X-Certmap-DN", "Client-Cert")


class LocationsAndIdentity(CertmapdCase):

    @classmethod
    def setUpClass(cls):
        cls.d = MAIN

    def test_accept_without_cert_passes_without_identity(self):
        t = tag()
        a = self.d.curl("/owa/x?t=" + t)
        echo = self.echo(a)
        self.assertEqual(echo["path"], "/owa/x")
        for h in IDENTITY:
            self.assertNotIn(h, echo["headers"])
        self.assertAccess(self.d.access_for(t), "GET", "/owa/x", "t=" + t, "-", 200, 0)

    def test_accept_with_cert_is_decided(self):
        a = self.d.curl("/owa?t=" + tag(), cert="bob.pem")
        self.assertErrorPage(a, 401, 3)
        echo = self.echo(self.d.curl("/owa?t=" + tag(), cert="alice.pem"))
        self.assertEqual(echo["headers"].get("X-Certmap-User"), "LAB\\alice")

    def test_accept_with_untrusted_cert_is_denied(self):
        a = self.d.curl("/ews?t=" + tag(), cert="mallory-selfsigned.pem")
        self.assertErrorPage(a, 403, 16)

    def test_ignore_sends_no_identity_even_with_cert(self):
        for cert in ("alice.pem", "bob.pem", "mallory-selfsigned.pem", None):
            t = tag()
            echo = self.echo(self.d.curl("/public/x?t=" + t, cert=cert,
                                         args=["-H", "X-Certmap-User: LAB\\administrator"]))
            for h in IDENTITY:
                self.assertNotIn(h, echo["headers"], cert)
            self.assertAccess(self.d.access_for(t), "GET", "/public/x", "t=" + t, "-", 200, 0)

    def test_identity_headers(self):
        echo = self.echo(self.d.curl(EAS + "?t=" + tag(), cert="alice.pem",
                                     args=["-u", "alice:secret"]))
        h = echo["headers"]
        self.assertEqual(h.get("X-Certmap-User"), "LAB\\alice")
        self.assertEqual(h.get("X-Certmap-UPN", "").lower(), "alice@lab.test")
        self.assertEqual(h.get("X-Certmap-DN", "").lower(), ad_user_dn("alice").lower())
        der = (PKI / "alice.der").read_bytes()
        self.assertEqual(h.get("Client-Cert"), ":%s:" % base64.b64encode(der).decode())
        self.assertNotIn("Client-Cert-Chain", h)
        self.assertNotIn("Authorization", h, "identity headers: the client's Authorization "
                         "is dropped")

    def test_spoofed_identity_headers_never_reach_upstream(self):
        spoof = [
            "X-Certmap-User: LAB\\administrator",
            "X-Certmap-UPN: administrator@lab.test",
            "X-Certmap-DN: CN=Administrator,CN=Users,DC=lab,DC=test",
            "X-Certmap-Extra: 1",
            "Client-Cert: :QUFBQQ==:",
            "Client-Cert-Chain: :QUFBQQ==:",
            "X-SSL-Client-Cert: spoof",
            "X-SSL-Client-DN: CN=administrator",
            "X-Forwarded-Tls-Client-Cert: spoof",
            "X-Forwarded-Tls-Client-Cert-Info: spoof",
            "X-Client-Cert: spoof",
            "X-Client-Cert-Subject: spoof",
            "X-Forwarded-For: 203.0.113.66",
            "X-Forwarded-Proto: http",
            "X-Forwarded-Host: evil.example",
            "Connection: keep-alive, X-Secret-Hop",
            "X-Secret-Hop: must-not-pass",
            "Keep-Alive: timeout=5",
            "Proxy-Authorization: Basic YWRtaW46YWRtaW4=",
            "TE: trailers",
            "Upgrade: websocket",
            "MS-ASProtocolVersion: 16.1",
            "X-MS-PolicyKey: 12345",
        ]
        args = []
        for s in spoof:
            args += ["-H", s]
        for cert, path in (("alice.pem", EAS), (None, "/owa")):
            echo = self.echo(self.d.curl(path + "?t=" + tag(), cert=cert, args=args))
            h = {k.lower(): v for k, v in echo["headers"].items()}
            if cert:
                self.assertEqual(h.get("x-certmap-user"), "LAB\\alice", h)
                self.assertEqual(h.get("x-certmap-upn", "").lower(), "alice@lab.test")
                self.assertEqual(h.get("x-certmap-dn", "").lower(), ad_user_dn("alice").lower())
                der = (PKI / "alice.der").read_bytes()
                self.assertEqual(h.get("client-cert"), ":%s:" % base64.b64encode(der).decode())
            else:
                for k in ("x-certmap-user", "x-certmap-upn", "x-certmap-dn", "client-cert"):
                    self.assertNotIn(k, h)
            for k in ("x-certmap-extra", "client-cert-chain", "x-ssl-client-cert",
                      "x-ssl-client-dn", "x-forwarded-tls-client-cert",
                      "x-forwarded-tls-client-cert-info", "x-client-cert",
                      "x-client-cert-subject", "x-secret-hop", "keep-alive",
                      "proxy-authorization", "te", "upgrade"):
                self.assertNotIn(k, h, "%s reached the upstream (cert %s)" % (k, cert))
            self.assertEqual(h.get("x-forwarded-for"), "127.0.0.1", h)
            self.assertEqual(h.get("x-forwarded-proto"), "https", h)
            self.assertEqual(h.get("x-forwarded-host"), "127.0.0.1:%d" % self.d.port, h)
            # EAS request headers pass
            self.assertEqual(h.get("ms-asprotocolversion"), "16.1")
            self.assertEqual(h.get("x-ms-policykey"), "12345")

    def test_x_forwarded_host_is_the_host_sent(self):
        echo = self.echo(self.d.curl(EAS + "?t=" + tag(), cert="alice.pem",
                                     args=["-H", "Host: mail.lab.test"]))
        self.assertEqual(echo["headers"].get("X-Forwarded-Host"), "mail.lab.test")

    def test_raw_query_byte_for_byte(self):
        # EAS base64 query form (MS-ASHTTP 2.2.1.1.1.1) with %2B, '+', '=', and odd bytes
        t = tag()
        query = ("jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l%2Bab+cd==&x=%2f%2F%zz&y=a+b%20c"
                 "&empty=&t=" + t)
        echo = self.echo(self.d.curl(EAS + "?" + query, cert="alice.pem", args=["--path-as-is"]))
        self.assertEqual(echo["query"], query)
        e = self.d.access_for(t)
        self.assertEqual(e["cs-uri-query"], query, e["_line"])

    def test_eas_options(self):
        t = tag()
        a = self.d.curl(EAS + "?t=" + t, cert="alice.pem", args=["-X", "OPTIONS"])
        self.assertEqual(a.status, 200, a)
        self.assertIn("16.1", a.headers.get("ms-asprotocolversions", ""), a.raw_headers)
        self.assertIn("Ping", a.headers.get("ms-asprotocolcommands", ""), a.raw_headers)
        self.assertAccess(self.d.access_for(t), "OPTIONS", EAS, "t=" + t, "LAB\\alice", 200, 0)

    def test_upstream_status_and_post_body(self):
        t = tag()
        a = self.d.curl(EAS + "?Cmd=Sync&t=" + t, cert="alice.pem",
                        args=["-H", "X-Lab-Status: 449", "--data-binary", "hello",
                              "-H", "Content-Type: application/vnd.ms-sync.wbxml"])
        self.assertEqual(a.status, 449, a)
        echo = a.json()
        self.assertEqual(echo["body_bytes"], 5)
        self.assertEqual(echo["body_sha256"], hashlib.sha256(b"hello").hexdigest())
        self.assertEqual(echo["headers"].get("Content-Type"), "application/vnd.ms-sync.wbxml")
        self.assertAccess(self.d.access_for(t), "POST", EAS, "Cmd=Sync&t=" + t, "LAB\\alice",
                          449, 0)

    def test_error_pages_keep_the_connection_alive(self):
        # IIS keeps the connection after a 401/403 (EAS clients answer a 401 on the same
        # connection); closing it costs every denied device a new mTLS handshake.
        for cert, path, status in (("bob.pem", EAS, 401), (None, EAS, 403),
                                   ("mallory-selfsigned.pem", EAS, 403)):
            a = self.d.curl(None, cert=cert, args=["-v"], urls=[path + "?k=1", path + "?k=2"])
            self.assertEqual(a.codes, [status, status], a)
            self.assertNotIn("Connection: close", a.raw_headers,
                             "%s %s: a GET answered %d closes the connection" % (cert, path,
                                                                                 status))
            self.assertEqual(a.stderr.count("Re-using existing connection"), 1,
                             "%s: second request on a new connection" % cert)

    def test_keepalive_connection_several_requests(self):
        a = self.d.curl(None, cert="alice.pem", args=["-v"], urls=[
            EAS + "?n=1&t=" + tag(), EAS + "?n=2&t=" + tag(), "/public?t=" + tag(),
            "/owa?t=" + tag()])
        self.assertEqual(a.codes, [200, 200, 200, 200], a)
        self.assertEqual(a.stderr.count("Re-using existing connection"), 3, a.stderr[-2000:])


# ------------------------------------------------------------------------------------------
# 6. Streaming with bounded memory


class RssSampler:
    def __init__(self, d):
        self.d = d
        self.max = d.rss_kib()
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            try:
                self.max = max(self.max, self.d.rss_kib())
            except Exception:
                return
            time.sleep(0.02)

    def finish(self):
        self.stop = True
        self.t.join()
        return self.max


class Streaming(CertmapdCase):

    @classmethod
    def setUpClass(cls):
        cls.d = start_certmapd("streaming")

    def warm_up(self, ctx):
        # the same paths once, so allocator arenas and the cache exist before measuring
        c = https_connection(self.d, ctx)
        body = os.urandom(1 << 20)
        c.request("POST", EAS + "?Cmd=SendMail&warm=1", body=body,
                  headers={"Content-Type": "message/rfc822"})
        r = c.getresponse()
        r.read()
        c.request("GET", "/lab/download?bytes=%d" % (8 << 20))
        r = c.getresponse()
        while r.read(1 << 16):
            pass
        c.close()

    def test_50mb_upload_streams(self):
        ctx = client_context("alice.pem")
        self.warm_up(ctx)
        total = 50 * 1024 * 1024
        block = 64 * 1024
        h = hashlib.sha256()
        marks = {}
        seed = os.urandom(block)

        def gen():
            sent = 0
            i = 0
            marks["first"] = time.monotonic()
            while sent < total:
                chunk = bytes([i & 0xFF]) + seed[1:]
                h.update(chunk)
                sent += len(chunk)
                i += 1
                yield chunk
            marks["last"] = time.monotonic()

        base = self.d.rss_kib()
        sampler = RssSampler(self.d)
        c = https_connection(self.d, ctx, timeout=120)
        c.request("POST", EAS + "?Cmd=SendMail&SaveInSent=T", body=gen(),
                  headers={"Content-Length": str(total), "Content-Type": "message/rfc822"})
        r = c.getresponse()
        got = r.read()
        t_resp = time.monotonic()
        c.close()
        peak = sampler.finish()
        self.assertEqual(r.status, 200, got[:300])
        echo = json.loads(got)
        self.assertEqual(echo["body_bytes"], total)
        self.assertEqual(echo["body_sha256"], h.hexdigest())
        first, last = echo["first_body_byte_ms"], echo["last_body_byte_ms"]
        span_s = (last - first) / 1000.0
        send_s = marks["last"] - marks["first"]  # noqa: F841 (in the message above)
        # The upstream received its last byte no later than we got the answer, so its first
        # byte arrived at most (t_resp - span) -- which must be before we sent our last byte.
        upstream_first_at_most = t_resp - span_s
        self.assertLess(upstream_first_at_most, marks["last"],
                        "upstream's first byte only after the client had sent everything "
                        "(span %.3f s, client send %.3f s)" % (span_s, send_s))
        grew = peak - base
        self.assertLess(grew, 8 * 1024, "RSS grew %d KiB during a 50 MB upload" % grew)
        self.assertAlive()

    def test_200mb_download_streams(self):
        ctx = client_context("alice.pem")
        self.warm_up(ctx)
        total = 200 * 1024 * 1024
        base = self.d.rss_kib()
        sampler = RssSampler(self.d)
        c = https_connection(self.d, ctx, timeout=120)
        c.request("GET", "/lab/download?bytes=%d" % total)
        r = c.getresponse()
        n = 0
        while True:
            chunk = r.read(1 << 16)
            if not chunk:
                break
            n += len(chunk)
        c.close()
        peak = sampler.finish()
        self.assertEqual(r.status, 200)
        self.assertEqual(n, total)
        grew = peak - base
        self.assertLess(grew, 8 * 1024, "RSS grew %d KiB during a 200 MB download" % grew)

    def test_client_abort_mid_upload_keeps_serving(self):
        ctx = client_context("alice.pem")
        s = tls_socket(self.d, ctx)
        s.sendall(("POST %s?Cmd=SendMail&abort=1 HTTP/1.1\r\nHost: x\r\n"
                   "Content-Length: 10000000\r\n\r\n" % EAS).encode())
        s.sendall(os.urandom(1 << 20))
        s.close()
        time.sleep(0.3)
        self.assertAlive()
        self.echo(self.d.curl(EAS + "?after-abort=1", cert="alice.pem"))


# ------------------------------------------------------------------------------------------
# 7. 200 held Pings next to short requests


def ping(d, ctx, hold, results, i, start_evt=None):
    try:
        c = https_connection(d, ctx, timeout=60)
        c.request("POST", EAS + "?Cmd=Ping&User=alice&DeviceId=P%d&DeviceType=test" % i,
                  body=b"<ping/>", headers={"X-Lab-Hold-Seconds": str(hold),
                                            "Content-Type": "application/vnd.ms-sync.wbxml"})
        r = c.getresponse()
        body = r.read()
        results[i] = (r.status, json.loads(body).get("held_ms") if r.status == 200 else body)
        c.close()
    except Exception as e:  # recorded, checked by the test
        results[i] = ("error", repr(e))


class HeldPings(CertmapdCase):

    @classmethod
    def setUpClass(cls):
        cls.d = start_certmapd("held")

    def test_200_held_pings_and_short_requests(self):
        n = 200
        hold = 6
        ctx = client_context("alice.pem")
        self.echo(self.d.curl(EAS + "?warm", cert="alice.pem"))  # decision cached
        held0 = UP.stats()["held_now"]
        results = [None] * n
        threads = [threading.Thread(target=ping, args=(self.d, ctx, hold, results, i), daemon=True)
                   for i in range(n)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        wait_for(lambda: UP.stats()["held_now"] - held0 >= n, hold - 1,
                 what="%d Pings held at the upstream" % n)
        # short requests on fresh connections while all Pings are held
        short = []
        for i in range(5):
            s0 = time.monotonic()
            a = self.d.curl(EAS + "?Cmd=FolderSync&short=%d" % i, cert="alice.pem")
            short.append(time.monotonic() - s0)
            self.assertEqual(a.status, 200, a)
        s0 = time.monotonic()
        self.assertEqual(self.d.admin_get("/healthz")[0], 200)
        short.append(time.monotonic() - s0)
        self.assertLess(time.monotonic() - t0, hold, "short requests ran while Pings were held")
        for t in threads:
            t.join(timeout=hold + 30)
        self.assertLess(max(short), 1.0, "short requests took %s" % short)
        bad = [(i, r) for i, r in enumerate(results) if r is None or r[0] != 200]
        self.assertEqual(bad, [], "failed Pings")
        self.assertTrue(all(r[1] >= (hold - 0.5) * 1000 for r in results), "held ms")
        self.assertAlive()


class Tls(CertmapdCase):
    """The TLS front end as clients meet it: TLS 1.3 and 1.2 with the client certificate in the
    first handshake, X25519 without a HelloRetryRequest, resumption by session ticket (1.3 and
    1.2) with the request still decided, old versions refused."""

    @classmethod
    def setUpClass(cls):
        cls.d = MAIN

    def s_client(self, *args, request=None, sess_out=None, sess_in=None):
        argv = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % self.d.port,
                "-CAfile", str(CA_BUNDLE), "-verify_return_error", "-servername", "localhost",
                "-cert", str(PKI / "alice.pem"), "-key", str(PKI / "alice.key"), "-ign_eof"]
        argv += list(args)
        if sess_out:
            argv += ["-sess_out", str(sess_out)]
        if sess_in:
            argv += ["-sess_in", str(sess_in)]
        req = request or ("GET %s?tls=%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                          % (EAS, tag())).encode()
        proc = subprocess.run(argv, input=req, capture_output=True, timeout=20)
        return proc.returncode, proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")

    def test_tls13_x25519_one_round_trip(self):
        rc, out = self.s_client("-tls1_3", "-msg")
        self.assertIn("HTTP/1.1 200", out)
        self.assertIn("Server Temp Key: X25519", out)
        # a HelloRetryRequest is a second ServerHello record
        self.assertEqual(out.count("ServerHello"), 1, "HelloRetryRequest sent:\n" + out[-3000:])

    def test_tls13_p256_only_client(self):
        rc, out = self.s_client("-tls1_3", "-groups", "P-256")
        self.assertIn("HTTP/1.1 200", out)
        self.assertIn("prime256v1", out)

    def test_tls12_with_client_certificate(self):
        rc, out = self.s_client("-tls1_2")
        self.assertIn("Protocol  : TLSv1.2", out)
        self.assertIn("HTTP/1.1 200", out)

    def test_old_versions_refused(self):
        rc, out = self.s_client("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
        self.assertNotEqual(rc, 0, out)
        self.assertNotIn("HTTP/1.1", out)

    def test_resumption_tls13_and_tls12(self):
        for version in ("-tls1_3", "-tls1_2"):
            with self.subTest(version=version):
                sess = self.d.dir / ("sess%s.pem" % version)
                rc, out = self.s_client(version, sess_out=sess)
                self.assertIn("HTTP/1.1 200", out)
                self.assertTrue(sess.exists() and sess.stat().st_size > 0, out)
                t = tag()
                req = ("GET %s?resumed=%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                       % (EAS, t)).encode()
                rc, out = self.s_client(version, request=req, sess_in=sess)
                self.assertIn("Reused, TLSv1.", out, out[-2000:])
                self.assertIn("HTTP/1.1 200", out)
                # the resumed connection still carries the identity to the upstream
                e = self.d.access_for("resumed=" + t)
                self.assertEqual((e["sc-status"], e["cs-username"]), ("200", "LAB\\alice"), e)


class HangUp(CertmapdCase):
    """A client that goes away while its request is held at the upstream: certmapd notices at
    once (not when the upstream answers), cancels the upstream request, logs the request, and
    keeps serving. On the first request of a connection, later on a keep-alive connection, and
    with a half-close (shutdown of the client's sending side)."""

    @classmethod
    def setUpClass(cls):
        cls.d = start_certmapd("hangup")

    @staticmethod
    def read_response(s):
        s.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        n = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                n = int(line.split(b":")[1])
        while len(body) < n:
            body += s.recv(65536)
        return head.split(b"\r\n")[0]

    def held_then_close(self, close, before=0):
        s = tls_socket(self.d, client_context("alice.pem"))
        for i in range(before):
            s.sendall(("GET %s?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (EAS, i)).encode())
            self.assertIn(b" 200 ", self.read_response(s))
        t = tag()
        held0 = UP.stats()["held_now"]
        mine0 = self.d.metrics().value("certmap_requests_held")
        s.sendall(("GET %s?Cmd=Ping&t=%s HTTP/1.1\r\nHost: x\r\nX-Lab-Hold-Seconds: 30\r\n\r\n"
                   % (EAS, t)).encode())
        wait_for(lambda: UP.stats()["held_now"] > held0, 5, what="the Ping held at the upstream")
        self.assertEqual(self.d.metrics().value("certmap_requests_held"), mine0 + 1)
        t0 = time.monotonic()
        close(s)
        e = self.d.access_for("t=" + t, timeout=8)
        self.assertLess(time.monotonic() - t0, 5, "hang-up noticed late: %s" % e)
        # (the lab upstream itself notices only when its hold ends: MHD does not watch a
        # suspended connection; certmapd's own gauge says the request is gone)
        wait_for(lambda: self.d.metrics().value("certmap_requests_held") == mine0, 5,
                 what="certmapd to drop the held request after the client left")
        s.close()
        self.assertEqual(self.d.curl(EAS + "?after=" + t, cert="alice.pem").status, 200)
        self.assertAlive()
        return e

    def test_close_on_first_request(self):
        self.held_then_close(lambda s: s.close())

    def test_close_on_a_later_keepalive_request(self):
        self.held_then_close(lambda s: s.close(), before=20)

    def test_half_close_on_a_later_request(self):
        self.held_then_close(lambda s: s.shutdown(socket.SHUT_WR), before=1)


# ------------------------------------------------------------------------------------------
# 9. Reload


class Reload(CertmapdCase):

    @classmethod
    def setUpClass(cls):
        cls.d = start_certmapd("reload")
        cls.original = json.loads(json.dumps(cls.d.config))

    def tearDown(self):
        if self.d.config != self.original:
            self.d.write_config(self.original)
            self.d.reload()

    def test_sighup_during_held_pings_drops_none(self):
        n = 30
        ctx = client_context("alice.pem")
        results = [None] * n
        held0 = UP.stats()["held_now"]
        threads = [threading.Thread(target=ping, args=(self.d, ctx, 3, results, i), daemon=True)
                   for i in range(n)]
        for t in threads:
            t.start()
        wait_for(lambda: UP.stats()["held_now"] - held0 >= n, 5, what="Pings held")
        cfg = deep_merge(self.original, {"cache": {"ttl_s": 120}})
        self.d.write_config(cfg)
        self.d.reload()
        self.d.reload()
        for t in threads:
            t.join(timeout=30)
        self.assertEqual([r for r in results if r is None or r[0] != 200], [])
        self.assertAlive()

    def test_policy_change_applies_on_existing_keepalive_connection(self):
        ctx = client_context("alice.pem")
        c = https_connection(self.d, ctx)
        c.request("GET", EAS + "?before-reload")
        r = c.getresponse()
        r.read()
        self.assertEqual(r.status, 200)
        self.assertIsNotNone(c.sock, "certmapd closed the keep-alive connection")
        cfg = deep_merge(self.original, {"authorization": {
            "required_groups": ["CN=Domain Admins,CN=Users,DC=lab,DC=test"]}})
        self.d.write_config(cfg)
        self.d.reload()
        # c.sock is still open: http.client sends on the same connection (no reconnect)
        c.request("GET", EAS + "?after-reload")
        r = c.getresponse()
        body = r.read()
        self.assertEqual(r.status, 401, body[:300])
        self.assertTrue(body.startswith(b"401.3 - "), body[:100])
        c.close()
        # curl: two URLs on one connection after the change
        a = self.d.curl(None, cert="alice.pem", urls=[EAS + "?x=1", EAS + "?x=2"])
        self.assertEqual(a.codes, [401, 401], a)
        # and back
        self.d.write_config(self.original)
        self.d.reload()
        a = self.d.curl(None, cert="alice.pem", urls=[EAS + "?x=3", EAS + "?x=4"])
        self.assertEqual(a.codes, [200, 200], a)

    def test_broken_config_keeps_the_old_one(self):
        self.d.write_raw_config('{"listen": [ broken json')
        try:
            self.d.reload(expect_ok=False)
            self.assertIn("keeping the running configuration", self.d.stderr())
            self.echo(self.d.curl(EAS + "?after-broken", cert="alice.pem"))
            a = self.d.curl(EAS + "?after-broken", cert="bob.pem")
            self.assertErrorPage(a, 401, 3)
            # a config that parses but is invalid (unknown key)
            self.d.write_raw_config(json.dumps(deep_merge(self.original, {"bogus": 1})))
            self.d.reload(expect_ok=False)
            self.assertIn("bogus", self.d.stderr_tail(10))
            self.echo(self.d.curl(EAS + "?after-invalid", cert="alice.pem"))
        finally:
            self.d.write_config(self.original)
            self.d.config = self.original
        self.d.reload()
        self.assertAlive()


# ------------------------------------------------------------------------------------------
# 10. Bad input


class BadInput(CertmapdCase):

    @classmethod
    def setUpClass(cls):
        cls.d = start_certmapd("rough", {"server": {
            "client_timeout_s": 4, "handshake_timeout_s": 2, "request_header_timeout_s": 3,
            "max_request_head_bytes": 4096}})

    def tearDown(self):
        self.assertAlive()
        self.echo(self.d.curl(EAS + "?still-serving=" + tag(), cert="alice.pem"))

    def raw(self, data, timeout=5):
        s = socket.create_connection(("127.0.0.1", self.d.port), timeout=timeout)
        try:
            s.sendall(data)
            return recv_all(s, timeout)
        finally:
            s.close()

    def test_garbage_bytes(self):
        for data in (os.urandom(4096), b"\x16\x03\x01\x00\x05" + os.urandom(2000),
                     b"\x16" + b"\xff" * 10000, b"\x00" * 64, b"\r\n\r\n"):
            out, eof = self.raw(data)
            self.assertTrue(eof, "connection not closed after garbage %r" % data[:8])
        self.assertAlive()

    def test_plain_http_on_tls_port(self):
        t = tag()
        out, eof = self.raw(("GET %s?t=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                             % (EAS, t)).encode())
        self.assertTrue(out.startswith(b"HTTP/1.1 400 "), out[:200])
        self.assertTrue(eof)
        self.assertIn(b"plain HTTP request was sent to the HTTPS port", out)
        e = self.d.wait_access(lambda e: e["sc-status"] == "400" and e["cs-method"] == "-",
                               what="access line for the plain-HTTP request")
        self.assertEqual(e[-1]["_nfields"], 15)

    def test_oversized_head_answered(self):
        ctx = client_context("alice.pem")
        for size in (6000, 12000, 40000, 200000):
            s = tls_socket(self.d, ctx)
            try:
                req = ("GET %s?big=%d HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\nConnection: close"
                       "\r\n\r\n" % (EAS, size, "a" * size)).encode()
                try:
                    s.sendall(req)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass
                out, eof = recv_all(s, 8)
            finally:
                s.close()
            status, _, body = parse_raw_response(out)
            self.assertIsNotNone(status, "no answer to a %d-byte header: %r" % (size, out[:200]))
            self.assertTrue(400 <= status < 500, (size, status, body[:200]))
            self.assertAlive()
            # the access log says what the client got
            e = self.d.wait_access(lambda e, q="big=%d" % size: q in e["_line"],
                                   what="access line of the %d-byte head" % size)
            self.assertEqual(e[-1]["sc-status"], str(status), (size, e[-1]["_line"]))
        # just above max_request_head_bytes (4096) but within MHD's memory: certmapd's 431.0
        a = self.d.curl(EAS + "?t=" + tag(), cert="alice.pem",
                        args=["-H", "X-Big: " + "b" * 5000])
        self.assertErrorPage(a, 431, 0)

    def slow_sender(self, tls, results, key):
        """Sends one header byte per second; records when the server closed (s)."""
        t0 = time.monotonic()
        try:
            if tls:
                s = tls_socket(self.d, client_context("alice.pem"), timeout=30)
            else:
                s = socket.create_connection(("127.0.0.1", self.d.port), timeout=30)
                s.sendall(b"\x16")  # looks like TLS, then nothing useful
            s.settimeout(1.0)
            head = ("GET %s?slow HTTP/1.1\r\nHost: x\r\nX-Slow: %s\r\n\r\n"
                    % (EAS, "s" * 60)).encode()
            for b in head:
                try:
                    s.send(bytes([b]))
                except (OSError, ssl.SSLError):
                    results[key] = ("closed", time.monotonic() - t0)
                    return
                try:
                    data = s.recv(4096)
                    if not data:
                        results[key] = ("closed", time.monotonic() - t0)
                        return
                    results[key] = ("answered", time.monotonic() - t0, data[:100])
                    # an answer (408?) is fine; the close follows
                except (socket.timeout, TimeoutError):
                    pass
                except (OSError, ssl.SSLError):
                    results[key] = ("closed", time.monotonic() - t0)
                    return
                if time.monotonic() - t0 > 25:
                    break
            results[key] = ("still open", time.monotonic() - t0)
        finally:
            try:
                s.close()
            except Exception:
                pass

    def test_slow_sender_and_silent_client_closed(self):
        results = {}
        threads = [threading.Thread(target=self.slow_sender, args=(True, results, "tls"),
                                    daemon=True),
                   threading.Thread(target=self.slow_sender, args=(False, results, "pre-tls"),
                                    daemon=True)]
        for t in threads:
            t.start()
        # a client that connects and sends nothing: closed after handshake_timeout_s (2)
        t0 = time.monotonic()
        s = socket.create_connection(("127.0.0.1", self.d.port), timeout=20)
        out, eof = recv_all(s, 15)
        silent = time.monotonic() - t0
        s.close()
        # meanwhile certmapd serves others quickly
        short = []
        for i in range(5):
            s0 = time.monotonic()
            a = self.d.curl(EAS + "?during-slow=%d" % i, cert="alice.pem")
            short.append((a.status, round(time.monotonic() - s0, 3)))
            time.sleep(0.2)
        for t in threads:
            t.join(timeout=40)
        info = "silent: eof=%s after %.2f s; slow senders: %s; short requests: %s" % (
            eof, silent, results, short)
        self.assertTrue(eof, "a silent client was not closed in 15 s: " + info)
        self.assertLess(silent, 2 + 2.5, "handshake_timeout_s 2: " + info)
        self.assertTrue(all(st == 200 for st, _ in short), info)
        self.assertLess(max(t for _, t in short), 1.0, info)
        self.assertEqual(results.get("tls", ("?",))[0], "closed", info)
        self.assertLess(results["tls"][1], 3 + 4 + 2, "request_header_timeout_s 3 "
                        "(client_timeout_s 4): " + info)
        self.assertEqual(results.get("pre-tls", ("?",))[0], "closed", info)
        self.assertLess(results["pre-tls"][1], 3 + 4 + 2, info)

    def test_http2_preface_refused(self):
        # a TLS client sending an HTTP/2 preface (no ALPN): refused with an answer, not a crash
        time.sleep(1.2)  # earlier lines are flushed at most ~1 s late
        n0 = len(self.d.access_entries())
        s = tls_socket(self.d, client_context())
        try:
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(100))
            out, eof = recv_all(s, 5)
        finally:
            s.close()
        self.assertAlive()
        status, _, _ = parse_raw_response(out)
        self.assertIsNotNone(status, out[:200])
        self.assertTrue(400 <= status < 600, status)
        # Known limit, left unasserted: libmicrohttpd 0.9.75 refuses an HTTP/2.0 request line
        # before it reports the request to certmapd, so no access-log line is written for it
        # (certmapd never offers h2 in ALPN, so real HTTP/2 clients do not send this).
        del n0


# ------------------------------------------------------------------------------------------
# 11. Admin, metrics, the decision cache


class AdminAndCache(CertmapdCase):

    @classmethod
    def setUpClass(cls):
        cls.d = start_certmapd("metrics")

    def test_healthz_readyz(self):
        self.assertEqual(self.d.admin_get("/healthz"), (200, "ok\n"))
        self.assertEqual(self.d.admin_get("/readyz")[0], 200)
        self.assertEqual(self.d.admin_get("/nope")[0], 404)

    def test_cached_decisions_answer_quickly(self):
        # new connections with a cached certificate: a cache hit must not wait for anything
        self.echo(self.d.curl(EAS + "?warm-latency", cert="ivan.pem", chain="ivan-chain.pem",
                              scratch=SCRATCH))
        took = []
        for i in range(20):
            t = tag()
            t0 = time.monotonic()
            a = self.d.curl(EAS + "?lat=" + t, cert="ivan.pem", chain="ivan-chain.pem",
                            scratch=SCRATCH)
            took.append(round(time.monotonic() - t0, 3))
            self.assertEqual(a.status, 200, a)
        logged = [int(e["time-taken"]) for e in self.d.wait_access(
            lambda e: "lat=" in e["cs-uri-query"], what="latency lines")]
        self.assertLess(max(took), 0.5, "client-side seconds: %s; time-taken ms: %s"
                        % (took, logged))

    def test_metrics_and_cache_hits(self):
        m0 = self.d.metrics()
        allowed0 = m0.value("certmap_decisions_total", reason="allowed")
        hit0 = m0.value("certmap_cache_lookups_total", result="hit")
        miss0 = m0.value("certmap_cache_lookups_total", result="miss")
        lat0 = m0.value("certmap_directory_latency_seconds_count")
        ok0 = m0.value("certmap_requests_total", status=200, substatus=0)
        nig0 = m0.value("certmap_requests_total", status=401, substatus=3)
        sha = cert_sha256("carol2.pem")

        self.echo(self.d.curl(EAS + "?first", cert="carol2.pem"))
        m1 = self.d.metrics()
        self.assertEqual(m1.value("certmap_decisions_total", reason="allowed"), allowed0 + 1)
        self.assertEqual(m1.value("certmap_decisions_total", reason="allowed",
                                  method="user_certificate"), allowed0 + 1)
        self.assertEqual(m1.value("certmap_cache_lookups_total", result="miss"), miss0 + 1)
        self.assertGreater(m1.value("certmap_directory_latency_seconds_count"), lat0)
        self.assertEqual(len(self.d.audit_for_cert(sha)), 1)

        # a second request on a new connection with the same cert: a cache hit
        self.echo(self.d.curl(EAS + "?second", cert="carol2.pem"))
        # and two more on one keep-alive connection
        a = self.d.curl(None, cert="carol2.pem", urls=[EAS + "?third", EAS + "?fourth"])
        self.assertEqual(a.codes, [200, 200])
        a = self.d.curl(EAS + "?deny", cert="bob.pem")
        self.assertErrorPage(a, 401, 3)
        time.sleep(1.3)  # audit lines are written at most ~1 s late
        m2 = self.d.metrics()
        self.assertEqual(m2.value("certmap_decisions_total", reason="allowed"), allowed0 + 1,
                         "the directory was asked again for a cached certificate")
        self.assertEqual(m2.value("certmap_decisions_total", reason="not_in_group"), 1)
        self.assertEqual(m2.value("certmap_cache_lookups_total", result="miss"), miss0 + 2)
        self.assertGreaterEqual(m2.value("certmap_cache_lookups_total", result="hit"), hit0 + 1)
        self.assertEqual(len(self.d.audit_for_cert(sha)), 1, "audit line for a cache hit")
        self.assertEqual(m2.value("certmap_requests_total", status=200, substatus=0), ok0 + 4)
        self.assertEqual(m2.value("certmap_requests_total", status=401, substatus=3), nig0 + 1)
        # families a scraper relies on
        for fam in ("certmap_requests", "certmap_decisions", "certmap_cache_lookups",
                    "certmap_directory_latency_seconds", "certmap_upstream_errors",
                    "certmap_connections_open", "certmap_requests_held",
                    "certmap_config_reloads"):
            self.assertIn(fam, m2.fam, sorted(m2.fam))

    def test_upstream_error_metric(self):
        d = start_certmapd("metrics-updown",
                           upstream_url="http://127.0.0.1:%d" % closed_port())
        try:
            self.assertErrorPage(d.curl(EAS, cert="alice.pem"), 502, 3)
            # requests are counted when certmapd completes them (with the access-log line),
            # which may trail the client's receipt of the answer by a moment
            wait_for(lambda: d.metrics().value("certmap_requests_total", status=502,
                                               substatus=3) == 1, 3,
                     what="certmap_requests_total{502,3} == 1")
            m = d.metrics()
            self.assertEqual(m.value("certmap_upstream_errors_total",
                                     reason="upstream_unavailable"), 1)
            self.assertEqual(m.value("certmap_requests_total", status=502, substatus=3), 1)
        finally:
            self.assertEqual(d.stop(), 0)


# ------------------------------------------------------------------------------------------
# 12. SIGTERM drains


class Drain(CertmapdCase):

    def test_sigterm_drains_held_ping_and_exits_0(self):
        d = self.d = start_certmapd("drain", {"server": {"shutdown_timeout_s": 10}})
        ctx = client_context("alice.pem")
        self.echo(d.curl(EAS + "?warm", cert="alice.pem"))
        results = [None]
        held0 = UP.stats()["held_now"]
        t = threading.Thread(target=ping, args=(d, ctx, 3, results, 0), daemon=True)
        t.start()
        wait_for(lambda: UP.stats()["held_now"] > held0, 5, what="the Ping held upstream")
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        # a new request while draining is not served (refused, closed, held or 503)
        late = d.curl(EAS + "?during-drain", cert="alice.pem", timeout=2)
        rc = d.proc.wait(timeout=20)
        took = time.monotonic() - t0
        t.join(timeout=10)
        self.assertEqual(results[0] and results[0][0], 200, results)
        self.assertEqual(rc, 0, d.stderr_tail())
        self.assertLess(took, 10, "exited within shutdown_timeout_s")
        self.assertNotEqual(late.status, 200, "a new request was served while draining")
        self.assertIn("stopped", d.stderr())

    def test_sigterm_deadline_closes_longer_holds(self):
        d = self.d = start_certmapd("drain-deadline", {"server": {"shutdown_timeout_s": 1}})
        ctx = client_context("alice.pem")
        results = [None]
        held0 = UP.stats()["held_now"]
        t = threading.Thread(target=ping, args=(d, ctx, 30, results, 0), daemon=True)
        t.start()
        wait_for(lambda: UP.stats()["held_now"] > held0, 5, what="the Ping held upstream")
        t0 = time.monotonic()
        rc = d.stop(timeout=15)
        self.assertEqual(rc, 0, d.stderr_tail())
        self.assertLess(time.monotonic() - t0, 6)
        t.join(timeout=10)
        self.assertNotEqual(results[0] and results[0][0], 200)


# ------------------------------------------------------------------------------------------
# 13. GoAccess reads the access log


class GoAccess(CertmapdCase):

    def test_goaccess_counts_every_request(self):
        if shutil.which("goaccess") is None:
            skip_or_fail("goaccess not installed (Debian package goaccess)")
        d = self.d = start_certmapd("goaccess")
        want = {}

        def count(status):
            want[status] = want.get(status, 0) + 1

        for i in range(3):
            a = d.curl(EAS + "?Cmd=Sync&i=%d" % i, cert="alice.pem",
                       args=["-A", "Apple-iPhone9C1/1602.92"])
            self.assertEqual(a.status, 200)
            count(200)
        for i in range(2):
            self.assertEqual(d.curl(EAS + "?Cmd=Ping&i=%d" % i).status, 403)
            count(403)
        self.assertEqual(d.curl(EAS + "?Cmd=Sync", cert="bob.pem").status, 401)
        count(401)
        self.assertEqual(d.curl("/owa/a b?x=y z".replace(" ", "%20"), args=[
            "-H", "X-Lab-Status: 404", "-A", "Mozilla/5.0 (X11; Linux) with spaces"]).status, 404)
        count(404)
        self.assertEqual(d.curl(EAS + "/%2e%2e/%2e%2e/x", cert="alice.pem",
                                args=["--path-as-is"]).status, 400)
        count(400)
        s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        recv_all(s, 5)
        s.close()
        count(400)
        total = sum(want.values())
        wait_for(lambda: len(d.access_entries()) >= total, 4, what="%d access lines" % total)
        self.assertEqual(d.stop(), 0)
        self.assertEqual(len(d.access_entries()), total, d.access_raw())
        out = d.dir / "report.json"
        proc = subprocess.run(["goaccess", str(d.access_path), "--no-global-config",
                               "--log-format=W3C", "--date-format=%Y-%m-%d",
                               "--time-format=%H:%M:%S", "-o", str(out)],
                              capture_output=True, text=True, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        rep = json.loads(out.read_text())
        g = rep["general"]
        self.assertEqual(g["total_requests"], total, (g, d.access_raw()))
        self.assertEqual(g["failed_requests"], 0, (g, d.access_raw()))
        got = {}
        for group in rep["status_codes"]["data"]:
            for item in group["items"]:
                code = int(item["data"].split(" ", 1)[0])
                got[code] = got.get(code, 0) + item["hits"]["count"]
        self.assertEqual(got, want)


# ------------------------------------------------------------------------------------------
# 13a. The lean HTTP/1.1 client for http:// upstreams (server/upstream.c)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


LEAN_BIG = b"".join(hashlib.sha256(b"certmap-%d" % i).digest() for i in range(10000))  # 320 KB
# chunks of a chunked answer: small, larger than certmapd's 64 KiB buffers, a single byte;
# sizes in lower-case hex ("ab"), then upper-case ("3CFE4")
CHUNK_PARTS = [b"hello ", b"chunked ", LEAN_BIG[:171], LEAN_BIG[171:70171],
               LEAN_BIG[70171:70172], LEAN_BIG[70172:]]
CHUNK_EXTS = [b";ext=1", b' ; name="quoted;value"', b"", b";a;b=c", b"\t;x", b""]
CHUNKED_BODY = b"".join(CHUNK_PARTS)
TRUNCATED_FULL = b"0123456789" + LEAN_BIG[:1024]  # what /truncchunked announces


class ScriptedUpstream:
    """An HTTP/1.1 upstream on a thread, answering by the last segment of the path (answer()).
    Every request it reads is logged with its connection number, its place on that connection
    (seq, from 1), request line, headers (lower-case names), body length and SHA-256, the peer
    address, and whether it was dropped unanswered (a connection marked by /closenext)."""

    def __init__(self, host="127.0.0.1", port=0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.log = []
        self.conns = {}   # number -> socket, while open
        self.marked = {}  # number -> socket: the next request on it is dropped unanswered
        self.n = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def requests(self, t):
        """The requests whose request line holds the tag t, in the order read."""
        with self.lock:
            return [e for e in self.log if t in e["line"]]

    def close_marked(self):
        """Closes the connections /closenext marked (certmapd sees them close while idle)."""
        with self.lock:
            marked, self.marked = list(self.marked.items()), {}
        for _, s in marked:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return [n for n, _ in marked]

    def close(self):
        with self.lock:
            socks = [self.sock] + list(self.conns.values())
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.n += 1
                n = self.n
                self.conns[n] = c
            threading.Thread(target=self._serve, args=(c, n), daemon=True).start()

    def _serve(self, c, n):
        f = c.makefile("rb")
        seq = 0
        try:
            while True:
                line = f.readline(65536)
                if not line:
                    return
                headers = {}
                while True:
                    h = f.readline(65536)
                    if not h:
                        return
                    if h in (b"\r\n", b"\n"):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = b""
                if "content-length" in headers:
                    body = f.read(int(headers["content-length"]))
                elif headers.get("transfer-encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(f.readline(1024).split(b";")[0].strip(), 16)
                        if size == 0:
                            while f.readline(65536) not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        parts.append(f.read(size))
                        f.readline(16)
                    body = b"".join(parts)
                seq += 1
                with self.lock:
                    dropped = self.marked.pop(n, None) is not None
                    e = {"conn": n, "seq": seq, "line": line.decode("latin-1").rstrip("\r\n"),
                         "headers": headers, "body_len": len(body), "sha256": sha256(body),
                         "peer": c.getpeername()[0], "dropped": dropped}
                    self.log.append(e)
                if dropped or not self.answer(c, n, e):
                    return
        except (OSError, ValueError):
            return
        finally:
            with self.lock:
                self.conns.pop(n, None)
                self.marked.pop(n, None)
            f.close()
            c.close()

    def echo(self, c, e):
        body = json.dumps(e).encode()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    def answer(self, c, n, e):
        """Sends the answer; False: the connection is closed after it."""
        method, target = e["line"].split(" ")[:2]
        name = target.split("?")[0].rsplit("/", 1)[-1]
        send = c.sendall
        if method == "HEAD":  # a length, no body
            send(b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\nX-H: 1\r\n\r\n")
        elif name == "chunked":  # extensions, mixed-case hex sizes, trailers
            send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n")
            for i, (part, ext) in enumerate(zip(CHUNK_PARTS, CHUNK_EXTS)):
                send((b"%X" if i >= 4 else b"%x") % len(part) + ext + b"\r\n" + part + b"\r\n")
            send(b"0;last=1\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n")
        elif name == "close":  # no length: the body ends with the connection
            send(b"HTTP/1.1 200 OK\r\nX-B: 2\r\n\r\n" + LEAN_BIG)
            return False
        elif name == "http10":  # HTTP/1.0 with a length; the connection is left open
            send(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nten!!")
        elif name == "http10close":
            send(b"HTTP/1.0 200 OK\r\nX-D: 4\r\n\r\n" + LEAN_BIG[:100000])
            return False
        elif name == "204":
            send(b"HTTP/1.1 204 No Content\r\nX-C: 3\r\n\r\n")
        elif name == "304":
            send(b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 99\r\n\r\n')
        elif name in ("bigok", "bighead"):  # 6 KB, then 70 KB of header lines
            k = 6 if name == "bigok" else 70
            send(b"HTTP/1.1 200 OK\r\n" +
                 b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 1000) for i in range(k)) +
                 b"Content-Length: 2\r\n\r\nok")
            return name == "bigok"
        elif name == "bigline":  # one header line of 70 KB
            send(b"HTTP/1.1 200 OK\r\nX-Huge: " + b"v" * 70000 + b"\r\nContent-Length: 2\r\n\r\nok")
            return False
        elif name == "garbage":
            send(b"FOO BAR\r\n\r\n")
            return False
        elif name == "badstatus":
            send(b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok")
            return False
        elif name == "truncchunked":  # announces a 0x400 chunk, sends 100 bytes of it, closes
            send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"a\r\n0123456789\r\n400\r\n" + LEAN_BIG[:100])
            return False
        elif name == "badchunk":  # a chunk size that is not hex
            send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"a\r\n0123456789\r\nzz\r\n")
            return False
        elif name == "silent":  # reads the request, never answers
            c.recv(1)  # until certmapd gives up and closes
            return False
        elif name == "dropafter":  # answers, then closes the idle connection
            self.echo(c, e)
            time.sleep(0.05)
            return False
        elif name == "closenext":  # answers; the next request on the connection is dropped
            with self.lock:
                self.marked[n] = c
            self.echo(c, e)
        elif name == "hop":
            send(b"HTTP/1.1 200 OK\r\nConnection: X-Foo\r\nX-Foo: 1\r\n"
                 b"Keep-Alive: timeout=5, max=100\r\nProxy-Connection: keep-alive\r\n"
                 b"X-Keep: 1\r\nContent-Length: 2\r\n\r\nok")
        else:
            self.echo(c, e)
        return True


class PlainHttpUpstream(CertmapdCase):
    """The lean HTTP/1.1 client for http:// upstreams (server/upstream.c) against a scripted
    upstream: response framing (chunked with extensions and trailers, until close, HTTP/1.0,
    HEAD / 204 / 304), refusals (a head over 64 KiB, garbage, a truncated body, a silent
    upstream), the keep-alive pool (reuse, a connection the upstream closed while idle, a
    request dropped on a reused connection, bodies on new connections), uploads, hop-by-hop
    response headers, and the fallback over a name's addresses. One event loop
    (server.threads 1): consecutive requests share one pool, and the connection a request
    takes from it is the one the previous exchange gave back."""

    @classmethod
    def setUpClass(cls):
        cls.up = ScriptedUpstream()
        url = "http://127.0.0.1:%d/pre" % cls.up.port
        cls.d = start_certmapd("lean", {"server": {"threads": 1},
                                        "upstream": {"timeout_s": 10}}, upstream_url=url)
        cls.slow = start_certmapd("lean-timeout", {"server": {"threads": 1},
                                                   "upstream": {"timeout_s": 1}},
                                  upstream_url=url)

    @classmethod
    def tearDownClass(cls):
        cls.up.close()

    def get(self, name, args=(), d=None):
        t = tag()
        return t, (d or self.d).curl("/pl/%s?t=%s" % (name, t), args=args, timeout=10)

    def echoed(self, a):
        """The upstream's echo (its log entry of the request) from a 200 answer."""
        self.assertEqual((a.status, a.rc), (200, 0), "%r%s" % (a, self.diag()))
        return a.json()

    def logged(self, t, name, status, substatus=0, win32=0, method="GET"):
        e = self.d.access_for(t)
        self.assertAccess(e, method, "/pl/" + name, "t=" + t, "-", status, substatus)
        self.assertEqual(e["sc-win32-status"], str(win32), e["_line"])
        return e

    def upstream_errors(self, text, d=None):
        """How many times certmapd logged 'upstream: <text>' (curl's text for the code)."""
        return (d or self.d).stderr().count("upstream: " + text)

    def wait_upstream_error(self, text, n0, d=None):
        wait_for(lambda: self.upstream_errors(text, d) > n0, 3,
                 what="certmapd logging 'upstream: %s'" % text)
        self.assertEqual(self.upstream_errors(text, d), n0 + 1)

    def test_get_request_head_as_sent(self):
        t = tag()
        a = self.d.curl("/pl/echo?q=%2F+x&t=" + t, args=["-H", "X-Client: 1"], timeout=10)
        e = self.echoed(a)
        self.assertEqual(e["line"], "GET /pre/pl/echo?q=%%2F+x&t=%s HTTP/1.1" % t)
        h = e["headers"]
        self.assertEqual(h.get("host"), "127.0.0.1:%d" % self.up.port, h)
        self.assertEqual(h.get("accept"), "*/*", h)
        self.assertEqual(h.get("x-client"), "1", h)
        self.assertEqual(h.get("x-forwarded-proto"), "https", h)
        self.assertEqual(h.get("x-forwarded-for"), "127.0.0.1", h)
        self.assertNotIn("content-length", h)
        self.assertNotIn("transfer-encoding", h)
        self.assertEqual((e["body_len"], len(self.up.requests(t))), (0, 1))
        self.assertAccess(self.d.access_for(t), "GET", "/pl/echo", "q=%2F+x&t=" + t, "-", 200, 0)

    def test_chunked_response_whole_body_then_connection_reused(self):
        first = self.echoed(self.get("echo")[1])
        t, a = self.get("chunked")
        self.assertEqual((a.status, a.rc), (200, 0), a)
        self.assertEqual(len(a.body), len(CHUNKED_BODY))
        self.assertEqual(sha256(a.body), sha256(CHUNKED_BODY))
        self.assertEqual(a.headers.get("x-a"), "1", a.raw_headers)
        self.logged(t, "chunked", 200)
        # the trailers were read to their end: the connection served the next request
        r = self.up.requests(t)
        self.assertEqual([(x["conn"], x["seq"]) for x in r], [(first["conn"], first["seq"] + 1)])
        after = self.echoed(self.get("echo")[1])
        self.assertEqual((after["conn"], after["seq"]), (first["conn"], first["seq"] + 2))

    def test_response_until_close(self):
        t, a = self.get("close")
        self.assertEqual((a.status, a.rc), (200, 0), a)
        self.assertEqual(len(a.body), len(LEAN_BIG))
        self.assertEqual(sha256(a.body), sha256(LEAN_BIG))
        self.assertEqual(a.headers.get("x-b"), "2", a.raw_headers)
        self.logged(t, "close", 200)
        after = self.echoed(self.get("echo")[1])
        self.assertNotEqual(after["conn"], self.up.requests(t)[0]["conn"])

    def test_http10_responses(self):
        t, a = self.get("http10")
        self.assertEqual((a.status, a.rc, a.body), (200, 0, b"ten!!"), a)
        self.logged(t, "http10", 200)
        # the upstream left it open, but an HTTP/1.0 connection is not reused
        after = self.echoed(self.get("echo")[1])
        self.assertNotEqual(after["conn"], self.up.requests(t)[0]["conn"])
        t, a = self.get("http10close")
        self.assertEqual((a.status, a.rc), (200, 0), a)
        self.assertEqual(sha256(a.body), sha256(LEAN_BIG[:100000]))
        self.assertEqual(a.headers.get("x-d"), "4", a.raw_headers)
        self.logged(t, "http10close", 200)

    def test_head_204_304_without_body(self):
        conn = https_connection(self.d, client_context(), timeout=5)

        def req(method, name):
            t = tag()
            conn.request(method, "/pl/%s?t=%s" % (name, t))
            r = conn.getresponse()
            return t, r, r.read()
        try:
            t0, r0, b0 = req("GET", "echo")
            self.assertEqual(r0.status, 200, b0)
            first = json.loads(b0)
            t1, r1, b1 = req("HEAD", "head")
            self.assertEqual((r1.status, b1, r1.getheader("X-H")), (200, b"", "1"))
            self.assertEqual(self.up.requests(t1)[0]["line"], "HEAD /pre/pl/head?t=%s HTTP/1.1"
                             % t1)
            t2, r2, b2 = req("GET", "204")
            self.assertEqual((r2.status, b2, r2.getheader("X-C")), (204, b"", "3"))
            t3, r3, b3 = req("GET", "304")
            self.assertEqual((r3.status, b3, r3.getheader("ETag")), (304, b"", '"v1"'))
            t4, r4, b4 = req("GET", "echo")
            self.assertEqual(r4.status, 200, b4)
            last = json.loads(b4)
        finally:
            conn.close()
        # no body was waited for: all on the one upstream connection, in order
        self.assertEqual((last["conn"], last["seq"]), (first["conn"], first["seq"] + 4))
        self.logged(t1, "head", 200, method="HEAD")
        self.logged(t2, "204", 204)
        self.logged(t3, "304", 304)

    def test_response_head_over_64k_is_502_3(self):
        t, a = self.get("bigok")  # a large head under the limit passes
        self.assertEqual((a.status, a.body), (200, b"ok"), a)
        self.assertEqual(a.headers.get("x-big-5"), "v" * 1000)
        n0 = self.upstream_errors("Failed writing received data to disk/application")
        for name in ("bighead", "bigline"):
            t, a = self.get(name)
            self.assertErrorPage(a, 502, 3)
            self.logged(t, name, 502, 3)
            self.assertEqual(len(self.up.requests(t)), 1)
        wait_for(lambda: self.upstream_errors(
            "Failed writing received data to disk/application") == n0 + 2, 3,
            what="two 'Failed writing' upstream errors (CURLE_WRITE_ERROR)")

    def test_garbage_instead_of_status_line_is_502_3(self):
        for name, err in (("garbage", "Unsupported protocol"),
                          ("badstatus", "Weird server reply")):
            n0 = self.upstream_errors(err)
            t, a = self.get(name)
            self.assertErrorPage(a, 502, 3)
            self.logged(t, name, 502, 3)
            self.assertEqual(len(self.up.requests(t)), 1, "not sent again")
            self.wait_upstream_error(err, n0)

    def test_truncated_chunked_body(self):
        for name, err in (("truncchunked", "Transferred a partial file"),
                          ("badchunk", "Failure when receiving data from the peer")):
            n0 = self.upstream_errors(err)
            t, a = self.get(name)
            # the head went out before the body broke: 200, then the client's transfer fails
            self.assertEqual(a.status, 200, a)
            self.assertEqual(a.rc, 18, "curl: partial file %r" % a)
            self.assertLess(len(a.body), len(TRUNCATED_FULL), a)
            self.assertEqual(a.body, TRUNCATED_FULL[:len(a.body)], a)
            self.wait_upstream_error(err, n0)
            # the status sent, and sc-win32-status 12030 (ERROR_WINHTTP_CONNECTION_ERROR, as
            # ARR logs an upstream that broke off): the line tells the short transfer apart
            self.logged(t, name, 200, 0, 12030)
            self.assertEqual(len(self.up.requests(t)), 1)

    def test_silent_upstream_504(self):
        self.d = d = self.slow  # upstream.timeout_s 1
        n0 = self.upstream_errors("Timeout was reached", d)
        t0 = time.monotonic()
        t, a = self.get("silent", d=d)
        took = time.monotonic() - t0
        self.assertErrorPage(a, 504, 0)
        self.assertGreaterEqual(took, 0.9)
        self.assertLess(took, 5, "upstream.timeout_s 1")
        self.logged(t, "silent", 504, 0)
        self.assertEqual(len(self.up.requests(t)), 1, "a timed-out request is not sent again")
        self.wait_upstream_error("Timeout was reached", n0, d)

    def test_connection_closed_while_idle(self):
        t0, a0 = self.get("dropafter")
        gone = self.echoed(a0)["conn"]
        wait_for(lambda: gone not in self.up.conns, 3, what="the upstream closing it")
        time.sleep(0.2)  # certmapd sees the idle connection close
        t, a = self.get("echo")
        e = self.echoed(a)
        self.assertNotEqual(e["conn"], gone)
        self.assertEqual([x["dropped"] for x in self.up.requests(t)], [False], "seen once")
        self.logged(t, "echo", 200)

    def test_reused_connection_dropped_then_retried_on_a_new_one(self):
        marked = self.echoed(self.get("closenext")[1])["conn"]
        t, a = self.get("echo")  # takes the marked connection: read, then dropped unanswered
        e = self.echoed(a)
        self.assertNotEqual(e["conn"], marked)
        self.assertEqual(e["seq"], 1, "retried on a new connection")
        self.assertEqual([(x["conn"], x["dropped"]) for x in self.up.requests(t)],
                         [(marked, True), (e["conn"], False)], "answered once, after one drop")
        self.logged(t, "echo", 200)

    def test_request_with_body_goes_on_a_new_connection(self):
        body = LEAN_BIG[:100000]
        path = SCRATCH.path / "lean-body.bin"
        path.write_bytes(body)
        marked = self.echoed(self.get("closenext")[1])["conn"]
        try:
            # a request with a body is never retried: it must not take the pooled
            # connection (which would drop it)
            t, a = self.get("echo", args=["--data-binary", "@%s" % path])
            e = self.echoed(a)
            self.assertEqual(e["line"], "POST /pre/pl/echo?t=%s HTTP/1.1" % t)
            self.assertNotEqual(e["conn"], marked)
            self.assertEqual(e["seq"], 1)
            self.assertEqual((e["body_len"], e["sha256"]), (len(body), sha256(body)))
            self.assertEqual(e["headers"].get("content-length"), str(len(body)))
            self.assertEqual([x["dropped"] for x in self.up.requests(t)], [False])
            self.logged(t, "echo", 200, method="POST")
        finally:
            self.up.close_marked()
        wait_for(lambda: marked not in self.up.conns, 3, what="the marked connection closed")
        time.sleep(0.2)

    def test_chunked_upload_exact_bytes(self):
        data = os.urandom(1 << 20)
        path = SCRATCH.path / "lean-upload.bin"
        path.write_bytes(data)
        for framing, args in (("chunked", ["-H", "Transfer-Encoding: chunked"]),
                              ("length", [])):
            t, a = self.get("echo", args=args + ["--data-binary", "@%s" % path])
            e = self.echoed(a)
            self.assertEqual((e["body_len"], e["sha256"]), (len(data), sha256(data)), framing)
            h = e["headers"]
            if framing == "chunked":
                self.assertEqual(h.get("transfer-encoding"), "chunked", h)
                self.assertNotIn("content-length", h)
            else:
                self.assertEqual(h.get("content-length"), str(len(data)), h)
                self.assertNotIn("transfer-encoding", h)
            self.assertEqual(e["seq"], 1, "a body goes on a new connection")
            self.logged(t, "echo", 200, method="POST")
        t, a = self.get("echo", args=["-X", "PUT", "-H", "Transfer-Encoding: chunked",
                                      "--data-binary", ""])
        e = self.echoed(a)
        self.assertEqual((e["line"].split(" ")[0], e["body_len"]), ("PUT", 0))
        self.logged(t, "echo", 200, method="PUT")

    def test_hop_by_hop_response_headers_not_forwarded(self):
        first = self.echoed(self.get("echo")[1])
        t, a = self.get("hop")
        self.assertEqual((a.status, a.rc, a.body), (200, 0, b"ok"), a)
        self.assertEqual(a.headers.get("x-keep"), "1", a.raw_headers)
        for h in ("x-foo", "keep-alive", "proxy-connection"):
            self.assertNotIn(h, a.headers, a.raw_headers)
        self.assertNotIn("x-foo", a.headers.get("connection", "").lower(), a.raw_headers)
        self.logged(t, "hop", 200)
        # "Connection: X-Foo" does not close: the connection stays in the pool
        r = self.up.requests(t)[0]
        self.assertEqual((r["conn"], r["seq"]), (first["conn"], first["seq"] + 1))
        after = self.echoed(self.get("echo")[1])
        self.assertEqual((after["conn"], after["seq"]), (first["conn"], first["seq"] + 2))

    def test_hostname_falls_back_to_the_address_that_listens(self):
        # "localhost" as ::1 then 127.0.0.1 (a private /etc/hosts in a mount namespace);
        # the upstream listens on 127.0.0.1 only
        hosts = SCRATCH.path / "lean-hosts"
        hosts.write_text("::1 localhost\n127.0.0.1 localhost\n")
        wrapper = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                   'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts)]
        probe = subprocess.run(wrapper + [sys.executable, "-c", "import socket; print(' '.join("
                                          "a[4][0] for a in socket.getaddrinfo('localhost', 80, "
                                          "type=socket.SOCK_STREAM)))"],
                               capture_output=True, text=True, timeout=10)
        if probe.returncode != 0:
            skip_or_fail("no private /etc/hosts (unshare --mount): %s" % probe.stderr.strip())
        self.assertEqual(probe.stdout.split(), ["::1", "127.0.0.1"],
                         "getaddrinfo order (as certmapd resolves the name)")
        up = ScriptedUpstream()
        try:
            with self.assertRaises(OSError):
                socket.create_connection(("::1", up.port), timeout=2).close()
            d = Certmapd(SCRATCH.path, "lean-localhost", AD, "http://localhost:%d/pre" % up.port,
                         {"server": {"threads": 1}, "upstream": {"timeout_s": 5}})
            d.wrapper = wrapper
            INSTANCES.append(d)
            self.d = d.start()
            seen = []
            for _ in range(2):
                t, a = self.get("echo")
                seen.append(self.echoed(a))
                self.logged(t, "echo", 200)
            self.assertEqual(seen[0]["headers"].get("host"), "localhost:%d" % up.port)
            self.assertEqual(seen[0]["peer"], "127.0.0.1")
            # the connection to the second address is pooled and reused
            self.assertEqual((seen[1]["conn"], seen[1]["seq"]), (seen[0]["conn"], 2))
            self.assertEqual(d.stop(), 0)
        finally:
            up.close()


if __name__ == "__main__":
    unittest.main()


# ------------------------------------------------------------------------------------------
# 14. Operations: certmapd -t, secret files, privilege drop


class Operations(unittest.TestCase):
    def make(self, name, overrides=None):
        return Certmapd(SCRATCH.path, name, AD, UP.url, overrides or {})

    def config_test(self, d):
        return subprocess.run([str(CERTMAPD), "-t", "--config", str(d.config_path)],
                              capture_output=True, text=True, timeout=60)

    def test_config_test_ok(self):
        d = self.make("ops-ok")
        r = self.config_test(d)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "%s: configuration OK" % d.config_path)

    def test_config_test_reports_every_error_with_its_path(self):
        d = self.make("ops-bad", {"server": {"threads": "many"}, "upstream": {"urll": "x"},
                                  "errors": "loud"})
        r = self.config_test(d)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        lines = r.stderr.strip().splitlines()
        for frag in ("$.server.threads: expected", "$.upstream.urll: unknown key",
                     "$.errors: expected"):
            self.assertTrue(any(l.startswith("%s: %s" % (d.config_path, frag)) for l in lines),
                            (frag, lines))

    def test_key_readable_by_others_is_refused(self):
        d = self.make("ops-key")
        os.chmod(d.key, 0o644)
        r = self.config_test(d)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("$.listen[0].key", r.stderr)
        self.assertIn("readable by group or others", r.stderr)
        # and the daemon itself refuses to start with it
        p = subprocess.run([str(CERTMAPD), "--config", str(d.config_path)], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("mode 0644", p.stderr)

    def test_certificate_and_key_must_match(self):
        d = self.make("ops-pair")
        other = d.dir / "alice.key"
        shutil.copy(PKI / "alice.key", other)
        os.chmod(other, 0o600)
        cfg = d.config
        cfg["listen"][0]["key"] = str(other)
        d.write_config(cfg)
        r = self.config_test(d)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("do not load as a pair", r.stderr)

    def test_privilege_drop(self):
        """With "user", every thread runs as that user after binding; logs it may write stay
        usable, and requests are served."""
        import pwd
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            skip_or_fail("no user 'nobody'")
        d = self.make("ops-user", {"user": "nobody"})
        os.chmod(d.dir, 0o777)  # the access and audit logs are created before the switch
        d.start()
        try:
            tasks = os.listdir("/proc/%d/task" % d.pid)
            self.assertGreater(len(tasks), 2)
            for t in tasks:
                status = open("/proc/%d/task/%s/status" % (d.pid, t)).read()
                uid = [l for l in status.splitlines() if l.startswith("Uid:")][0].split()[1:]
                gid = [l for l in status.splitlines() if l.startswith("Gid:")][0].split()[1:]
                self.assertEqual(set(uid), {str(nobody.pw_uid)}, (t, uid))
                self.assertEqual(set(gid), {str(nobody.pw_gid)}, (t, gid))
                groups = [l for l in status.splitlines() if l.startswith("Groups:")][0]
                self.assertEqual(groups.split()[1:], [], groups)
            a = d.curl(EAS + "?t=" + tag(), cert="alice.pem")
            self.assertEqual(a.status, 200, a)
        finally:
            d.stop()
