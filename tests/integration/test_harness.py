"""Self-test of the directory harness: real Samba AD and slapd, seeded from the lab fixtures.

Run as root inside a private network namespace:

    tests/integration/netns-run python3 -m unittest -v tests/integration/test_harness.py

Outside a private namespace (or without root) the tests are skipped -- unless CI=true, where
that is an error. Timings go to stderr.
"""

import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
from harness import (DEFAULT_ACCOUNTS_JSON, DEFAULT_PKI_DIR, LdapError, SambaAD, Slapd,  # noqa: E402
                     cert_der, filter_escape_bytes, in_private_netns, sid_to_str)

PKI = DEFAULT_PKI_DIR
CI = os.environ.get("CI") == "true"
ISSUING_CA_DN = "CN=Lab Issuing CA,O=Certmap Lab,C=US"
ASU_AD = "CN=ActiveSync Users,CN=Users,DC=lab,DC=test"


def _skip_or_fail(reason):
    if CI:
        raise RuntimeError(reason + " (CI=true: an error, not a skip)")
    raise unittest.SkipTest(reason)


def _preconditions(need_netns):
    if not (PKI / "ca-bundle.pem").exists() or not DEFAULT_ACCOUNTS_JSON.exists():
        _skip_or_fail("lab fixtures missing (certs-fixtures/pki, accounts.json)")
    if need_netns and not in_private_netns():
        _skip_or_fail("not in a private network namespace: run under tests/integration/netns-run")


def _der_tlv(data, off):
    """(tag, start of content, end of content) of the DER element at off."""
    tag = data[off]
    length = data[off + 1]
    off += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[off:off + n], "big")
        off += n
    return tag, off, off + length


def cert_serial(der):
    _, c, _ = _der_tlv(der, 0)             # Certificate
    _, t, _ = _der_tlv(der, c)             # tbsCertificate
    tag, s, e = _der_tlv(der, t)
    if tag == 0xA0:                        # [0] version
        tag, s, e = _der_tlv(der, e)
    assert tag == 0x02, tag
    return int.from_bytes(der[s:e], "big", signed=True)


def _scratch(kind):
    return tempfile.mkdtemp(prefix="certmap-harness-test-%s-" % kind, dir="/tmp")


def _names(entries, attr):
    return sorted(a[attr][0].decode() for _, a in entries)


