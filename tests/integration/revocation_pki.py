"""A revocation test PKI made at test time, and the servers that publish its revocation data:
nginx (CRLs over HTTP, garbage at an OCSP path), `openssl ocsp` responders, a silent TCP
listener. Used by test_revocation.py; everything lives in one scratch directory.

Hierarchy (EC P-256, SHA-256; every URL below is baked into the certificates):

    Rev Test Root CA (anchor: the only trusted_issuers entry; no CDP, never checked)
    |- Rev Issuing CA      CDP root.crl      leaves for CDP tests (http://, ldap:///, ldap://host/)
    |- Rev OCSP CA         CDP root.crl      leaves with AIA OCSP URLs, no CDP
    |- Rev File CA         CDP root.crl      leaves without CDP/AIA, for crl_files
    |- Rev Broken CA       CDP root.crl      one leaf whose only CDP serves garbage
    |- Rev Refresh CA      CDP root.crl      one leaf; the test rewrites its CDP CRL
    |- Rev LDAP CA         CDP root.crl      leaves whose ldap:/// CDP (and delta) is on slapd
    `- Rev Revoked Sub CA  CDP root.crl      listed in root.crl: every leaf under it is revoked
    Rev Unrelated CA (self-signed, untrusted): signs the "wrong signer" OCSP responder cert

Every issuing CA has its own leaves, so that a CRL cached by certmapd for one issuer never
answers for the leaves of another test (a CRL without IDP covers all of its issuer's certs).
"""

import datetime
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

HOST = "127.0.0.1"
HTTP_PORT = 8091          # nginx: /crl/*.crl, /ocsp-garbage
OCSP_PORT = 8092          # openssl ocsp for Rev OCSP CA, delegated responder
OCSP_WRONG_PORT = 8093    # openssl ocsp signing with a cert of an unrelated CA
OCSP_DOWN_PORT = 8094     # nothing listens
CDP_DOWN_PORT = 8095      # nothing listens
CDP_SILENT_PORT = 8096    # accepts and never answers

HTTP = "http://%s:%d" % (HOST, HTTP_PORT)
OCSP_URL = "http://%s:%d" % (HOST, OCSP_PORT)
OCSP_WRONG_URL = "http://%s:%d" % (HOST, OCSP_WRONG_PORT)
OCSP_DOWN_URL = "http://%s:%d" % (HOST, OCSP_DOWN_PORT)
OCSP_GARBAGE_URL = HTTP + "/ocsp-garbage"
ROOT_CRL_URL = HTTP + "/crl/root.crl"
ISSUING_CRL_URL = HTTP + "/crl/rev-issuing.crl"
STALE_CRL_URL = HTTP + "/crl/stale.crl"
BASE_CRL_URL = HTTP + "/crl/base.crl"
DELTA_CRL_URL = HTTP + "/crl/delta.crl"
FORGED_CRL_URL = HTTP + "/crl/forged.crl"
CORRUPT_CRL_URL = HTTP + "/crl/corrupt.crl"
SUB_CRL_URL = HTTP + "/crl/revoked-sub.crl"
NOFRESH_CRL_URL = HTTP + "/crl/base-nofresh.crl"
REFRESH_CRL_URL = HTTP + "/crl/refresh.crl"
DOWN_DELTA_URL = "http://%s:%d/delta.crl" % (HOST, CDP_DOWN_PORT)
DOWN_CRL_URL = "http://%s:%d/unreachable.crl" % (HOST, CDP_DOWN_PORT)
SILENT_CRL_URL = "http://%s:%d/silent.crl" % (HOST, CDP_SILENT_PORT)

# Samba AD: where the Rev Issuing CA's CRL (and delta) is published, as AD CS does.
# slapd (dialect rfc4523): where the Rev LDAP CA's CRL and delta CRL are published
# (certificateRevocationList;binary, deltaRevocationList;binary on a cRLDistributionPoint).
AD_BASE_DN = "DC=lab,DC=test"
AD_CDP_DN = ("CN=Rev Issuing CA,CN=CDP,CN=Public Key Services,CN=Services,CN=Configuration,"
             + AD_BASE_DN)


def ldap_url(dn, attr, host=""):
    return "ldap://%s/%s?%s?base?objectClass=cRLDistributionPoint" % (
        host, urllib.parse.quote(dn, safe=",="), attr)


