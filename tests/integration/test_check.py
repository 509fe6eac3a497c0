"""`certmapctl check` end to end against real directories: Samba AD (dialect ad) and slapd
(dialect rfc4523), seeded from certs-fixtures/accounts.json. One row = certificate, request,
config change → expected reason, status.substatus, mapped account, exit code.
"""

import os
import stat
import time
import unittest

from certmap_test import (PKI, SilentServer, Workdir, base_config, closed_port, deep_merge,
                          run_check, skip_or_fail)
from harness import SambaAD, Slapd

AD = None
LDAP = None
WORK = None

ALLOW, DENY, USAGE = 0, 1, 2


def setUpModule():
    global AD, LDAP, WORK
    if os.geteuid() != 0:
        skip_or_fail("Samba AD needs root and a private network namespace")
    WORK = Workdir("certmap-it-check-")
    AD = SambaAD(str(WORK.path / "ad"))
    AD.start()
    AD.seed()
    LDAP = Slapd(str(WORK.path / "slapd"))
    LDAP.start()
    LDAP.seed()


def tearDownModule():
    for d in (AD, LDAP):
        if d is not None:
            d.stop()
    if WORK is not None:
        WORK.remove()


STATUS = {
    "allowed": (200, 0), "untrusted": (403, 16), "expired": (403, 17), "not_yet_valid": (403, 17),
    "revoked": (403, 13), "revocation_unknown": (403, 13), "not_mapped": (401, 2),
    "ambiguous": (403, 12), "account_disabled": (401, 1), "account_locked": (401, 1),
    "account_expired": (401, 1), "basic_user_mismatch": (401, 1), "not_in_group": (401, 3),
    "directory_unavailable": (503, 0),
}

# (cert, chain, basic user, config override, reason, mapped account or None)
COMMON_ROWS = [
    ("alice.pem", None, None, {}, "allowed", "alice"),
    ("alice.der", None, None, {}, "allowed", "alice"),
    ("alice-chain.pem", None, None, {}, "allowed", "alice"),
    ("bob.pem", None, None, {}, "not_in_group", "bob"),
    ("carol.pem", None, None, {}, "allowed", "carol"),
    ("carol2.pem", None, None, {}, "allowed", "carol"),
    ("ivan.pem", None, None, {}, "untrusted", None),
    ("ivan.pem", "ivan-chain.pem", None, {}, "allowed", "ivan"),
    ("shared.pem", None, None, {}, "ambiguous", None),
    ("shared.pem", None, "gina", {}, "ambiguous", None),
    ("shared.pem", None, "gina", {"mapping": {"on_ambiguous": "basic_user"}}, "allowed", "gina"),
    ("shared.pem", None, "alice", {"mapping": {"on_ambiguous": "basic_user"}}, "ambiguous", None),
    ("shared.pem", None, None, {"mapping": {"on_ambiguous": "basic_user"}}, "ambiguous", None),
    ("mallory-selfsigned.pem", None, None, {}, "untrusted", None),
    ("judy-revoked.pem", None, None, {}, "revoked", None),
    ("judy-revoked.pem", None, None, {"client_certificates": {"revocation": {"mode": "off"}}},
     "allowed", "judy"),
    ("alice.pem", None, None, {"client_certificates": {"revocation": {
        "mode": "hard", "crl_files": [str(PKI / "issuing-ca-stale.crl.pem")]}}},
     "revocation_unknown", None),
    ("judy-revoked.pem", None, None, {"client_certificates": {"revocation": {
        "mode": "soft", "crl_files": [str(PKI / "issuing-ca-stale.crl.pem")]}}}, "revoked", None),
    ("kim-expired.pem", None, None, {}, "expired", None),
    ("leo-notyet.pem", None, None, {}, "not_yet_valid", None),
    ("mike-serverauth.pem", None, None, {}, "untrusted", None),
    ("nina-large.pem", None, None, {}, "allowed", "nina"),
    ("oscar-meta.pem", None, None, {}, "allowed", "oscar"),
    ("pat.pem", None, None, {}, "allowed", "pat"),
    ("peggy-unmapped.pem", None, None, {}, "not_mapped", None),
    ("serialdup.pem", None, None, {}, "not_mapped", None),
    ("rogue-alice.pem", "rogue-ca.pem", None, {}, "untrusted", None),
    ("victor-untrusted.pem", "other-ca.pem", None, {}, "untrusted", None),
    ("garbage.pem", None, None, {}, "untrusted", None),
    ("truncated.der", None, None, {}, "untrusted", None),
    ("notacert.pem", None, None, {}, "untrusted", None),
    # Basic binding
    ("alice.pem", None, "alice", {"authorization": {"basic_user_binding": "if_present"}},
     "allowed", "alice"),
    ("alice.pem", None, "alice@lab.test", {"authorization": {"basic_user_binding": "required"}},
     "allowed", "alice"),
    ("alice.pem", None, "bob", {"authorization": {"basic_user_binding": "if_present"}},
     "basic_user_mismatch", "alice"),
    ("alice.pem", None, None, {"authorization": {"basic_user_binding": "if_present"}},
     "allowed", "alice"),
    ("alice.pem", None, None, {"authorization": {"basic_user_binding": "required"}},
     "basic_user_mismatch", "alice"),
    ("alice.pem", None, "bob", {"authorization": {"basic_user_binding": "off"}}, "allowed", "alice"),
]