class SambaADTest(unittest.TestCase):
    ad = None

    @classmethod
    def setUpClass(cls):
        _preconditions(need_netns=True)
        cls.ad = SambaAD(_scratch("ad"))
        cls.ad._own_workdir = True
        try:
            cls.ad.start()
            cls.ad.seed()
        except BaseException:
            cls.ad.destroy()
            raise
        sys.stderr.write("\n[samba timings] %s\n" % {k: round(v, 3) for k, v in cls.ad.timings.items()})

    @classmethod
    def tearDownClass(cls):
        if cls.ad:
            cls.ad.destroy()

    def one(self, name, attrs):
        entries = self.ad.search("(sAMAccountName=%s)" % name, attrs)
        self.assertEqual(len(entries), 1, entries)
        return entries[0][1]

    def test_alice_by_exact_der_filter(self):
        der = (PKI / "alice.der").read_bytes()
        filt = "(userCertificate=%s)" % filter_escape_bytes(der)
        entries = self.ad.search(filt, ["sAMAccountName", "userCertificate"])
        self.assertEqual(_names(entries, "sAMAccountName"), ["alice"])
        self.assertEqual(entries[0][1]["userCertificate"], [der])
        # and the plain LDAP port (simple bind, strong auth not required)
        entries = self.ad.search(filt, ["sAMAccountName"], uri=self.ad.uris[1])
        self.assertEqual(_names(entries, "sAMAccountName"), ["alice"])

    def test_carol_two_certs_and_large_cert(self):
        a = self.one("carol", ["userCertificate"])
        self.assertEqual(sorted(a["userCertificate"]),
                         sorted([cert_der("carol.pem", PKI), cert_der("carol2.pem", PKI)]))
        nina = cert_der("nina-large.pem", PKI)
        self.assertGreater(len(nina), 10000)
        self.assertEqual(self.one("nina", ["userCertificate"])["userCertificate"], [nina])

    def test_states(self):
        self.assertEqual(self.one("dave", ["userAccountControl"])["userAccountControl"], [b"66050"])
        self.assertEqual(self.one("alice", ["userAccountControl"])["userAccountControl"], [b"66048"])
        frank = self.one("frank", ["msDS-User-Account-Control-Computed", "userAccountControl"])
        self.assertTrue(int(frank["msDS-User-Account-Control-Computed"][0]) & 0x10)
        self.assertEqual(frank["userAccountControl"], [b"66048"])
        alice = self.one("alice", ["msDS-User-Account-Control-Computed"])
        self.assertFalse(int(alice["msDS-User-Account-Control-Computed"][0]) & 0x10)
        self.assertEqual(self.one("erin", ["accountExpires"])["accountExpires"],
                         [b"132223104000000000"])

    def test_binds_carry_ad_data_codes(self):
        pw = self.ad.user_password
        self.ad.search("(sAMAccountName=alice)", ["cn"], bind=(self.ad.user_dn("alice"), pw))
        for name, code in (("frank", "775"), ("dave", "533"), ("erin", "701"), ("bob", "52e")):
            with self.assertRaises(LdapError) as cm:
                self.ad.search("(sAMAccountName=x)", ["cn"], bind=(
                    self.ad.user_dn(name), pw if name != "bob" else "wrong"))
            self.assertIn("data %s" % code, cm.exception.stderr.decode(), name)

    def test_pat_primary_group_in_token_groups(self):
        asu = self.ad.search("(sAMAccountName=ActiveSync Users)", ["objectSid", "member"])[0][1]
        asu_sid = sid_to_str(asu["objectSid"][0])
        self.assertNotIn(self.ad.user_dn("pat").encode(), asu["member"])
        entries = self.ad.search("(objectClass=*)", ["tokenGroups", "primaryGroupID"],
                                 base=self.ad.user_dn("pat"), scope="base")
        groups = [sid_to_str(v) for v in entries[0][1]["tokenGroups"]]
        self.assertIn(asu_sid, groups)
        self.assertEqual(entries[0][1]["primaryGroupID"], [asu_sid.rsplit("-", 1)[1].encode()])

    def test_nested_membership_in_chain(self):
        entries = self.ad.search("(memberOf:1.2.840.113556.1.4.1941:=%s)" % ASU_AD,
                                 ["sAMAccountName"])
        names = _names(entries, "sAMAccountName")
        for n in ("alice", "ivan", "carol", "Sales", "Mobile Staff"):
            self.assertIn(n, names)
        self.assertNotIn("bob", names)
        der = (PKI / "alice.der").read_bytes()
        both = "(&(userCertificate=%s)(memberOf:1.2.840.113556.1.4.1941:=%s))" % (
            filter_escape_bytes(der), ASU_AD)
        self.assertEqual(_names(self.ad.search(both, ["sAMAccountName"]), "sAMAccountName"), ["alice"])

    def test_shared_cert_on_gina_and_hank(self):
        filt = "(userCertificate=%s)" % filter_escape_bytes(cert_der("shared.pem", PKI))
        self.assertEqual(_names(self.ad.search(filt, ["sAMAccountName"]), "sAMAccountName"),
                         ["gina", "hank"])

    def test_rids_and_upn(self):
        skipped = self.ad.seed_result["rids_skipped"]
        self.assertEqual(skipped, {}, "Samba refused objectSid on add")
        for name, rid in (("alice", 1601), ("carol", 1603), ("pat", 1616)):
            a = self.one(name, ["objectSid", "userPrincipalName"])
            self.assertEqual(sid_to_str(a["objectSid"][0]), "%s-%d" % (self.ad.domain_sid, rid))
            self.assertEqual(a["userPrincipalName"], [("%s@lab.test" % name).encode()])

    def test_bind_password_file(self):
        st = os.stat(self.ad.bind_password_file)
        self.assertEqual(st.st_mode & 0o777, 0o600)
        text = Path(self.ad.bind_password_file).read_text()
        self.assertTrue(text.endswith("\n") and text.count("\n") == 1)
        self.assertEqual(self.ad.bind_dn, "CN=svc-certmap,CN=Users,DC=lab,DC=test")

    def test_tls_needs_the_lab_ca(self):
        self.ad.search("(sAMAccountName=alice)", ["cn"], starttls=True, uri=self.ad.uris[1])
        for kw in ({}, {"starttls": True, "uri": self.ad.uris[1]}):
            with self.assertRaises(LdapError):
                self.ad.search("(sAMAccountName=alice)", ["cn"], ca_file=str(PKI / "other-ca.pem"), **kw)

    def test_helpers(self):
        peggy = cert_der("peggy-unmapped.pem", PKI)
        filt = "(userCertificate=%s)" % filter_escape_bytes(peggy)
        self.ad.modify_user_certs("bob", add=["peggy-unmapped.pem"])
        self.ad.modify_user_certs("bob", add=[peggy])  # idempotent
        self.assertEqual(_names(self.ad.search(filt, ["sAMAccountName"]), "sAMAccountName"), ["bob"])
        self.assertEqual(len(self.one("bob", ["userCertificate"])["userCertificate"]), 2)
        self.ad.modify_user_certs("bob", delete=[peggy])
        self.ad.modify_user_certs("bob", delete=[peggy])
        self.assertEqual(self.ad.search(filt, ["sAMAccountName"]), [])
        self.assertEqual(self.one("bob", ["userCertificate"])["userCertificate"],
                         [cert_der("bob.pem", PKI)])

        chain = "(&(sAMAccountName=bob)(memberOf:1.2.840.113556.1.4.1941:=%s))" % ASU_AD
        self.ad.set_member("Sales", "bob", True)
        self.ad.set_member("Sales", "bob", True)
        self.assertEqual(len(self.ad.search(chain, ["cn"])), 1)
        self.ad.set_member("Sales", "bob", False)
        self.ad.set_member("Sales", "bob", False)
        self.assertEqual(self.ad.search(chain, ["cn"]), [])

    def test_zz_restart_keeps_data(self):
        self.ad.stop()
        self.assertFalse(self.ad.running())
        with self.assertRaises(LdapError):
            self.ad.search("(sAMAccountName=alice)", ["cn"])
        self.ad.start()
        self.assertEqual(len(self.ad.search("(sAMAccountName=alice)", ["cn"])), 1)


