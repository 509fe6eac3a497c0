"""`certmapctl publish` and `certmapctl audit` end to end against real directories: Samba AD
(dialect ad) and slapd (dialect rfc4523), seeded from certs-fixtures/accounts.json.

Every test starts from a freshly seeded directory. The bind account svc-certmap is given write
rights on userCertificate of every seeded person except PROTECTED (Samba: one ACE per account;
slapd: an ACL, plus an unlimited size limit so that paged scans may pass slapd's 1,000).
New certificates are minted here under the lab's issuing CA (openssl CLI).
"""

import base64
import hashlib
import json
import os
import re
import subprocess
import unittest
from pathlib import Path

from certmap_test import CERTMAPCTL, PKI, Workdir, base_config, skip_or_fail
from harness import SambaAD, Slapd, cert_der, load_accounts
from harness import DEFAULT_ACCOUNTS_JSON

OK, FAILED, USAGE = 0, 1, 2
PROTECTED = "nina"  # svc-certmap may not write this account's userCertificate
USER_CERTIFICATE_GUID = "bf967a7f-0de6-11d0-a285-00aa003049e2"  # schemaIDGUID (AD)
IVAN_CHAIN = str(PKI / "ivan-chain.pem")

AD = None
LDAP = None
WORK = None


def slapd_extra(base):
    svc = "cn=svc-certmap," + base
    return """limits dn.exact="{svc}" size=unlimited
access to dn.exact="uid={prot},ou=people,{base}" attrs=userCertificate
    by dn.exact="{svc}" read
    by self read
    by * none
access to dn.children="ou=people,{base}" attrs=userCertificate
    by dn.exact="{svc}" write
    by self read
    by * none
""".format(svc=svc, prot=PROTECTED, base=base)


def people():
    acc = load_accounts(DEFAULT_ACCOUNTS_JSON)
    return [u["name"] for u in acc["users"] if not u.get("service")]


def setUpModule():
    global AD, LDAP, WORK
    if os.geteuid() != 0:
        skip_or_fail("Samba AD needs root and a private network namespace")
    WORK = Workdir("certmap-it-publish-")
    AD = SambaAD(str(WORK.path / "ad"))
    LDAP = Slapd(str(WORK.path / "slapd"), extra_db_config=slapd_extra("dc=lab,dc=test"))


def tearDownModule():
    for d in (AD, LDAP):
        if d is not None:
            d.stop()
    if WORK is not None:
        WORK.remove()


def fresh(d):
    """A freshly seeded directory with svc-certmap's write rights."""
    d.stop()
    d.start(fresh=True)
    d.seed()
    if d.dialect == "ad":
        sid = d.object_sid("svc-certmap")
        d.add_aces([(n, "(OA;;WP;%s;;%s)" % (USER_CERTIFICATE_GUID, sid))
                    for n in people() if n != PROTECTED])


# ---- certificates -----------------------------------------------------------------------

_KEY = None
_SERIAL = [0x7000]


def mint(name, cn=None, upn=None, email=None, days=3650):
    """A new client certificate under the lab's issuing CA (managed), PEM file in WORK."""
    global _KEY
    out = WORK.path / "minted"
    out.mkdir(exist_ok=True)
    if _KEY is None:
        _KEY = out / "key.pem"
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-out", str(_KEY)], check=True,
                       capture_output=True)
    ext = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature",
           "extendedKeyUsage=clientAuth"]
    san = []
    if upn:
        san.append("otherName:1.3.6.1.4.1.311.20.2.3;UTF8:%s" % upn)
    if email:
        san.append("email:%s" % email)
    if san:
        ext.append("subjectAltName=" + ",".join(san))
    extfile = out / ("%s.ext" % name)
    extfile.write_text("\n".join(ext) + "\n")
    _SERIAL[0] += 1
    csr = subprocess.run(["openssl", "req", "-new", "-key", str(_KEY), "-subj",
                          "/C=US/O=Certmap Lab/OU=Users/CN=%s" % (cn or name)],
                         check=True, capture_output=True).stdout
    pem = out / ("%s.pem" % name)
    subprocess.run(["openssl", "x509", "-req", "-CA", str(PKI / "issuing-ca.pem"), "-CAkey",
                    str(PKI / "issuing-ca.key"), "-set_serial", str(_SERIAL[0]), "-days",
                    str(days), "-extfile", str(extfile), "-out", str(pem)],
                   input=csr, check=True, capture_output=True)
    return pem