AD_ROWS = [
    ("dave.pem", None, None, {}, "account_disabled", "dave"),
    ("erin.pem", None, None, {}, "account_expired", "erin"),
    ("frank.pem", None, None, {}, "account_locked", "frank"),
    ("dave.pem", None, None, {"authorization": {"check_account_state": False}}, "allowed", "dave"),
    ("shared.pem", None, "LAB\\hank", {"mapping": {"on_ambiguous": "basic_user"}}, "allowed", "hank"),
    ("alice.pem", None, "LAB\\alice", {"authorization": {"basic_user_binding": "required"}},
     "allowed", "alice"),
    ("alice.pem", None, "lab\\ALICE", {"authorization": {"basic_user_binding": "required"}},
     "allowed", "alice"),
    ("alice.pem", None, "OTHER\\alice", {"authorization": {"basic_user_binding": "required"}},
     "basic_user_mismatch", "alice"),
    # two required groups: alice is in both (nested), carol only in ActiveSync Users
    ("alice.pem", None, None, {"authorization": {"required_groups": [
        "CN=ActiveSync Users,CN=Users,DC=lab,DC=test", "CN=Sales,CN=Users,DC=lab,DC=test"]}},
     "allowed", "alice"),
    ("carol.pem", None, None, {"authorization": {"required_groups": [
        "CN=ActiveSync Users,CN=Users,DC=lab,DC=test", "CN=Sales,CN=Users,DC=lab,DC=test"]}},
     "not_in_group", "carol"),
    # a required group that does not exist denies (fail closed)
    ("alice.pem", None, None, {"authorization": {"required_groups": [
        "CN=No Such Group,CN=Users,DC=lab,DC=test"]}}, "not_in_group", "alice"),
    # DNs compare as the directory compares them
    ("alice.pem", None, None, {"authorization": {"required_groups": [
        "cn=activesync users, cn=users, dc=LAB, dc=test"]}}, "allowed", "alice"),
]

LDAP_ROWS = [
    # rfc4523 has no account state: these accounts are ordinary there
    ("dave.pem", None, None, {}, "allowed", "dave"),
    ("alice.pem", None, None, {"authorization": {"required_groups": [
        "cn=ActiveSync Users,ou=groups,dc=lab,dc=test", "cn=Sales,ou=groups,dc=lab,dc=test"]}},
     "allowed", "alice"),
    ("carol.pem", None, None, {"authorization": {"required_groups": [
        "cn=ActiveSync Users,ou=groups,dc=lab,dc=test", "cn=Sales,ou=groups,dc=lab,dc=test"]}},
     "not_in_group", "carol"),
    ("alice.pem", None, None, {"authorization": {"required_groups": [
        "cn=No Such Group,ou=groups,dc=lab,dc=test"]}}, "not_in_group", "alice"),
    ("alice.pem", None, None, {"authorization": {"required_groups": [
        "CN=activesync users,OU=Groups,DC=LAB,DC=TEST"]}}, "allowed", "alice"),
]