class SlapdTest(unittest.TestCase):
    ld = None

    @classmethod
    def setUpClass(cls):
        _preconditions(need_netns=False)
        cls.ld = Slapd(_scratch("slapd"))
        cls.ld._own_workdir = True
        try:
            cls.ld.start()
            cls.ld.seed()
        except BaseException:
            cls.ld.destroy()
            raise
        sys.stderr.write("\n[slapd timings] %s\n" % {k: round(v, 3) for k, v in cls.ld.timings.items()})

    @classmethod
    def tearDownClass(cls):
        if cls.ld:
            cls.ld.destroy()

    def gser(self, der):
        return "(userCertificate;binary={ serialNumber %d, issuer rdnSequence:\"%s\" })" % (
            cert_serial(der), ISSUING_CA_DN)

    def test_alice_by_gser_assertion(self):
        der = (PKI / "alice.der").read_bytes()
        for uri in self.ld.uris:
            entries = self.ld.search(self.gser(der), ["uid", "userCertificate;binary"], uri=uri)
            self.assertEqual(_names(entries, "uid"), ["alice"])
            self.assertEqual(entries[0][1]["userCertificate;binary"], [der])

    def test_tls(self):
        ldaps, ldap = self.ld.uris
        other = str(PKI / "other-ca.pem")
        self.assertEqual(len(self.ld.search("(uid=alice)", ["uid"], uri=ldaps)), 1)
        self.assertEqual(len(self.ld.search("(uid=alice)", ["uid"], uri=ldap, starttls=True)), 1)
        with self.assertRaises(LdapError):
            self.ld.search("(uid=alice)", ["uid"], uri=ldaps, ca_file=other)
        with self.assertRaises(LdapError):
            self.ld.search("(uid=alice)", ["uid"], uri=ldap, starttls=True, ca_file=other)

    def test_anonymous_sees_only_root_dse(self):
        root = self.ld.search("(objectClass=*)", ["namingContexts"], base="", scope="base", bind=None)
        self.assertEqual(root[0][1]["namingContexts"], [b"dc=lab,dc=test"])
        # the base itself is hidden: noSuchObject (32), never entries
        try:
            self.assertEqual(self.ld.search("(objectClass=*)", ["*"], bind=None), [])
        except LdapError as e:
            self.assertEqual(e.rc, 32, e)
        with self.assertRaises(LdapError) as cm:
            self.ld.search("(uid=alice)", ["*"], base="ou=people,dc=lab,dc=test", bind=None)
        self.assertEqual(cm.exception.rc, 32)

    def test_groups_and_shared_cert(self):
        alice = self.ld.search("(uid=alice)", ["memberOf"])[0][1]
        self.assertEqual(alice["memberOf"], [self.ld.group_dn("Sales").encode()])
        asu = self.ld.search("(cn=ActiveSync Users)", ["member"])[0][1]["member"]
        self.assertIn(self.ld.user_dn("pat").encode(), asu)          # rfc4523_extra_members
        self.assertIn(self.ld.group_dn("Mobile Staff").encode(), asu)
        ms = self.ld.search("(cn=Mobile Staff)", ["memberOf", "member"])[0][1]
        self.assertEqual(ms["memberOf"], [self.ld.group_dn("ActiveSync Users").encode()])
        shared = cert_der("shared.pem", PKI)
        entries = self.ld.search(self.gser(shared), ["uid", "userCertificate;binary"])
        self.assertEqual(_names(entries, "uid"), ["gina", "hank"])
        self.assertTrue(all(a["userCertificate;binary"] == [shared] for _, a in entries))
        for _, a in self.ld.search("(uid=*)", ["mail", "uid"]):
            self.assertEqual(a["mail"], [a["uid"][0] + b"@lab.test"])

    def test_bind_password_file(self):
        self.assertEqual(os.stat(self.ld.bind_password_file).st_mode & 0o777, 0o600)
        self.assertEqual(self.ld.bind_dn, "cn=svc-certmap,dc=lab,dc=test")
        with self.assertRaises(LdapError):
            self.ld.search("(uid=alice)", ["uid"], bind=(self.ld.bind_dn, "wrong"))

    def test_helpers(self):
        peggy = cert_der("peggy-unmapped.pem", PKI)
        self.ld.modify_user_certs("bob", add=[peggy])
        self.ld.modify_user_certs("bob", add=["peggy-unmapped.pem"])
        self.assertEqual(_names(self.ld.search(self.gser(peggy), ["uid"]), "uid"), ["bob"])
        self.ld.modify_user_certs("bob", delete=[peggy])
        self.ld.modify_user_certs("bob", delete=[peggy])
        self.assertEqual(self.ld.search(self.gser(peggy), ["uid"]), [])
        self.ld.set_member("Sales", "bob", True)
        self.ld.set_member("Sales", "bob", True)
        self.assertIn(self.ld.group_dn("Sales").encode(),
                      self.ld.search("(uid=bob)", ["memberOf"])[0][1]["memberOf"])
        self.ld.set_member("Sales", "bob", False)
        self.ld.set_member("Sales", "bob", False)
        self.assertNotIn("memberOf", self.ld.search("(uid=bob)", ["memberOf"])[0][1])


class CliTest(unittest.TestCase):
    def test_slapd_cli_json_line_and_stdin_eof(self):
        _preconditions(need_netns=False)
        import json
        d = _scratch("cli")
        try:
            p = subprocess.Popen([sys.executable, "-m", "harness", "slapd", "start", "--dir", d, "--seed"],
                                 cwd=str(HERE), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            info = json.loads(p.stdout.readline())
            for k in ("uris", "base_dn", "bind_dn", "bind_password_file", "ca_file", "pid"):
                self.assertIn(k, info)
            self.assertTrue(harness.process_alive(info["pid"]))
            p.stdin.close()
            self.assertEqual(p.wait(20), 0)
            p.stdout.close()
            self.assertFalse(harness.process_alive(info["pid"]))
        finally:
            import shutil
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
