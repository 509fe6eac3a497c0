#!/usr/bin/env bash
# Regenerates the certmap lab PKI (docs/lab-contract.md) with the openssl CLI only
# (OpenSSL 3.0). Names, subjects, serials, dates and extensions are fixed; key material
# (and therefore signatures) is new on every run.
#
# usage: certs-fixtures/gen.sh [OUTDIR]      (default: pki/ next to this script)
set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${1:-$HERE/pki}
command -v openssl >/dev/null || { echo "gen.sh: openssl not found" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/certmap-pki.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
mkdir -p out
P=$WORK/out

# ---------------------------------------------------------------------------------------
# Fixed values
START=20250101000000Z          # default notBefore
END=21250101000000Z            # default notAfter
DOMAIN_SID=S-1-5-21-1111111111-2222222222-3333333333
UPN_OID=1.3.6.1.4.1.311.20.2.3
SID_EXT_OID=1.3.6.1.4.1.311.25.2
SID_OTHERNAME_OID=1.3.6.1.4.1.311.25.2.1
USER_DN="/C=US/O=Certmap Lab/OU=Users"   # + /CN=<name>

# ---------------------------------------------------------------------------------------
# Config files
cat > req.cnf <<'EOF'
[req]
distinguished_name = req_dn
string_mask = utf8only
prompt = no
[req_dn]
CN = unused
EOF

# Extension sections (all in one file, selected with -extensions).
cat > ext.cnf <<EOF
[v3_root]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[v3_issuing]
basicConstraints = critical,CA:TRUE,pathlen:1
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[v3_sub]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[v3_server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = IP:127.0.0.1,DNS:localhost,DNS:dc1.lab.test
EOF

# user_ext SECTION UPN_NAME EKU [SID] [EXTRA_DNS_COUNT]
#   UPN_NAME "-" = no SAN at all.
user_ext() {
  local sec=$1 name=$2 eku=$3 sid=${4:-} ndns=${5:-0} i
  {
    echo "[$sec]"
    echo "basicConstraints = CA:FALSE"
    echo "keyUsage = critical,digitalSignature"
    echo "extendedKeyUsage = $eku"
    echo "subjectKeyIdentifier = hash"
    echo "authorityKeyIdentifier = keyid:always"
    if [[ $name != - ]]; then
      echo "subjectAltName = @${sec}_san"
    fi
    if [[ -n $sid ]]; then
      # Windows form: GeneralNames { otherName [0] { OID ...25.2.1, [0] EXPLICIT OCTET STRING "<SID>" } }
      echo "$SID_EXT_OID = ASN1:SEQUENCE:${sec}_sid"
      echo "[${sec}_sid]"
      echo "sid = IMPLICIT:0,SEQUENCE:${sec}_sid_on"
      echo "[${sec}_sid_on]"
      echo "type = OID:$SID_OTHERNAME_OID"
      echo "value = EXPLICIT:0,OCTETSTRING:$sid"
    fi
    if [[ $name != - ]]; then
      echo "[${sec}_san]"
      echo "otherName.1 = $UPN_OID;UTF8:$name@lab.test"
      echo "email.1 = $name@lab.test"
      for ((i = 1; i <= ndns; i++)); do
        printf 'DNS.%d = nina-device-%04d.mobile.lab.test\n' "$i" "$i"
      done
    fi
    echo
  } >> ext.cnf
}

# ---------------------------------------------------------------------------------------
# Helpers

newkey_ec()  { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
                 -pkeyopt ec_param_enc:named_curve -out "$1" 2>/dev/null; }
newkey_rsa() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null; }

# mkdb NAME: an openssl ca database of its own (index, serial, crlnumber, config).
mkdb() {
  local d=$WORK/db-$1
  mkdir -p "$d/new"
  : > "$d/index.txt"
  echo "unique_subject = no" > "$d/index.txt.attr"
  echo 01 > "$d/crlnumber"
  cat > "$d/ca.cnf" <<EOF
[ca]
default_ca = CA_default
[CA_default]
dir = $d
database = \$dir/index.txt
new_certs_dir = \$dir/new
serial = \$dir/serial
crlnumber = \$dir/crlnumber
default_md = sha256
policy = policy_any
unique_subject = no
email_in_dn = no
copy_extensions = none
preserve = yes
[policy_any]
countryName = optional
organizationName = optional
organizationalUnitName = optional
commonName = supplied
[crl_ext]
authorityKeyIdentifier = keyid:always
EOF
}

# issue DB SERIAL(hex) KEY SUBJ EXTSECTION START END OUTFILE ISSUER_CERT|selfsign ISSUER_KEY
issue() {
  local db=$WORK/db-$1 serial=$2 key=$3 subj=$4 sec=$5 start=$6 end=$7 out=$8 icert=$9 ikey=${10}
  openssl req -new -config req.cnf -key "$key" -subj "$subj" -out "$WORK/tmp.csr"
  echo "$serial" > "$db/serial"
  local signer=(-cert "$icert" -keyfile "$ikey")
  [[ $icert == selfsign ]] && signer=(-selfsign -keyfile "$ikey")
  openssl ca -batch -config "$db/ca.cnf" "${signer[@]}" -in "$WORK/tmp.csr" -out "$out" \
    -notext -preserveDN -md sha256 -startdate "$start" -enddate "$end" \
    -extfile ext.cnf -extensions "$sec" 2>"$WORK/ca.log" || { cat "$WORK/ca.log" >&2; return 1; }
}

# ---------------------------------------------------------------------------------------
# CAs
for ca in root issuing sub rogue other; do mkdb $ca; done
mkdb serialdup   # second database for the issuing CA (duplicate serial allowed)
mkdb mallory     # self-signed leaf

for k in root-ca issuing-ca sub-ca rogue-ca other-ca; do newkey_ec "$P/$k.key"; done

ROOT_DN="/C=US/O=Certmap Lab/CN=Certmap Lab Root CA"
ISSUING_DN="/C=US/O=Certmap Lab/CN=Lab Issuing CA"
SUB_DN="/C=US/O=Certmap Lab/CN=Lab Sub CA"
OTHER_DN="/C=US/O=Elsewhere/CN=Unrelated CA"

issue root    1000 "$P/root-ca.key"    "$ROOT_DN"    v3_root    $START $END "$P/root-ca.pem"    selfsign         "$P/root-ca.key"
issue root    1001 "$P/issuing-ca.key" "$ISSUING_DN" v3_issuing $START $END "$P/issuing-ca.pem" "$P/root-ca.pem" "$P/root-ca.key"
issue issuing 1002 "$P/sub-ca.key"     "$SUB_DN"     v3_sub     $START $END "$P/sub-ca.pem"     "$P/issuing-ca.pem" "$P/issuing-ca.key"
issue rogue   1003 "$P/rogue-ca.key"   "$ISSUING_DN" v3_root    $START $END "$P/rogue-ca.pem"   selfsign         "$P/rogue-ca.key"
issue other   1004 "$P/other-ca.key"   "$OTHER_DN"   v3_root    $START $END "$P/other-ca.pem"   selfsign         "$P/other-ca.key"

# ---------------------------------------------------------------------------------------
# Server
newkey_ec "$P/server.key"
issue issuing 2000 "$P/server.key" "/C=US/O=Certmap Lab/CN=dc1.lab.test" v3_server $START $END \
  "$P/server.pem" "$P/issuing-ca.pem" "$P/issuing-ca.key"

# ---------------------------------------------------------------------------------------
# Users
ALICE_SERIAL=3001
ICA=("$P/issuing-ca.pem" "$P/issuing-ca.key")

# user FILE CN UPN_NAME SERIAL [DB=issuing] [EKU] [SID] [START] [END] [ISSUER cert key] [NDNS] [KEYTYPE]
user() {
  local file=$1 cn=$2 upn=$3 serial=$4 db=${5:-issuing} eku=${6:-clientAuth} sid=${7:-}
  local start=${8:-$START} end=${9:-$END} icert=${10:-${ICA[0]}} ikey=${11:-${ICA[1]}}
  local ndns=${12:-0} ktype=${13:-ec}
  local sec=u_${file//-/_}
  user_ext "$sec" "$upn" "$eku" "$sid" "$ndns"
  if [[ $ktype == rsa ]]; then newkey_rsa "$P/$file.key"; else newkey_ec "$P/$file.key"; fi
  [[ $icert == selfsign ]] && ikey=$P/$file.key
  issue "$db" "$serial" "$P/$file.key" "$USER_DN/CN=$cn" "$sec" "$start" "$end" "$P/$file.pem" "$icert" "$ikey"
}

#    file                cn                 upn       serial  db        eku         sid                 start            end
user alice              alice              alice     $ALICE_SERIAL issuing clientAuth "$DOMAIN_SID-1601" "" "" "" "" 0 rsa
user bob                bob                bob       3002
user carol              carol              carol     3003    issuing   clientAuth  "$DOMAIN_SID-1603"
user carol2             carol              carol     3004
user dave               dave               dave      3005
user erin               erin               erin      3006
user frank              frank              frank     3007
user shared             shared-device      -         3008
user mallory-selfsigned mallory            mallory   3009    mallory   clientAuth  ""  "" "" selfsign
user ivan               ivan               ivan      300A    sub       clientAuth  ""  "" "" "$P/sub-ca.pem" "$P/sub-ca.key"
user judy-revoked       judy               judy      300B
user kim-expired        kim                kim       300C    issuing   clientAuth  ""  20190101000000Z 20200101000000Z
user leo-notyet         leo                leo       300D    issuing   clientAuth  ""  21000101000000Z 21250101000000Z
user mike-serverauth    mike               mike      300E    issuing   serverAuth
user nina-large         nina               nina      300F    issuing   clientAuth  ""  "" "" "" "" 500
user oscar-meta         'O*scar (test) \\ x' oscar   3010
user peggy-unmapped     peggy              peggy     3011
user pat                pat                pat       3012    issuing   clientAuth  "$DOMAIN_SID-1616"
user victor-untrusted   victor             victor    3013    other     clientAuth  ""  "" "" "$P/other-ca.pem" "$P/other-ca.key"
user serialdup          alice-impostor     alice-impostor $ALICE_SERIAL serialdup
user rogue-alice        alice              alice     $ALICE_SERIAL rogue clientAuth "" "" "" "$P/rogue-ca.pem" "$P/rogue-ca.key"

# ---------------------------------------------------------------------------------------
# CRLs. Revocation date of judy-revoked: 2020-01-01 in both issuing-CA CRLs.
JUDY_SERIAL=300B
awk -F'\t' -v OFS='\t' -v s="$JUDY_SERIAL" \
  '$4 == s { $1 = "R"; $3 = "200101000000Z,keyCompromise" } { print }' \
  "$WORK/db-issuing/index.txt" > "$WORK/idx" && mv "$WORK/idx" "$WORK/db-issuing/index.txt"

gencrl() { # DB CERT KEY LAST NEXT CRLNUMBER(hex) OUT
  echo "$6" > "$WORK/db-$1/crlnumber"
  openssl ca -batch -config "$WORK/db-$1/ca.cnf" -gencrl -cert "$2" -keyfile "$3" -md sha256 \
    -crl_lastupdate "$4" -crl_nextupdate "$5" -crlexts crl_ext -out "$7" 2>"$WORK/ca.log" \
    || { cat "$WORK/ca.log" >&2; return 1; }
}
gencrl issuing "${ICA[@]}" 20200101000000Z 20210101000000Z 01 "$P/issuing-ca-stale.crl.pem"
gencrl issuing "${ICA[@]}" 20250101000000Z 21250101000000Z 02 "$P/issuing-ca.crl.pem"
gencrl root "$P/root-ca.pem" "$P/root-ca.key" 20250101000000Z 21250101000000Z 01 "$P/root-ca.crl.pem"
gencrl sub  "$P/sub-ca.pem"  "$P/sub-ca.key"  20250101000000Z 21250101000000Z 01 "$P/sub-ca.crl.pem"

# ---------------------------------------------------------------------------------------
# Derived files, bundles, malformed inputs
openssl x509 -in "$P/alice.pem" -outform DER -out "$P/alice.der"
cat "$P/root-ca.pem" "$P/issuing-ca.pem" > "$P/ca-bundle.pem"
cat "$P/server.pem"  "$P/issuing-ca.pem" > "$P/server-chain.pem"
cat "$P/alice.pem"   "$P/issuing-ca.pem" > "$P/alice-chain.pem"
cat "$P/sub-ca.pem"                       > "$P/ivan-chain.pem"

size=$(wc -c < "$P/alice.der")
head -c $((size / 2)) "$P/alice.der" > "$P/truncated.der"

# 384 deterministic pseudo-random bytes (AES-CTR keystream) that are not DER, in CERTIFICATE armor.
{
  echo "-----BEGIN CERTIFICATE-----"
  head -c 384 /dev/zero | openssl enc -aes-128-ctr -nosalt \
    -K 000102030405060708090a0b0c0d0e0f -iv 00000000000000000000000000000000 | openssl base64
  echo "-----END CERTIFICATE-----"
} > "$P/garbage.pem"
if openssl x509 -in "$P/garbage.pem" -noout 2>/dev/null; then echo "gen.sh: garbage.pem parses" >&2; exit 1; fi

openssl pkey -in "$P/peggy-unmapped.key" -pubout -out "$P/notacert.pem"

# ---------------------------------------------------------------------------------------
# Sanity checks
der_size=$(openssl x509 -in "$P/nina-large.pem" -outform DER | wc -c)
(( der_size > 10240 )) || { echo "gen.sh: nina-large.pem is only $der_size bytes" >&2; exit 1; }

mkdir -p "$OUT"
cp "$P"/* "$OUT"/
chmod 0644 "$OUT"/*
echo "gen.sh: wrote $(ls "$P" | wc -l) files to $OUT"