LDAP_CRL_URL = ldap_url(AD_CDP_DN, "certificateRevocationList")
LDAP_DELTA_URL = ldap_url(AD_CDP_DN, "deltaRevocationList")
LDAP_HOST_CRL_URL = ldap_url(AD_CDP_DN, "certificateRevocationList", host=HOST)

SLAPD_BASE_DN = "dc=lab,dc=test"
SLAPD_CDP_CONTAINER = "ou=CDP," + SLAPD_BASE_DN
SLAPD_CDP_DN = "cn=Rev LDAP CA," + SLAPD_CDP_CONTAINER
SLAPD_MISSING_DN = "cn=Rev Missing CA," + SLAPD_CDP_CONTAINER   # never created
# the attribute names as AD CS writes them: no ";binary" (certmap adds it in rfc4523)
SLAPD_CRL_URL = ldap_url(SLAPD_CDP_DN, "certificateRevocationList")
SLAPD_DELTA_URL = ldap_url(SLAPD_CDP_DN, "deltaRevocationList")
SLAPD_MISSING_URL = ldap_url(SLAPD_MISSING_DN, "certificateRevocationList")

UPN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
OCSP_NOCHECK = x509.ObjectIdentifier("1.3.6.1.5.5.7.48.1.5")

# name -> (issuing CA key, serial, cdp [[urls of one DP], ...] or None, freshest urls or None,
#          ocsp urls or None)
LEAVES = {
    # Rev OCSP CA: AIA only
    "rv-ocsp-good": ("ocsp", 0x5001, None, None, [OCSP_URL]),
    "rv-ocsp-revoked": ("ocsp", 0x5002, None, None, [OCSP_URL]),
    "rv-ocsp-unknown": ("ocsp", 0x5003, None, None, [OCSP_URL]),   # not in the index
    "rv-ocsp-down": ("ocsp", 0x5004, None, None, [OCSP_DOWN_URL]),
    "rv-ocsp-wrongsig": ("ocsp", 0x5005, None, None, [OCSP_WRONG_URL]),
    "rv-ocsp-garbage": ("ocsp", 0x5006, None, None, [OCSP_GARBAGE_URL]),
    "rv-ocsp-noaia": ("ocsp", 0x5007, None, None, None),  # revoked in the index
    "rv-ocsp-good2": ("ocsp", 0x5008, None, None, [OCSP_URL]),
    # Rev Issuing CA: CDP only
    "rv-crl-good": ("issuing", 0x4001, [[ISSUING_CRL_URL]], None, None),
    "rv-crl-revoked": ("issuing", 0x4002, [[ISSUING_CRL_URL]], None, None),
    "rv-crl-second-url": ("issuing", 0x4003, [[DOWN_CRL_URL, ISSUING_CRL_URL]], None, None),
    "rv-crl-stale": ("issuing", 0x4004, [[STALE_CRL_URL]], None, None),
    "rv-crl-stale-rev": ("issuing", 0x4005, [[STALE_CRL_URL]], None, None),
    "rv-crl-unreach": ("issuing", 0x4006, [[DOWN_CRL_URL]], None, None),
    "rv-crl-silent": ("issuing", 0x4007, [[SILENT_CRL_URL]], None, None),
    "rv-crl-delta": ("issuing", 0x4008, [[BASE_CRL_URL]], [DELTA_CRL_URL], None),
    "rv-crl-delta-ok": ("issuing", 0x4009, [[BASE_CRL_URL]], [DELTA_CRL_URL], None),
    "rv-crl-forged": ("issuing", 0x400A, [[FORGED_CRL_URL]], None, None),
    "rv-crl-delta-down": ("issuing", 0x400B, [[NOFRESH_CRL_URL]], [DOWN_DELTA_URL], None),
    "rv-ldap-good": ("issuing", 0x4101, [[LDAP_CRL_URL]], None, None),
    "rv-ldap-revoked": ("issuing", 0x4102, [[LDAP_CRL_URL]], None, None),
    "rv-ldap-delta": ("issuing", 0x4103, [[LDAP_CRL_URL]], [LDAP_DELTA_URL], None),
    "rv-ldaphost-rev": ("issuing", 0x4104, [[LDAP_HOST_CRL_URL]], None, None),
    # Rev File CA: nothing in the cert, crl_files decide
    "rv-file-a": ("file", 0x6001, None, None, None),
    "rv-file-b": ("file", 0x6002, None, None, None),
    # Rev Broken CA: its only CDP serves garbage
    "rv-broken": ("broken", 0x7001, [[CORRUPT_CRL_URL]], None, None),
    # Rev Refresh CA: its CDP CRL is rewritten by the test (certmapd refreshes it)
    "rv-cdp-refresh": ("refresh", 0x9001, [[REFRESH_CRL_URL]], None, None),
    # Rev Revoked Sub CA (revoked in root.crl); its own CRL is current and empty
    "rv-sub-a": ("sub", 0x8001, [[SUB_CRL_URL]], None, None),
    "rv-sub-b": ("sub", 0x8002, [[SUB_CRL_URL]], None, None),
    # Rev LDAP CA: ldap:/// CDPs read from slapd (the base CRL names the delta CRL); only
    # `certmapctl check` (stateless) asks for them, so one CA serves all four
    "rv-slapd-good": ("ldapca", 0xA001, [[SLAPD_CRL_URL]], None, None),
    "rv-slapd-revoked": ("ldapca", 0xA002, [[SLAPD_CRL_URL]], None, None),
    "rv-slapd-delta": ("ldapca", 0xA003, [[SLAPD_CRL_URL]], None, None),
    "rv-slapd-nodn": ("ldapca", 0xA004, [[SLAPD_MISSING_URL]], None, None),
}