def sha(source):
    return hashlib.sha256(cert_der(source, PKI)).hexdigest()


# ---- running certmapctl -----------------------------------------------------------------

class Run:
    def __init__(self, proc):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.json = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None

    def __repr__(self):
        return "rc=%d stdout=%s stderr=%s" % (self.rc, self.stdout[:3000], self.stderr[:2000])


def ctl(*args, timeout=300):
    if not CERTMAPCTL.exists():
        raise AssertionError("certmapctl not built at %s" % CERTMAPCTL)
    return Run(subprocess.run([str(CERTMAPCTL)] + [str(a) for a in args], capture_output=True,
                              text=True, timeout=timeout))


class Mixin:
    directory = None

    def setUp(self):
        self.d = self.directory()
        fresh(self.d)
        self.cfg = WORK.write_config(base_config(self.d))
        self.group = self.d.group_dn("ActiveSync Users")

    def publish(self, *args, json_out=True, group=None):
        argv = ["publish", "--config", self.cfg, "--group", group or self.group] + list(args)
        if json_out:
            argv.append("--json")
        return ctl(*argv)

    def audit(self, *args, json_out=True):
        argv = ["audit", "--config", self.cfg] + list(args)
        if json_out:
            argv.append("--json")
        return ctl(*argv)

    def certs_of(self, name):
        """DER values of the account's certificate attribute, as the directory holds them."""
        entries = self.d.search("(objectClass=*)", [self.d.cert_attr], base=self.d.user_dn(name),
                                scope="base", bind="admin")
        values = []
        for attr, vals in entries[0][1].items():
            if attr.lower().startswith("usercertificate"):
                values += vals
        return values

    def snapshot(self):
        """Every certificate value in the directory, per DN."""
        entries = self.d.search("(userCertificate=*)", [self.d.cert_attr], bind="admin")
        return {dn.lower(): sorted(v for k, vals in a.items() for v in vals)
                for dn, a in entries}

    def cert_dir(self, name, files):
        d = WORK.path / ("%s-%s-%s" % (self.d.kind, self._testMethodName, name))
        d.mkdir()
        for fname, src in files.items():
            (d / fname).write_bytes(Path(src).read_bytes())
        return d

    def changes(self, res, action=None):
        return [(c["action"], c["account"], c["sha256"], c["result"])
                for c in res.json["changes"] if action is None or c["action"] == action]

    # -- the tests ------------------------------------------------------------------------

    def test_publish_twice_adds_nothing_twice(self):
        alice = mint("alice-2", "alice", "alice@lab.test", "alice@lab.test")
        carol = mint("carol-phone", "carol", "carol@lab.test", None)  # UPN SAN only
        pat = mint("pat-device", "pat", None, "pat@lab.test")  # e-mail SAN only
        src = self.cert_dir("dir", {"alice.pem": alice, "phone-17.crt": carol,
                                    "device.cer": pat})
        before = {n: self.certs_of(n) for n in ("alice", "carol", "pat")}
        res = self.publish("--cert-dir", src)
        self.assertEqual(res.rc, OK, res)
        added = {(c[1], c[2]) for c in self.changes(res, "add")}
        self.assertEqual(added, {("alice", sha(alice)), ("carol", sha(carol)), ("pat", sha(pat))},
                         res.json)
        self.assertEqual(res.json["summary"]["added"], 3)
        self.assertEqual(res.json["summary"]["failed"], 0)
        self.assertEqual(res.json["ldap"]["modifies"], 3)
        for n, new in (("alice", alice), ("carol", carol), ("pat", pat)):
            now = self.certs_of(n)
            self.assertEqual(sorted(now), sorted(before[n] + [cert_der(new)]), n)
        by_how = {c["account"]: c["reason"] for c in res.json["changes"]}
        self.assertIn("file name", by_how["alice"])
        self.assertIn("UPN SAN", by_how["carol"])  # = userPrincipalName (ad) or mail
        self.assertIn("e-mail SAN", by_how["pat"])

        again = self.publish("--cert-dir", src)
        self.assertEqual(again.rc, OK, again)
        self.assertEqual(again.json["changes"], [])
        self.assertEqual(again.json["summary"]["already_present"], 3)
        self.assertEqual(again.json["ldap"]["modifies"], 0)
        for n, new in (("alice", alice), ("carol", carol), ("pat", pat)):
            self.assertEqual(self.certs_of(n).count(cert_der(new)), 1, n)

    def test_dry_run_changes_nothing(self):
        AD_or_LDAP = self.d
        AD_or_LDAP.set_member("ActiveSync Users", "carol", present=False)
        src = self.cert_dir("dir", {"alice.pem": mint("alice-dry", "alice", "alice@lab.test")})
        log = WORK.path / ("%s-dry.log" % self.d.kind)
        before = self.snapshot()
        res = self.publish("--cert-dir", src, "--prune", "--dry-run", "--log", log)
        self.assertEqual(res.rc, OK, res)
        self.assertTrue(res.json["dry_run"])
        self.assertEqual(res.json["ldap"]["modifies"], 0)
        planned = {(c[0], c[1]) for c in self.changes(res)}
        self.assertIn(("add", "alice"), planned)
        self.assertIn(("delete", "carol"), planned)
        self.assertIn(("delete", "bob"), planned)
        self.assertTrue(all(c["result"] == "planned" for c in res.json["changes"]))
        self.assertEqual(self.snapshot(), before, "a dry run wrote to the directory")
        text = log.read_text()
        self.assertRegex(text, r"(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ .*would add ")
        self.assertIn("would delete", text)
        human = self.publish("--cert-dir", src, "--prune", "--dry-run", json_out=False)
        self.assertEqual(human.rc, OK, human)
        self.assertIn("would add", human.stdout)
        self.assertIn("nothing written", human.stdout)
        self.assertEqual(self.snapshot(), before)

    def test_prune_after_removing_a_member(self):
        self.d.modify_user_certs("bob", add=["victor-untrusted.pem"])  # not ours: stays
        self.d.set_member("ActiveSync Users", "carol", present=False)
        log = WORK.path / ("%s-prune.log" % self.d.kind)
        res = self.publish("--prune", "--log", log)
        self.assertEqual(res.rc, OK, res)
        removed = sorted((c[1], c[2]) for c in self.changes(res, "delete"))
        self.assertEqual(removed, sorted([("bob", sha("bob.pem")), ("carol", sha("carol.pem")),
                                          ("carol", sha("carol2.pem"))]), res.json)
        self.assertTrue(all(c["result"] == "done" for c in res.json["changes"]))
        self.assertEqual(self.certs_of("carol"), [])
        self.assertEqual(self.certs_of("bob"), [cert_der("victor-untrusted.pem", PKI)])
        # members keep theirs, nested ones included
        self.assertEqual(self.certs_of("alice"), [cert_der("alice.pem", PKI)])
        self.assertEqual(self.certs_of("ivan"), [cert_der("ivan.pem", PKI)])
        self.assertEqual(self.certs_of("pat"), [cert_der("pat.pem", PKI)])
        lines = log.read_text().splitlines()
        deletes = [l for l in lines if " delete " in l]
        self.assertEqual(len(deletes), 3, lines)
        for l in deletes:
            self.assertRegex(l, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ certmapctl-publish\[\d+\]: delete ")
            self.assertIn("not a member of", l)
            self.assertIn(": done;", l)
        again = self.publish("--prune")
        self.assertEqual((again.rc, again.json["changes"]), (OK, []), again)

    def test_csv_map_and_replace_expired(self):
        csv_dir = WORK.path / ("%s-csv" % self.d.kind)
        (csv_dir / "certs").mkdir(parents=True)
        kim_new = mint("kim-new", "kim", "kim@lab.test", "kim@lab.test")
        alice_new = mint("alice-csv", "alice", "alice@lab.test", "alice@lab.test")
        (csv_dir / "certs" / "kim.pem").write_bytes(kim_new.read_bytes())
        (csv_dir / "certs" / "a.pem").write_bytes(alice_new.read_bytes())
        (csv_dir / "map.csv").write_text(
            "account,certfile\n# kim's expired cert is replaced\nkim,certs/kim.pem\n"
            "alice,certs/a.pem\nbob,certs/a.pem\nnobody,certs/a.pem\n")
        res = self.publish("--map", csv_dir / "map.csv", "--replace-expired")
        self.assertEqual(res.rc, OK, res)
        self.assertEqual(sorted((c[0], c[1], c[2]) for c in self.changes(res)), sorted([
            ("add", "kim", sha(kim_new)), ("delete", "kim", sha("kim-expired.pem")),
            ("add", "alice", sha(alice_new))]), res.json)
        kim = [c for c in res.json["changes"] if c["account"] == "kim"]
        self.assertEqual([c["action"] for c in kim], ["add", "delete"], "add before delete")
        self.assertEqual(kim[1]["why"], "replaced_expired")
        self.assertEqual(self.certs_of("kim"), [cert_der(kim_new)])
        self.assertEqual(sorted(self.certs_of("alice")),
                         sorted([cert_der("alice.pem", PKI), cert_der(alice_new)]))
        self.assertEqual(self.certs_of("bob"), [cert_der("bob.pem", PKI)], "bob is no member")
        warnings = " ".join(w["message"] for w in res.json["warnings"])
        self.assertIn('"bob" (line 5) is not a member', warnings)
        self.assertIn('"nobody" (line 6)', warnings)
        self.assertTrue(all(c["file"].endswith(("kim.pem", "a.pem")) for c in res.json["changes"]
                            if c["action"] == "add"))
        # a malformed CSV is a usage error before anything is read from the directory
        (csv_dir / "bad.csv").write_text("kim,certs/kim.pem\nalice\n")
        bad = self.publish("--map", csv_dir / "bad.csv")
        self.assertEqual(bad.rc, USAGE, bad)
        self.assertIn("line 2", bad.stderr)

    def test_cert_that_matches_no_account(self):
        stranger = mint("stranger", "stranger", "stranger@lab.test", "stranger@lab.test")
        src = self.cert_dir("dir", {"stranger.pem": stranger, "bob.pem": PKI / "bob.pem"})
        before = self.snapshot()
        res = self.publish("--cert-dir", src)
        self.assertEqual(res.rc, OK, res)
        self.assertEqual(res.json["changes"], [])
        self.assertEqual(len(res.json["warnings"]), 2, res.json)
        for w in res.json["warnings"]:
            self.assertIn("matches no member", w["message"])
        self.assertEqual(self.snapshot(), before)

    def test_account_the_bind_user_may_not_modify(self):
        log = WORK.path / ("%s-denied.log" % self.d.kind)
        src = self.cert_dir("dir", {
            "alice.pem": mint("alice-x", "alice", "alice@lab.test"),
            "%s.pem" % PROTECTED: mint("nina-x", PROTECTED, "%s@lab.test" % PROTECTED),
            "oscar.pem": mint("oscar-x", "oscar", "oscar@lab.test")})
        res = self.publish("--cert-dir", src, "--log", log)
        self.assertEqual(res.rc, FAILED, res)
        results = {c["account"]: c for c in res.json["changes"]}
        self.assertEqual(results["alice"]["result"], "done")
        self.assertEqual(results["oscar"]["result"], "done", "the run went on after a failure")
        self.assertEqual(results[PROTECTED]["result"], "failed")
        self.assertIn("insufficientAccessRights (50)", results[PROTECTED]["error"])
        self.assertEqual(res.json["summary"]["failed"], 1)
        self.assertEqual(res.json["summary"]["added"], 2)
        self.assertEqual(self.certs_of(PROTECTED), [cert_der("nina-large.pem", PKI)])
        self.assertIn("failed: insufficientAccessRights", log.read_text())
        human = self.publish("--cert-dir", src, json_out=False)
        self.assertEqual(human.rc, FAILED, human)
        self.assertIn("FAILED", human.stdout)
        self.assertIn("1 failed", human.stdout)

    def test_one_certificate_for_everybody_warns(self):
        shared = mint("everybody", "shared-phone")
        res = self.publish("--cert", shared, "--dry-run", group=self.d.group_dn("Mobile Staff"))
        self.assertEqual(res.rc, OK, res)
        self.assertEqual(sorted(c[1] for c in self.changes(res, "add")), ["alice", "ivan"])
        text = " ".join(w["message"] for w in res.json["warnings"])
        self.assertIn("maps ambiguously", text)
        self.assertIn("on_ambiguous", text)
        self.assertIn("basic_user", text)
        # an untrusted certificate is refused: prune could never take it back
        bad = self.publish("--cert", PKI / "mallory-selfsigned.pem")
        self.assertEqual(bad.rc, USAGE, bad)
        self.assertIn("trusted_issuers", bad.stderr)

    def test_group_by_name(self):
        res = self.publish("--prune", "--dry-run", group="Mobile Staff")
        self.assertEqual(res.rc, OK, res)
        self.assertTrue(res.json["group"].lower().startswith("cn=mobile staff,"), res.json)
        self.assertEqual(res.json["members"], 2)
        missing = self.publish("--prune", "--dry-run", group="No Such Group")
        self.assertEqual(missing.rc, USAGE, missing)
        self.assertIn("no group named", missing.stderr)
        # two groups answering to one name
        if self.d.dialect == "ad":
            ldif = ("dn: CN=Twin,CN=Users,DC=lab,DC=test\nobjectClass: group\nsAMAccountName: Twin-A\n\n"
                    "dn: CN=Twin-B,CN=Users,DC=lab,DC=test\nobjectClass: group\nsAMAccountName: Twin\n")
        else:
            ldif = ("dn: cn=Twin,ou=groups,dc=lab,dc=test\nobjectClass: groupOfNames\ncn: Twin\n"
                    "member: cn=admin,dc=lab,dc=test\n\n"
                    "dn: cn=Twin,ou=people,dc=lab,dc=test\nobjectClass: groupOfNames\ncn: Twin\n"
                    "member: cn=admin,dc=lab,dc=test\n")
        self.d._ldap_tool("ldapadd", [], "admin", uri=self.d.admin_uri, input_data=ldif.encode())
        twin = self.publish("--prune", "--dry-run", group="Twin")
        self.assertEqual(twin.rc, USAGE, twin)
        self.assertIn("names 2 groups", twin.stderr)
        usage = ctl("publish", "--config", self.cfg, "--group", "x")
        self.assertEqual(usage.rc, USAGE, "no source and no --prune")
        usage = ctl("publish", "--config", self.cfg, "--group", "x", "--cert", "a", "--map", "b")
        self.assertEqual(usage.rc, USAGE)

    # -- audit ----------------------------------------------------------------------------

    def expected_seeded(self):
        """(level, kind, accounts, sha256) of the seeded lab, with ivan's intermediate given."""
        unusable = ["gina", "hank", "judy", "kim", "leo", "mallory", "mike"]
        return sorted([
            ("critical", "shared_certificate", ("gina", "hank"), sha("shared.pem")),
            ("warning", "expired", ("kim",), sha("kim-expired.pem")),
            ("warning", "not_yet_valid", ("leo",), sha("leo-notyet.pem")),
            ("warning", "untrusted_issuer", ("mallory",), sha("mallory-selfsigned.pem")),
            ("warning", "revoked", ("judy",), sha("judy-revoked.pem")),
            ("warning", "holder_outside_group", ("bob",), sha("bob.pem")),
        ] + [("warning", "member_without_usable_cert", (n,), None) for n in unusable])

    def findings(self, res):
        names = {}

        def name_of(dn):
            m = re.match(r"(?i)^(?:cn|uid)=([^,]+),", dn)
            return m.group(1) if m else dn

        out = []
        for f in res.json["findings"]:
            self.assertIn(f["level"], ("critical", "warning", "info"))
            for dn in f["accounts"]:
                self.assertTrue(dn.lower().endswith(self.d.base_dn.lower()), dn)
            if f["sha256"] is not None:
                self.assertRegex(f["sha256"], r"^[0-9a-f]{64}$")
            out.append((f["level"], f["kind"], tuple(name_of(dn) for dn in f["accounts"]),
                        f["sha256"]))
            names.update({dn: 1 for dn in f["accounts"]})
        return sorted(out)

    def test_audit_seeded_lab_exactly(self):
        res = self.audit("--chain", IVAN_CHAIN)
        self.assertEqual(res.rc, FAILED, "a critical finding fails by default: %r" % res)
        self.assertEqual(self.findings(res), self.expected_seeded())
        self.assertEqual(res.json["counts"], {"critical": 1, "warning": 12, "info": 0})
        self.assertEqual(res.json["scanned"]["members"], 16)
        self.assertEqual(res.json["group"].lower(), self.group.lower(), "the first required group")
        # without the intermediate a device sends, ivan's certificate cannot be verified
        res = self.audit()
        self.assertEqual(self.findings(res), sorted(self.expected_seeded() + [
            ("warning", "untrusted_issuer", ("ivan",), sha("ivan.pem")),
            ("warning", "member_without_usable_cert", ("ivan",), None)]))
        # --fail-on
        self.assertEqual(self.audit("--chain", IVAN_CHAIN, "--fail-on", "warning").rc, FAILED)
        sales = self.audit("--group", "Sales")
        self.assertEqual(sales.rc, FAILED, "the shared cert is directory-wide: %r" % sales)
        self.assertEqual(sales.json["scanned"]["members"], 1)
        self.assertEqual({f["kind"] for f in sales.json["findings"]},
                         {"shared_certificate", "holder_outside_group"}, "alice is fine")
        human = self.audit("--chain", IVAN_CHAIN, json_out=False)
        self.assertTrue(human.stdout.startswith("CRITICAL shared_certificate"), human.stdout)
        self.assertIn("1 critical, 12 warning, 0 info", human.stdout)
        self.assertEqual(self.audit("--fail-on", "sometimes").rc, USAGE)

    def test_audit_finds_planted_problems(self):
        self.d.modify_user_certs("bob", add=["alice.pem", "mallory-selfsigned.pem"])
        self.d.modify_user_certs("carol", add=["victor-untrusted.pem"])
        self.d.modify_user_certs("erin", delete=["erin.pem"])
        expected = [f for f in self.expected_seeded()]
        expected += [
            ("critical", "shared_certificate", ("alice", "bob"), sha("alice.pem")),
            ("critical", "shared_certificate", ("bob", "mallory"), sha("mallory-selfsigned.pem")),
            ("warning", "holder_outside_group", ("bob",), sha("alice.pem")),
            ("warning", "untrusted_issuer", ("carol",), sha("victor-untrusted.pem")),
            ("warning", "member_without_usable_cert", ("erin",), None),
        ]
        if self.d.dialect == "ad":
            # AD compares octet strings: a second certificate with alice's issuer and serial
            # can sit next to hers (slapd's certificateExactMatch refuses it as a duplicate)
            self.d.modify_user_certs("alice", add=["serialdup.pem"])
            expected.append(("warning", "duplicate_value", ("alice",), sha("serialdup.pem")))
        else:
            self.d.modify_user_certs("alice", add=["serialdup.pem"])
            self.assertEqual(self.certs_of("alice"), [cert_der("alice.pem", PKI)])
            # alice's only certificate is now shared with bob
            expected.append(("warning", "member_without_usable_cert", ("alice",), None))
        res = self.audit("--chain", IVAN_CHAIN)
        self.assertEqual(res.rc, FAILED, res)
        self.assertEqual(self.findings(res), sorted(expected))
        erin = [f for f in res.json["findings"] if f["kind"] == "member_without_usable_cert"
                and "erin" in f["accounts"][0].lower()]
        self.assertEqual(erin[0]["detail"], "holds no certificate")

    def test_many_members_paged(self):
        """More members and holders than one page (1,000), one shared certificate on all."""
        names = ["bulk%04d" % i for i in range(1100)]
        self.d.add_users(names, group="Bulk")
        if self.d.dialect == "ad":
            sid = self.d.object_sid("svc-certmap")
            self.d.add_aces([(n, "(OA;;WP;%s;;%s)" % (USER_CERTIFICATE_GUID, sid)) for n in names])
        shared = mint("bulk-shared", "bulk-shared")
        res = self.publish("--cert", shared, group="Bulk")
        self.assertEqual(res.rc, OK, res)
        self.assertEqual(res.json["members"], 1100)
        self.assertEqual(res.json["summary"]["added"], 1100)
        self.assertEqual(res.json["ldap"]["modifies"], 1100)
        again = self.publish("--cert", shared, "--prune", "--dry-run", group="Bulk")
        self.assertEqual(again.rc, OK, again)
        self.assertEqual(again.json["summary"]["added"], 0)
        self.assertEqual(again.json["summary"]["already_present"], 1100)
        pruned = sorted(c[1] for c in self.changes(again, "delete"))
        # every managed certificate outside Bulk goes (the seeded accounts' ones)
        self.assertIn("alice", pruned)
        self.assertNotIn("mallory", pruned, "self-signed: not managed")
        res = self.audit("--group", "Bulk")
        shared_f = [f for f in res.json["findings"] if f["kind"] == "shared_certificate"
                    and f["sha256"] == sha(shared)]
        self.assertEqual(len(shared_f), 1)
        self.assertEqual(len(shared_f[0]["accounts"]), 1100)
        self.assertEqual(res.json["scanned"]["members"], 1100)


class ActiveDirectory(Mixin, unittest.TestCase):
    directory = staticmethod(lambda: AD)


class Rfc4523(Mixin, unittest.TestCase):
    directory = staticmethod(lambda: LDAP)

    def test_size_limit_is_an_error_not_a_short_list(self):
        """Without an unlimited paged-results limit for the bind account, slapd (sizelimit
        1000) cuts a holder scan short: publish --prune must stop, never prune on half a list."""
        plain = Slapd(str(WORK.path / "slapd-limited"))
        try:
            plain.start(fresh=True)
            plain.seed()
            plain.add_users(["bulk%04d" % i for i in range(1100)], group="Bulk",
                            certs={"bulk%04d" % i: ["bob.pem"] for i in range(1100)})
            cfg = WORK.write_config(base_config(plain))
            res = ctl("publish", "--config", cfg, "--group", "Bulk", "--prune", "--dry-run",
                      "--json")
            self.assertEqual(res.rc, FAILED, res)
            self.assertIn("size limit", res.stderr)
            self.assertIsNone(res.json)
            res = ctl("audit", "--config", cfg, "--json")
            self.assertEqual(res.rc, FAILED, res)
            self.assertIn("size limit", res.stderr)
        finally:
            plain.stop()


if __name__ == "__main__":
    unittest.main()