class TableMixin:
    directory = None

    def check_row(self, row, cfg_extra=None):
        cert, chain, basic, override, reason, account = row
        cfg = base_config(self.directory(), **deep_merge(override, cfg_extra or {}))
        res = run_check(WORK.write_config(cfg), cert, chain=chain, basic_user=basic)
        label = "%s chain=%s basic=%s override=%s" % (cert, chain, basic, override)
        self.assertIsNotNone(res.json, "%s: %r" % (label, res))
        j = res.json
        self.assertEqual(j["reason"], reason, "%s: %s" % (label, j))
        status, sub = STATUS[reason]
        self.assertEqual((j["status"], j["substatus"]), (status, sub), label)
        self.assertEqual(j["decision"], "allow" if reason == "allowed" else "deny", label)
        self.assertEqual(res.rc, ALLOW if reason == "allowed" else DENY, label)
        if account is None:
            self.assertIsNone(j["user"], label)
        else:
            self.assertIsNotNone(j["user"], "%s: %s" % (label, j))
            self.assertEqual(j["user"]["name"], account, label)
            self.assertEqual(j["method"], "user_certificate", label)
        self.assertIsInstance(j["trace"], list)
        self.assertTrue(j["trace"], label)
        if j["certificate"] is not None:
            self.assertRegex(j["certificate"]["sha256"], r"^[0-9a-f]{64}$")
        return j

    def run_rows(self, rows):
        for row in rows:
            with self.subTest(row=row[:3], override=row[3]):
                self.check_row(row)


class ActiveDirectory(TableMixin, unittest.TestCase):
    directory = staticmethod(lambda: AD)

    def test_table(self):
        self.run_rows(COMMON_ROWS + AD_ROWS)

    def test_allowed_user_fields(self):
        j = self.check_row(COMMON_ROWS[0])
        self.assertEqual(j["user"], {"dn": "CN=alice,CN=Users,DC=lab,DC=test", "name": "alice",
                                     "sAMAccountName": "alice",
                                     "userPrincipalName": "alice@lab.test"})
        c = j["certificate"]
        self.assertEqual(c["subject"], "CN=alice,OU=Users,O=Certmap Lab,C=US")
        self.assertEqual(c["issuer"], "CN=Lab Issuing CA,O=Certmap Lab,C=US")
        self.assertEqual(c["serial"], "3001")
        self.assertEqual(c["not_after"], "2125-01-01T00:00:00Z")

    def test_cert_added_to_second_account_becomes_ambiguous(self):
        """Users may write their own userCertificate: a colleague's cert on a second account
        must make the mapping ambiguous, never pick one of them."""
        AD.modify_user_certs("bob", add=["alice.pem"])
        try:
            self.check_row(("alice.pem", None, None, {}, "ambiguous", None))
        finally:
            AD.modify_user_certs("bob", delete=["alice.pem"])
        self.check_row(("alice.pem", None, None, {}, "allowed", "alice"))

    def test_group_removal_is_seen_next_check(self):
        AD.set_member("ActiveSync Users", "carol", present=False)
        try:
            self.check_row(("carol.pem", None, None, {}, "not_in_group", "carol"))
        finally:
            AD.set_member("ActiveSync Users", "carol", present=True)
        self.check_row(("carol.pem", None, None, {}, "allowed", "carol"))

    def test_starttls(self):
        plain = [u for u in AD.uris if u.startswith("ldap://")][0]
        self.check_row(COMMON_ROWS[0], {"directory": {"uris": [plain], "starttls": True}})


class Rfc4523(TableMixin, unittest.TestCase):
    directory = staticmethod(lambda: LDAP)

    def test_table(self):
        self.run_rows(COMMON_ROWS + LDAP_ROWS)

    def test_allowed_user_fields(self):
        j = self.check_row(COMMON_ROWS[0])
        self.assertEqual(j["user"]["dn"], "uid=alice,ou=people,dc=lab,dc=test")
        self.assertEqual(j["user"]["name"], "alice")
        self.assertIsNone(j["user"]["sAMAccountName"])

    def test_serial_reuse_saved_only_by_der_compare(self):
        """serialdup.pem has alice's issuer and serial: certificateExactMatch finds alice's entry,
        the byte-for-byte comparison refuses it."""
        j = self.check_row(("serialdup.pem", None, None, {}, "not_mapped", None))
        self.assertTrue(any("1 entr" in line and "0 " in line for line in j["trace"]), j["trace"])

    def test_starttls(self):
        plain = [u for u in LDAP.uris if u.startswith("ldap://")][0]
        self.check_row(COMMON_ROWS[0], {"directory": {"uris": [plain], "starttls": True}})