OCSP_INDEX_REVOKED = ("rv-ocsp-revoked", "rv-ocsp-noaia")
OCSP_INDEX_GOOD = ("rv-ocsp-good", "rv-ocsp-good2", "rv-ocsp-down", "rv-ocsp-garbage",
                   "rv-ocsp-wrongsig")
ISSUING_CRL_REVOKED = ("rv-crl-revoked", "rv-crl-second-url")
STALE_CRL_REVOKED = ("rv-crl-stale-rev",)
DELTA_ONLY_REVOKED = ("rv-crl-delta",)
LDAP_CRL_REVOKED = ("rv-ldap-revoked", "rv-ldaphost-rev")
LDAP_DELTA_ONLY_REVOKED = ("rv-ldap-delta",)
SLAPD_LEAVES = ("rv-slapd-good", "rv-slapd-revoked", "rv-slapd-delta", "rv-slapd-nodn")
SLAPD_CRL_REVOKED = ("rv-slapd-revoked",)
SLAPD_DELTA_ONLY_REVOKED = ("rv-slapd-delta",)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def _name(cn, ou=None):
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Certmap Lab")]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _dp(urls):
    return x509.DistributionPoint(full_name=[x509.UniformResourceIdentifier(u) for u in urls],
                                  relative_name=None, reasons=None, crl_issuer=None)


class Node:
    """One certificate with its key and files."""

    def __init__(self, name, cert, key, directory):
        self.name = name
        self.cert = cert
        self.key = key
        self.pem = Path(directory) / (name + ".pem")
        self.key_path = Path(directory) / (name + ".key")
        self.pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(str(self.key_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))

    @property
    def der(self):
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def serial(self):
        return self.cert.serial_number

    @property
    def subject(self):
        return self.cert.subject


