#!/usr/bin/env python3
"""mkcerts.py -- many distinct client certificates for certmap-loadgen --mode storm.

Writes OUT/<prefix>NNNN.pem + .key (EC P-256, key 0600), issued by the given CA, shaped like the
lab's user certificates (certs-fixtures/README.md): subject CN=<name>,OU=Users,O=Certmap Lab,C=US,
SAN otherName UPN <name>@<domain> + email, EKU clientAuth, keyUsage digitalSignature (critical),
CA:FALSE, SKI/AKI, valid 2025-01-01 .. 2125-01-01. The accounts do not exist in any directory:
certmapd maps them to nothing unless the directory is seeded with them.

usage: mkcerts.py --ca-cert F --ca-key F --out DIR [--count N] [--prefix bench-] [--domain lab.test]
Needs python3-cryptography.
"""
import argparse
import datetime
import os
import sys

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier
except ImportError:  # pragma: no cover
    sys.exit("mkcerts.py: needs python3-cryptography")

UPN_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")


def der_utf8(s: str) -> bytes:
    b = s.encode()
    if len(b) >= 128:
        raise ValueError("UPN too long for this encoder")
    return bytes([0x0C, len(b)]) + b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ca-cert", required=True)
    ap.add_argument("--ca-key", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--prefix", default="bench-")
    ap.add_argument("--domain", default="lab.test")
    a = ap.parse_args()
    if not 1 <= a.count <= 20000:
        ap.error("--count: 1..20000")

    with open(a.ca_cert, "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    with open(a.ca_key, "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), password=None)
    os.makedirs(a.out, exist_ok=True)
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
    end = datetime.datetime(2125, 1, 1, tzinfo=datetime.timezone.utc)

    for i in range(a.count):
        name = f"{a.prefix}{i:04d}"
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Certmap Lab"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Users"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        upn = f"{name}@{a.domain}"
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(0x500000 + i)
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.OtherName(UPN_OID, der_utf8(upn)), x509.RFC822Name(upn)]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(aki, critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        with open(os.path.join(a.out, name + ".pem"), "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        kp = os.path.join(a.out, name + ".key")
        fd = os.open(kp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
    print(f"mkcerts.py: {a.count} certificates in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