class DirectoryFailures(unittest.TestCase):
    """Any directory failure is directory_unavailable (503), never an allow."""

    def expect_unavailable(self, directory, dir_override, max_seconds=None):
        cfg = base_config(directory, directory=dir_override)
        res = run_check(WORK.write_config(cfg), "alice.pem")
        self.assertIsNotNone(res.json, repr(res))
        self.assertEqual(res.json["reason"], "directory_unavailable", res.json)
        self.assertEqual((res.json["status"], res.json["substatus"]), (503, 0))
        self.assertEqual(res.rc, DENY)
        self.assertIsNone(res.json["user"])
        if max_seconds is not None:
            self.assertLess(res.elapsed, max_seconds, "bounded by timeout_ms")
        return res

    def test_closed_port(self):
        for d in (AD, LDAP):
            with self.subTest(dialect=d.dialect):
                self.expect_unavailable(d, {"uris": ["ldap://127.0.0.1:%d" % closed_port()]})

    def test_silent_server_times_out(self):
        srv = SilentServer()
        try:
            for d in (AD, LDAP):
                with self.subTest(dialect=d.dialect):
                    self.expect_unavailable(d, {"uris": ["ldap://127.0.0.1:%d" % srv.port],
                                                "timeout_ms": 1000}, max_seconds=10)
        finally:
            srv.close()

    def test_failover_to_second_uri(self):
        srv = SilentServer()
        try:
            for d in (AD, LDAP):
                with self.subTest(dialect=d.dialect):
                    cfg = base_config(d, directory={"uris": [
                        "ldap://127.0.0.1:%d" % closed_port(),
                        "ldap://127.0.0.1:%d" % srv.port, d.uris[0]], "timeout_ms": 1000})
                    res = run_check(WORK.write_config(cfg), "alice.pem")
                    self.assertEqual(res.json["reason"], "allowed", res.json)
                    self.assertEqual(res.rc, ALLOW)
                    self.assertLess(res.elapsed, 15)
        finally:
            srv.close()

    def test_ldaps_wrong_ca(self):
        for d in (AD, LDAP):
            with self.subTest(dialect=d.dialect):
                res = self.expect_unavailable(d, {"ca_file": str(PKI / "other-ca.pem")})
                self.assertIn(d.uris[0], " ".join(res.json["trace"]))

    def test_starttls_wrong_ca(self):
        for d in (AD, LDAP):
            with self.subTest(dialect=d.dialect):
                plain = [u for u in d.uris if u.startswith("ldap://")][0]
                self.expect_unavailable(d, {"uris": [plain], "starttls": True,
                                            "ca_file": str(PKI / "other-ca.pem")})

    def test_wrong_bind_password(self):
        pw = WORK.path / "wrong.pw"
        pw.write_text("not-the-password\n")
        os.chmod(pw, 0o600)
        for d in (AD, LDAP):
            with self.subTest(dialect=d.dialect):
                self.expect_unavailable(d, {"bind_password_file": str(pw)})

    def test_directory_not_consulted_for_untrusted(self):
        """x509 comes first: an untrusted certificate is denied even with the directory down."""
        cfg = base_config(AD, directory={"uris": ["ldap://127.0.0.1:%d" % closed_port()]})
        res = run_check(WORK.write_config(cfg), "rogue-alice.pem", chain="rogue-ca.pem")
        self.assertEqual(res.json["reason"], "untrusted")