class RevocationPKI:
    """Makes the hierarchy, leaves, CRLs and the OCSP index in `directory`."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.www = self.dir / "www"
        (self.www / "crl").mkdir(parents=True, exist_ok=True)
        self.now = _now()
        self.not_before = self.now - datetime.timedelta(days=1)
        self.not_after = self.now + datetime.timedelta(days=3650)
        self.cas = {}
        self.leaves = {}
        self._make()

    # ---- certificates ----
    def _cert(self, name, subject, issuer, pubkey, signing_key, serial, ca=False,
              cdp=None, freshest=None, ocsp=None, eku=None, nocheck=False, upn=None):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer.subject
                                                                          if issuer else subject)
             .public_key(pubkey).serial_number(serial)
             .not_valid_before(self.not_before).not_valid_after(self.not_after))
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        b = b.add_extension(x509.KeyUsage(
            digital_signature=not ca, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
            encipher_only=False, decipher_only=False), critical=True)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(pubkey), critical=False)
        ikey = issuer.cert.public_key() if issuer else pubkey
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ikey),
                            critical=False)
        if eku:
            b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        if upn:
            der_upn = b"\x0c" + bytes([len(upn)]) + upn.encode()
            b = b.add_extension(x509.SubjectAlternativeName([
                x509.OtherName(UPN_OID, der_upn), x509.RFC822Name(upn)]), critical=False)
        if cdp:
            b = b.add_extension(x509.CRLDistributionPoints([_dp(u) for u in cdp]),
                                critical=False)
        if freshest:
            b = b.add_extension(x509.FreshestCRL([_dp(freshest)]), critical=False)
        if ocsp:
            b = b.add_extension(x509.AuthorityInformationAccess([
                x509.AccessDescription(AuthorityInformationAccessOID.OCSP,
                                       x509.UniformResourceIdentifier(u)) for u in ocsp]),
                critical=False)
        if nocheck:
            b = b.add_extension(x509.UnrecognizedExtension(OCSP_NOCHECK, b"\x05\x00"),
                                critical=False)
        return b.sign(signing_key, hashes.SHA256())

    def _ca(self, key, cn, serial, parent=None, cdp=None):
        k = ec.generate_private_key(ec.SECP256R1())
        cert = self._cert(key, _name(cn), parent, k.public_key(),
                          parent.key if parent else k, serial, ca=True, cdp=cdp)
        node = Node(key, cert, k, self.dir)
        self.cas[key] = node
        return node

    def _make(self):
        root = self._ca("root", "Rev Test Root CA", 0x1000)
        self._ca("issuing", "Rev Issuing CA", 0x1001, root, [[ROOT_CRL_URL]])
        self._ca("ocsp", "Rev OCSP CA", 0x1002, root, [[ROOT_CRL_URL]])
        self._ca("file", "Rev File CA", 0x1003, root, [[ROOT_CRL_URL]])
        self._ca("broken", "Rev Broken CA", 0x1004, root, [[ROOT_CRL_URL]])
        self._ca("sub", "Rev Revoked Sub CA", 0x1005, root, [[ROOT_CRL_URL]])
        self._ca("refresh", "Rev Refresh CA", 0x1007, root, [[ROOT_CRL_URL]])
        self._ca("ldapca", "Rev LDAP CA", 0x1008, root, [[ROOT_CRL_URL]])
        self._ca("unrelated", "Rev Unrelated CA", 0x1006)
        # OCSP responder certs: delegated (issued by Rev OCSP CA, EKU OCSPSigning) and one
        # from an unrelated CA (same EKU, wrong issuer).
        for name, issuer in (("ocsp-responder", "ocsp"), ("wrong-responder", "unrelated")):
            k = ec.generate_private_key(ec.SECP256R1())
            cert = self._cert(name, _name("Rev OCSP Responder (%s)" % name), self.cas[issuer],
                              k.public_key(), self.cas[issuer].key, 0x2000 + len(self.cas),
                              eku=[ExtendedKeyUsageOID.OCSP_SIGNING], nocheck=True)
            self.cas[name] = Node(name, cert, k, self.dir)
        for name, (ca, serial, cdp, freshest, ocsp) in LEAVES.items():
            k = ec.generate_private_key(ec.SECP256R1())
            issuer = self.cas[ca]
            cert = self._cert(name, _name(name, "Users"), issuer, k.public_key(), issuer.key,
                              serial, cdp=cdp, freshest=freshest, ocsp=ocsp,
                              eku=[ExtendedKeyUsageOID.CLIENT_AUTH], upn=name + "@lab.test")
            leaf = Node(name, cert, k, self.dir)
            # what curl sends: the leaf, then its issuing CA (the root is the anchor)
            leaf.client_pem = self.dir / (name + "-client.pem")
            leaf.client_pem.write_bytes(leaf.pem.read_bytes() + issuer.pem.read_bytes())
            leaf.chain = issuer.pem
            leaf.ca = ca
            self.leaves[name] = leaf
        self.anchor = root.pem
        self._crls()
        self._ocsp_index()

    # ---- CRLs ----
    def crl(self, ca, revoked=(), number=1, this_update=None, next_update=None,
            delta_of=None, freshest=None, signing_key=None, fmt="der"):
        """A CRL by CA `ca` (key in self.cas) listing the named leaves/CAs; bytes."""
        issuer = self.cas[ca]
        tu = this_update or (self.now - datetime.timedelta(hours=1))
        nu = next_update or (self.now + datetime.timedelta(days=7))
        b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.subject)
             .last_update(tu).next_update(nu))
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer.cert.public_key()), critical=False)
        b = b.add_extension(x509.CRLNumber(number), critical=False)
        if delta_of is not None:
            b = b.add_extension(x509.DeltaCRLIndicator(delta_of), critical=True)
        if freshest:
            b = b.add_extension(x509.FreshestCRL([_dp(freshest)]), critical=False)
        for name in revoked:
            serial = (self.leaves[name] if name in self.leaves else self.cas[name]).serial
            rb = (x509.RevokedCertificateBuilder().serial_number(serial)
                  .revocation_date(self.now - datetime.timedelta(hours=2))
                  .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise),
                                 critical=False))
            b = b.add_revoked_certificate(rb.build())
        crl = b.sign(signing_key or issuer.key, hashes.SHA256())
        return crl.public_bytes(serialization.Encoding.DER if fmt == "der"
                                else serialization.Encoding.PEM)

    def _crls(self):
        w = self.www / "crl"
        stale_tu = self.now - datetime.timedelta(days=10)
        stale_nu = self.now - datetime.timedelta(days=1)
        files = {
            "root.crl": self.crl("root", ["sub"]),
            "rev-issuing.crl": self.crl("issuing", ISSUING_CRL_REVOKED, number=3),
            "stale.crl": self.crl("issuing", STALE_CRL_REVOKED, number=1,
                                  this_update=stale_tu, next_update=stale_nu),
            "base.crl": self.crl("issuing", (), number=10, freshest=[DELTA_CRL_URL]),
            "delta.crl": self.crl("issuing", DELTA_ONLY_REVOKED, number=11, delta_of=10),
            # issuer name of Rev Issuing CA, signed by the unrelated CA's key
            "forged.crl": self.crl("issuing", (), number=99,
                                   signing_key=self.cas["unrelated"].key),
            "corrupt.crl": b"-----BEGIN X509 CRL-----\nthis is not a CRL\n-----END X509 CRL-----\n"
                           + os.urandom(200),
            "revoked-sub.crl": self.crl("sub", ()),
            "base-nofresh.crl": self.crl("issuing", (), number=12),
            "refresh.crl": self.crl("refresh", ()),
        }
        for n, data in files.items():
            (w / n).write_bytes(data)
        self.ldap_crl = self.crl("issuing", LDAP_CRL_REVOKED, number=20,
                                 freshest=[LDAP_DELTA_URL])
        self.ldap_delta = self.crl("issuing", LDAP_DELTA_ONLY_REVOKED, number=21, delta_of=20)
        self.slapd_crl = self.crl("ldapca", SLAPD_CRL_REVOKED, number=30,
                                  freshest=[SLAPD_DELTA_URL])
        self.slapd_delta = self.crl("ldapca", SLAPD_DELTA_ONLY_REVOKED, number=31, delta_of=30)
        # crl_files: Rev File CA (empty, and one listing rv-file-b), root (PEM on disk)
        self.file_crl_empty = self.crl("file", (), number=1, fmt="pem")
        self.file_crl_b = self.crl("file", ["rv-file-b"], number=2, fmt="pem")
        self.file_crl_a_b = self.crl("file", ["rv-file-a", "rv-file-b"], number=3, fmt="pem")
        self.root_crl_file = self.dir / "root.crl.pem"
        self.root_crl_file.write_bytes(self.crl("root", ["sub"], fmt="pem"))

    # ---- OCSP index (openssl ca database) ----
    def _ocsp_index(self):
        def t(d):
            return d.strftime("%y%m%d%H%M%SZ")
        lines = []
        for name in OCSP_INDEX_GOOD + OCSP_INDEX_REVOKED:
            leaf = self.leaves[name]
            dn = "/" + "/".join("%s=%s" % (a.rfc4514_attribute_name, a.value) for a in leaf.subject)
            if name in OCSP_INDEX_REVOKED:
                status, rev = "R", t(self.now - datetime.timedelta(hours=2)) + ",keyCompromise"
            else:
                status, rev = "V", ""
            lines.append("\t".join([status, t(self.not_after), rev, "%X" % leaf.serial,
                                    "unknown", dn]))
        self.ocsp_index = self.dir / "index.txt"
        self.ocsp_index.write_text("\n".join(lines) + "\n")
        (self.dir / "index.txt.attr").write_text("unique_subject = no\n")

    def leaf(self, name):
        return self.leaves[name]


# ------------------------------------------------------------------------------------------
# Servers


def wait_port(port, timeout=10, proc=None, what="server"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError("%s exited with %s" % (what, proc.returncode))
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("%s not listening on %d after %d s" % (what, port, timeout))


class Nginx:
    """nginx in the foreground (daemon off, master_process off) serving www/ on HTTP_PORT;
    /ocsp-garbage answers 200 with bytes that are no OCSP response, to GET and POST."""

    def __init__(self, workdir, www, port=HTTP_PORT):
        self.dir = Path(workdir)
        self.www = Path(www)
        self.port = port
        self.proc = None
        for d in ("logs", "tmp", "conf"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "conf" / "nginx.conf"
        self.access_log = self.dir / "logs" / "access.log"
        self.error_log = self.dir / "logs" / "error.log"
        tmp = self.dir / "tmp"
        self.conf.write_text("""