class BadInput(unittest.TestCase):
    """Bad input is a clear one-line error and a non-zero exit, never a crash."""

    def setUp(self):
        self.cfg = WORK.write_config(base_config(LDAP))

    def assert_usage_error(self, res, *fragments):
        self.assertEqual(res.rc, USAGE, repr(res))
        self.assertEqual(res.stdout, "")
        for f in fragments:
            self.assertIn(f, res.stderr)
        self.assertNotIn("Traceback", res.stderr)

    def test_unreadable_cert_is_usage_error(self):
        res = run_check(self.cfg, "/nonexistent/cert.pem")
        self.assert_usage_error(res, "/nonexistent/cert.pem", "No such file")

    def test_config_errors_name_file_path_and_expectation(self):
        cfg = base_config(LDAP, directory={"timeout_ms": "soon", "urls": []},
                          authorization={"basic_user_binding": "sometimes"})
        path = WORK.write_config(cfg)
        res = run_check(path, "alice.pem")
        self.assert_usage_error(res, "%s: $.directory.timeout_ms: expected" % path,
                                "%s: $.directory.urls: unknown key" % path,
                                "%s: $.authorization.basic_user_binding: expected" % path)
        self.assertGreaterEqual(len(res.stderr.strip().splitlines()), 3)

    def test_config_syntax_error(self):
        path = WORK.path / "broken.json"
        path.write_text('{"directory": {"uris": [}\n')
        res = run_check(path, "alice.pem")
        self.assert_usage_error(res, str(path), "invalid JSON")

    def test_missing_config_and_files(self):
        res = run_check(WORK.path / "nope.json", "alice.pem")
        self.assert_usage_error(res, "nope.json")
        cfg = base_config(LDAP, client_certificates={"trusted_issuers": ["/nonexistent/ca.pem"]})
        res = run_check(WORK.write_config(cfg), "alice.pem")
        self.assert_usage_error(res, "$.client_certificates.trusted_issuers[0]", "/nonexistent/ca.pem")

    def test_password_file_readable_by_others(self):
        pw = WORK.path / "open.pw"
        pw.write_text("x\n")
        os.chmod(pw, 0o644)
        cfg = base_config(LDAP, directory={"bind_password_file": str(pw)})
        res = run_check(WORK.write_config(cfg), "alice.pem")
        self.assert_usage_error(res, "$.directory.bind_password_file", "mode 0644")

    def test_bad_flags(self):
        for extra in (["--frobnicate"], ["--at", "yesterday"], ["--path", "relative"]):
            with self.subTest(extra=extra):
                res = run_check(self.cfg, "alice.pem", extra=extra)
                self.assertEqual(res.rc, USAGE, repr(res))
                self.assertTrue(res.stderr.strip())

    def test_malformed_certificates_are_untrusted_with_fingerprint(self):
        for name in ("garbage.pem", "truncated.der", "notacert.pem"):
            with self.subTest(cert=name):
                res = run_check(self.cfg, name)
                self.assertEqual(res.rc, DENY, repr(res))
                self.assertEqual(res.json["reason"], "untrusted")
                self.assertIn("malformed", res.json["detail"])
                self.assertRegex(res.json["certificate"]["sha256"], r"^[0-9a-f]{64}$")

    def test_empty_cert_file(self):
        empty = WORK.path / "empty.pem"
        empty.write_text("")
        res = run_check(self.cfg, str(empty))
        self.assertEqual(res.rc, DENY, repr(res))
        self.assertEqual(res.json["reason"], "untrusted")


class HumanOutput(unittest.TestCase):
    def test_allow_and_deny_lines(self):
        cfg = WORK.write_config(base_config(AD))
        res = run_check(cfg, "alice.pem", json_out=False, extra=["--trace"])
        self.assertEqual(res.rc, ALLOW, repr(res))
        self.assertTrue(res.stdout.startswith("ALLOW 200.0 allowed"), res.stdout)
        self.assertIn("CN=alice,CN=Users,DC=lab,DC=test", res.stdout)
        self.assertIn("trace:", res.stdout)
        res = run_check(cfg, "kim-expired.pem", json_out=False)
        self.assertEqual(res.rc, DENY)
        self.assertTrue(res.stdout.startswith(
            "DENY  403.17 expired - Client certificate has expired or is not yet valid."), res.stdout)

    def test_at_time(self):
        cfg = WORK.write_config(base_config(AD))
        res = run_check(cfg, "leo-notyet.pem", extra=["--at", "2101-06-01T00:00:00Z"])
        self.assertEqual(res.json["reason"], "allowed", res.json)
        res = run_check(cfg, "alice.pem", extra=["--at", "2125-06-01T00:00:00Z"])
        self.assertEqual(res.json["reason"], "expired")


if __name__ == "__main__":
    unittest.main()