daemon off;
master_process off;
worker_processes 1;
pid %(dir)s/logs/nginx.pid;
error_log %(err)s info;
events { worker_connections 128; }
http {
    access_log %(acc)s;
    client_body_temp_path %(tmp)s/body;
    proxy_temp_path %(tmp)s/proxy;
    fastcgi_temp_path %(tmp)s/fastcgi;
    uwsgi_temp_path %(tmp)s/uwsgi;
    scgi_temp_path %(tmp)s/scgi;
    types { application/pkix-crl crl; }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:%(port)d;
        root %(www)s;
        location ^~ /ocsp-garbage {
            default_type application/ocsp-response;
            return 200 "this is not an OCSP response\\n";
        }
    }
}
""" % {"dir": self.dir, "err": self.error_log, "acc": self.access_log, "tmp": tmp,
       "port": port, "www": self.www})

    def start(self):
        self.out = open(self.dir / "logs" / "stdout", "wb")
        self.proc = subprocess.Popen(["nginx", "-p", str(self.dir), "-c", str(self.conf),
                                      "-e", str(self.error_log)],
                                     stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT)
        wait_port(self.port, proc=self.proc, what="nginx")
        return self

    def requests(self, path_part):
        """Access-log lines whose request contains path_part."""
        try:
            text = self.access_log.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [ln for ln in text.splitlines() if path_part in ln]

    def stop(self):
        _stop(self.proc)


class OcspResponder:
    """openssl ocsp -index ... -port P -rsigner ... -CA ...: answers good (V), revoked (R),
    unknown (serial not in the index)."""

    def __init__(self, pki, port, signer, key, ca, logdir):
        self.pki = pki
        self.port = port
        self.argv = ["openssl", "ocsp", "-index", str(pki.ocsp_index), "-port", str(port),
                     "-rsigner", str(signer), "-rkey", str(key), "-CA", str(ca),
                     "-nmin", "5", "-ignore_err", "-timeout", "3"]
        self.log = Path(logdir) / ("ocsp-%d.log" % port)
        self.proc = None

    def start(self):
        self.out = open(self.log, "wb")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT)
        # no TCP probe: the single-process responder would wait on the probe's connection
        deadline = time.monotonic() + 10
        while b"waiting for OCSP client connections" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("openssl ocsp on %d did not start (rc %s): %s" % (
                    self.port, self.proc.poll(), self.log.read_text(errors="replace")))
            time.sleep(0.05)
        return self

    def stop(self):
        _stop(self.proc)


class SilentListener:
    """Accepts TCP connections on a fixed port and never answers."""

    def __init__(self, port=CDP_SILENT_PORT):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, port))
        self.sock.listen(16)
        self.conns = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def stop(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for c in self.conns:
            c.close()


def _stop(proc):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ocsp_query(pki, leaf_name, url, issuer="ocsp"):
    """`openssl ocsp` as a client: the status line for leaf_name ("good", "revoked",
    "unknown") plus the verification result, for checking the responders themselves."""
    leaf = pki.leaf(leaf_name)
    argv = ["openssl", "ocsp", "-issuer", str(pki.cas[issuer].pem), "-cert", str(leaf.pem),
            "-url", url, "-CAfile", str(pki.anchor), "-timeout", "5"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    return r.returncode, r.stdout + r.stderr


def have_tools():
    missing = [t for t in ("nginx", "openssl", "curl") if shutil.which(t) is None]
    return missing
