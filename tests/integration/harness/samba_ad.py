"""Samba AD DC (dialect ``ad``) for tests: provision once (cached), start in seconds, seed.

See the package docstring for usage. Layout of the work directory:

    etc/smb.conf        regenerated on every start (the only file holding absolute paths)
    private/ state/ cache/ bind-dns/ *.tdb   the domain (restored from the provisioning cache)
    run/                pid file, ncalrpc sockets
    log/samba.log       Samba's output (``samba -i`` logs to stdout)
    tls/                server.pem, server.key (0600), ca-bundle.pem copied from the fixtures
    krb5.conf           for Kerberos clients (KRB5_CONFIG), no DNS lookups
    bind.pw             svc-certmap's password, one line, mode 0600 (written by seed())

The seeding itself runs in a child python that has the samba bindings
(``python3 -m harness _samba_worker``), on the local sam.ldb through samba.samdb.SamDB.
"""

import base64
import datetime
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from . import (HARNESS_VERSION, USER_PASSWORD, Directory, HarnessError, cert_der, copy_file,
               in_private_netns, load_accounts, network_interfaces, port_in_use, tail,
               write_secret)

REALM = "LAB.TEST"
NETBIOS = "LAB"
HOST_NAME = "dc1"
HOST_IP = "127.0.0.1"
DOMAIN_SID = "S-1-5-21-1111111111-2222222222-3333333333"
ADMIN_PASSWORD = "Lab-Admin-Passw0rd!"
# samba-tool domain passwordsettings set ...: no complexity/history/age, no lockout by bad
# passwords (threshold 0, so failing test binds never lock svc-certmap), and a lockout duration
# of "forever" (0 = until an administrator clears lockoutTime), so the seeded locked account
# stays locked however long the lab runs.
PASSWORD_SETTINGS = ["--complexity=off", "--history-length=0", "--min-pwd-length=0",
                     "--min-pwd-age=0", "--max-pwd-age=0", "--account-lockout-threshold=0",
                     "--account-lockout-duration=0", "--reset-account-lockout-after=30"]
# RIDs the fixture certificates carry in their SID extension (gen.sh).
PREFERRED_RIDS = {"alice": 1601, "carol": 1603, "pat": 1616}

# Global security group: nests inside other global groups of the same domain and may be a
# primary group.
GROUP_TYPE_GLOBAL_SECURITY = -2147483646
UAC_NORMAL_DONT_EXPIRE = 0x10200          # 66048 = NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD
UAC_DISABLED = UAC_NORMAL_DONT_EXPIRE | 0x2  # 66050
FILETIME_2020 = (int(datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc).timestamp())
                 + 11644473600) * 10 ** 7

DOMAIN_DIRS = ("private", "state", "cache", "bind-dns")


def _samba_version():
    try:
        r = subprocess.run(["samba", "--version"], capture_output=True, timeout=10)
        return r.stdout.decode().strip()
    except (OSError, subprocess.SubprocessError) as e:
        raise HarnessError("cannot run samba: %s (packages samba, python3-samba)" % e)


_SAMBA_PYTHON = None


def samba_python():
    """A python interpreter that can import the samba bindings."""
    global _SAMBA_PYTHON
    if _SAMBA_PYTHON:
        return _SAMBA_PYTHON
    env = os.environ.get("CERTMAP_SAMBA_PYTHON")
    candidates = [env] if env else [sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"]
    for py in candidates:
        if not py or not os.path.exists(py):
            continue
        r = subprocess.run([py, "-c", "import samba.samdb"], capture_output=True)
        if r.returncode == 0:
            _SAMBA_PYTHON = py
            return py
    raise HarnessError("no python3 with the samba bindings found (tried %s; install python3-samba "
                       "or set CERTMAP_SAMBA_PYTHON)" % ", ".join(c for c in candidates if c))


def cache_dir():
    d = os.environ.get("CERTMAP_CACHE_DIR")
    return Path(d) if d else Path.home() / ".cache" / "certmap"


def _rdn_escape(value):
    out = []
    for i, ch in enumerate(value):
        if ch in ',+"\\<>;=' or (ch == "#" and i == 0) or (ch == " " and i in (0, len(value) - 1)):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


class SambaAD(Directory):
    kind = "samba"
    dialect = "ad"
    cert_attr = "userCertificate"

    realm = REALM
    netbios_domain = NETBIOS
    domain_sid = DOMAIN_SID
    admin_password = ADMIN_PASSWORD
    user_password = USER_PASSWORD

    def __init__(self, workdir=None, pki_dir=None, accounts_json=None, start_timeout=30):
        super().__init__(workdir, pki_dir, accounts_json)
        self.start_timeout = start_timeout
        self.base_dn = ",".join("DC=" + p for p in self.realm.lower().split("."))
        self.uris = ["ldaps://127.0.0.1", "ldap://127.0.0.1"]
        self.admin_uri = self.uris[0]
        self.bind_dn = self.user_dn("svc-certmap")
        self.admin_dn = self.user_dn("Administrator")
        self.smb_conf = str(self.workdir / "etc" / "smb.conf")
        self.krb5_conf = str(self.workdir / "krb5.conf")
        self.sam_ldb = str(self.workdir / "private" / "sam.ldb")
        self.restored_from_cache = None
        self.seed_result = None

    # -- names -----------------------------------------------------------------------------
    def user_dn(self, name):
        return "CN=%s,CN=Users,%s" % (_rdn_escape(name), self.base_dn)

    group_dn = user_dn

    # -- provisioning and its cache -------------------------------------------------------
    def provision_params(self):
        return {"realm": self.realm, "domain": self.netbios_domain, "host_name": HOST_NAME,
                "host_ip": HOST_IP, "domain_sid": self.domain_sid,
                "admin_password": self.admin_password, "password_settings": PASSWORD_SETTINGS,
                "dns_backend": "NONE", "harness_version": HARNESS_VERSION,
                "samba_version": _samba_version()}

    def cache_file(self):
        key = hashlib.sha256(json.dumps(self.provision_params(), sort_keys=True).encode())
        return cache_dir() / ("samba-ad-%s.tar.gz" % key.hexdigest()[:20])

    def _domain_present(self):
        return os.path.exists(self.sam_ldb)

    def _clear_domain(self):
        for name in DOMAIN_DIRS + ("etc", "run"):
            shutil.rmtree(str(self.workdir / name), ignore_errors=True)
        for p in self.workdir.glob("*.tdb"):
            p.unlink()

    def _provision(self):
        """samba-tool domain provision into the work directory (needs root), then relax
        the password settings."""
        if os.geteuid() != 0:
            raise HarnessError("provisioning a Samba domain needs root (sysvol ACLs); run once "
                               "as root to fill the cache %s" % cache_dir())
        w = self.workdir
        self._clear_domain()
        (w / "etc").mkdir(parents=True, exist_ok=True)
        (w / "log").mkdir(parents=True, exist_ok=True)
        empty = w / "etc" / "empty.conf"
        empty.write_text("")
        opts = {"pid directory": w / "run", "ncalrpc dir": w / "run" / "ncalrpc",
                "winbindd socket directory": w / "run" / "winbindd",
                "ntp signd socket directory": w / "run" / "ntp_signd",
                "log file": w / "log" / "provision.log"}
        argv = ["samba-tool", "domain", "provision", "-s", str(empty), "--targetdir=%s" % w,
                "--realm=%s" % self.realm, "--domain=%s" % self.netbios_domain,
                "--host-name=%s" % HOST_NAME, "--host-ip=%s" % HOST_IP, "--server-role=dc",
                "--dns-backend=NONE", "--domain-sid=%s" % self.domain_sid,
                "--adminpass=%s" % self.admin_password, "--quiet"]
        argv += ["--option=%s=%s" % (k, v) for k, v in opts.items()]
        log = w / "log" / "provision.out"
        with open(str(log), "wb") as out:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise HarnessError("samba-tool domain provision failed (rc %d):\n%s"
                               % (r.returncode, tail(str(log))))
        self._write_config()
        with open(str(log), "ab") as out:
            r = subprocess.run(["samba-tool", "domain", "passwordsettings", "set", "-H", self.sam_ldb,
                                "-s", self.smb_conf] + PASSWORD_SETTINGS,
                               stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise HarnessError("samba-tool domain passwordsettings set failed (rc %d):\n%s"
                               % (r.returncode, tail(str(log))))
        empty.unlink()

    def _save_cache(self, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".tar.gz", dir=str(path.parent))
        os.close(fd)
        try:
            with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:
                for name in DOMAIN_DIRS:
                    if (self.workdir / name).exists():
                        tar.add(str(self.workdir / name), arcname=name)
                for p in sorted(self.workdir.glob("*.tdb")):
                    tar.add(str(p), arcname=p.name)
            os.chmod(tmp, 0o600)
            os.replace(tmp, str(path))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _restore_cache(self, path):
        self._clear_domain()
        with tarfile.open(str(path), "r:*") as tar:
            for m in tar.getmembers():
                if m.name.startswith("/") or ".." in Path(m.name).parts or not (m.isfile() or m.isdir()):
                    raise HarnessError("%s: unexpected member %s" % (path, m.name))
            if hasattr(tarfile, "data_filter"):
                tar.extractall(str(self.workdir), filter="data")
            else:
                tar.extractall(str(self.workdir))

    def provision(self, use_cache=True):
        """Make sure the work directory holds a provisioned domain: from the cache when
        present, else by provisioning (then cached). Returns True when restored from cache."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        cf = self.cache_file()
        t0 = time.monotonic()
        if use_cache and cf.exists():
            try:
                self._restore_cache(cf)
                self.timings["restore_s"] = time.monotonic() - t0
                self.restored_from_cache = True
                return True
            except (tarfile.TarError, OSError, EOFError, HarnessError) as e:
                sys.stderr.write("harness: dropping unusable cache %s: %s\n" % (cf, e))
                try:
                    cf.unlink()
                except OSError:
                    pass
        self._provision()
        self.timings["provision_s"] = time.monotonic() - t0
        if use_cache:
            t1 = time.monotonic()
            self._save_cache(cf)
            self.timings["cache_save_s"] = time.monotonic() - t1
        self.restored_from_cache = False
        return False

    # -- configuration ---------------------------------------------------------------------
    def _write_config(self):
        w = self.workdir
        for d in ("etc", "run", "log", "tls", "cache", "bind-dns"):
            (w / d).mkdir(parents=True, exist_ok=True)
        tls = w / "tls"
        if (self.pki_dir / "server.pem").exists():
            copy_file(self.pki_dir / "server.pem", tls / "server.pem", 0o600)
            copy_file(self.pki_dir / "server.key", tls / "server.key", 0o600)
            copy_file(self.pki_dir / "ca-bundle.pem", tls / "ca-bundle.pem", 0o644)
            tls_lines = ["tls enabled = yes",
                         "tls keyfile = %s" % (tls / "server.key"),
                         "tls certfile = %s" % (tls / "server.pem"),
                         "tls cafile = %s" % (tls / "ca-bundle.pem"),
                         "tls crlfile = "]
        else:
            tls_lines = ["tls enabled = no"]  # only while provisioning without fixtures
        lines = [
            "# generated by tests/integration/harness (regenerated on every start)",
            "[global]",
            "netbios name = %s" % HOST_NAME.upper(),
            "realm = %s" % self.realm,
            "workgroup = %s" % self.netbios_domain,
            "server role = active directory domain controller",
            "server services = ldap, kdc",
            "interfaces = %s" % HOST_IP,
            "bind interfaces only = yes",
            "private dir = %s" % (w / "private"),
            "lock directory = %s" % w,
            "state directory = %s" % (w / "state"),
            "cache directory = %s" % (w / "cache"),
            "binddns dir = %s" % (w / "bind-dns"),
            "pid directory = %s" % (w / "run"),
            "ncalrpc dir = %s" % (w / "run" / "ncalrpc"),
            "winbindd socket directory = %s" % (w / "run" / "winbindd"),
            "ntp signd socket directory = %s" % (w / "run" / "ntp_signd"),
            "log file = %s" % (w / "log" / "samba.log"),
            "log level = 1",
            "ldap server require strong auth = no",
        ] + tls_lines
        Path(self.smb_conf).write_text(lines[0] + "\n" + lines[1] + "\n"
                                       + "".join("\t%s\n" % l for l in lines[2:]))
        Path(self.krb5_conf).write_text(
            "[libdefaults]\n\tdefault_realm = {r}\n\tdns_lookup_realm = false\n"
            "\tdns_lookup_kdc = false\n\trdns = false\n\tforwardable = true\n"
            "[realms]\n\t{r} = {{\n\t\tkdc = {ip}\n\t}}\n"
            "[domain_realm]\n\t.{d} = {r}\n\t{d} = {r}\n"
            .format(r=self.realm, d=self.realm.lower(), ip=HOST_IP))

    # -- lifecycle -------------------------------------------------------------------------
    def _check_environment(self):
        if not in_private_netns() and os.environ.get("CERTMAP_HARNESS_ANY_NETNS") != "1":
            raise HarnessError(
                "refusing to run Samba outside a private network namespace (interfaces: %s); "
                "run under tests/integration/netns-run, or set CERTMAP_HARNESS_ANY_NETNS=1"
                % ", ".join(network_interfaces()))
        for port in (389, 636):
            if port_in_use(port):
                raise HarnessError("127.0.0.1:%d is already in use: another directory runs in this "
                                   "network namespace" % port)
        for f in ("server.pem", "server.key", "ca-bundle.pem"):
            if not (self.pki_dir / f).exists():
                raise HarnessError("fixture %s missing in %s" % (f, self.pki_dir))

    def start(self, fresh=False):
        """Start Samba. Keeps the domain already in the work directory (a restart after stop()
        keeps the seeded data) unless fresh=True; otherwise restores/provisions it."""
        if self.running():
            return self
        self._check_environment()
        t0 = time.monotonic()
        if fresh or not self._domain_present():
            self.provision()
            self.seeded = False
        self._write_config()
        t1 = time.monotonic()
        self._spawn(["samba", "-i", "-M", "single", "-s", self.smb_conf], "samba.log",
                    stdin_pipe=True)
        self._wait_ready()
        self.timings["ready_s"] = time.monotonic() - t1
        self.timings["start_s"] = time.monotonic() - t0
        return self

    def _wait_ready(self):
        deadline = time.monotonic() + self.start_timeout
        pending = list(self.uris)
        last = ""
        while pending:
            if self.proc.poll() is not None:
                self._fail("samba exited with status %s during startup" % self.proc.returncode)
            if time.monotonic() > deadline:
                self._terminate()
                self._fail("rootDSE not answering on %s after %ds (%s)"
                           % (", ".join(pending), self.start_timeout, last))
            uri = pending[0]
            r = subprocess.run(["ldapsearch", "-x", "-H", uri, "-o", "nettimeout=2", "-l", "3",
                                "-LLL", "-s", "base", "-b", "", "(objectClass=*)", "dnsHostName"],
                               capture_output=True, env=self.ldap_env())
            if r.returncode == 0 and b"dnsHostName" in r.stdout:
                pending.pop(0)
                continue
            last = r.stderr.decode("utf-8", "replace").strip()
            time.sleep(0.1)

    def stop(self):
        """SIGTERM Samba, wait, remove runtime files. The domain stays (start() again reuses
        it); destroy() removes a harness-made work directory."""
        self._terminate()
        shutil.rmtree(str(self.workdir / "run"), ignore_errors=True)

    # -- seeding ---------------------------------------------------------------------------
    def seed(self):
        """Groups, users, certificates, account states, svc-certmap and bind.pw from
        accounts.json and the fixture PKI. Works with Samba running or not."""
        t0 = time.monotonic()
        if not self._domain_present():
            raise HarnessError("no domain in %s: start() first" % self.workdir)
        acc = load_accounts(self.accounts_json)
        dom = acc.get("domain", {})
        if dom.get("realm", self.realm).upper() != self.realm or \
                dom.get("netbios", self.netbios_domain).upper() != self.netbios_domain:
            raise HarnessError("accounts.json domain %s does not match the harness's %s/%s"
                               % (dom, self.realm, self.netbios_domain))
        if not os.path.exists(self.smb_conf):
            self._write_config()
        bind_password = "Svc-" + secrets.token_urlsafe(18)
        users = []
        names = [u["name"] for u in acc["users"]]
        for u in acc["users"]:
            service = bool(u.get("service")) or u["name"] == "svc-certmap"
            users.append({
                "name": u["name"],
                "certs": [base64.b64encode(cert_der(c, self.pki_dir)).decode() for c in u.get("certs", [])],
                "state": u.get("state", "normal"),
                "primary_group": u.get("primary_group"),
                "rid": u.get("rid", PREFERRED_RIDS.get(u["name"])),
                "password": bind_password if service else self.user_password,
            })
        if "svc-certmap" not in names:
            users.append({"name": "svc-certmap", "certs": [], "state": "normal",
                          "primary_group": None, "rid": None, "password": bind_password})
        spec = {
            "smb_conf": self.smb_conf, "sam_ldb": self.sam_ldb, "realm": self.realm,
            "groups": [{"name": g["name"], "members": list(g.get("members", []))} for g in acc["groups"]],
            "users": users, "uac_normal": UAC_NORMAL_DONT_EXPIRE, "uac_disabled": UAC_DISABLED,
            "expired_filetime": FILETIME_2020, "group_type": GROUP_TYPE_GLOBAL_SECURITY,
        }
        env = dict(os.environ)
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent) + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        r = subprocess.run([samba_python(), "-m", "harness", "_samba_worker", "seed"],
                           input=json.dumps(spec).encode(), capture_output=True, env=env,
                           timeout=120)
        if r.returncode != 0:
            raise HarnessError("seeding Samba AD failed:\n%s" % r.stderr.decode("utf-8", "replace"))
        self.seed_result = json.loads(r.stdout.decode().strip().splitlines()[-1])
        write_secret(self.bind_password_file, bind_password)
        self.seeded = True
        self.timings["seed_s"] = time.monotonic() - t0
        return self.seed_result

    def object_sid(self, name):
        """objectSid of an account or group (a name or a DN) as 'S-1-5-21-...'."""
        from . import sid_to_str
        dn = name if "=" in name else self.user_dn(name)
        entries = self.search("(objectClass=*)", ["objectSid"], base=dn, scope="base", bind="admin")
        if not entries or "objectSid" not in entries[0][1]:
            raise HarnessError("%s has no objectSid" % dn)
        return sid_to_str(entries[0][1]["objectSid"][0])

    def add_aces(self, aces):
        """Adds ACEs (SDDL, e.g. "(OA;;WP;<attribute schemaIDGUID>;;<SID>)") to the DACL of
        objects: aces is [(name or DN, sddl_ace), ...]. Works with Samba running or not (local
        sam.ldb, one child process for all)."""
        spec = {"smb_conf": self.smb_conf, "sam_ldb": self.sam_ldb,
                "aces": [[n if "=" in n else self.user_dn(n), ace] for n, ace in aces]}
        self._run_worker("aces", spec)

    def add_users(self, names, group=None, certs=None, timeout=600):
        """Adds person accounts in bulk (one transaction on the local sam.ldb: 10,000 in
        seconds): sAMAccountName = cn = name, userPrincipalName and mail name@lab.test, no
        password (PASSWD_NOTREQD). certs: {name: [DER bytes or cert file, ...]}. group: a
        group name; created (global security) when missing; the accounts become direct
        members. Returns the DNs."""
        certs = certs or {}
        spec = {"smb_conf": self.smb_conf, "sam_ldb": self.sam_ldb, "realm": self.realm,
                "group": group, "group_type": GROUP_TYPE_GLOBAL_SECURITY,
                "users": [{"name": n, "certs": [base64.b64encode(cert_der(c, self.pki_dir)).decode()
                                                for c in certs.get(n, [])]} for n in names]}
        return self._run_worker("users", spec, timeout=timeout)["dns"]

    def _run_worker(self, command, spec, timeout=120):
        env = dict(os.environ)
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent) + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        r = subprocess.run([samba_python(), "-m", "harness", "_samba_worker", command],
                           input=json.dumps(spec).encode(), capture_output=True, env=env,
                           timeout=timeout)
        if r.returncode != 0:
            raise HarnessError("samba worker %s failed:\n%s"
                               % (command, r.stderr.decode("utf-8", "replace")))
        return json.loads(r.stdout.decode().strip().splitlines()[-1])

    def info(self):
        d = super().info()
        d.update({"realm": self.realm, "netbios_domain": self.netbios_domain,
                  "domain_sid": self.domain_sid, "admin_dn": self.admin_dn,
                  "krb5_conf": self.krb5_conf, "smb_conf": self.smb_conf})
        return d


# ------------------------------------------------------------------------------------------
# The seeding worker: runs under a python with the samba bindings (python3 -m harness
# _samba_worker seed < spec.json), prints one JSON line.


def _worker_seed(spec):
    import ldb
    from samba.auth import system_session
    from samba.dcerpc import security
    from samba.ndr import ndr_pack, ndr_unpack
    from samba.param import LoadParm
    from samba.samdb import SamDB

    lp = LoadParm()
    lp.load(spec["smb_conf"])
    db = SamDB(url=spec["sam_ldb"], session_info=system_session(), lp=lp)
    base = str(db.domain_dn())
    dom_sid = str(db.get_domain_sid())
    realm = spec["realm"].lower()
    result = {"users": {}, "groups": {}, "rids_requested": {}, "rids_skipped": {}, "notes": []}

    def dn_of(name):
        return "CN=%s,CN=Users,%s" % (_rdn_escape(name), base)

    def rid_of(dn):
        m = db.search(dn, scope=ldb.SCOPE_BASE, attrs=["objectSid"])
        return int(str(ndr_unpack(security.dom_sid, m[0]["objectSid"][0])).rsplit("-", 1)[1])

    # Keep the RID allocator away from the RIDs requested explicitly: the next RID pool would
    # otherwise start at 1600 and hand out 1601 again once 500 RIDs are used.
    wanted = [u["rid"] for u in spec["users"] if u.get("rid")]
    if wanted:
        rm = "CN=RID Manager$,CN=System," + base
        pool = int(str(db.search(rm, scope=ldb.SCOPE_BASE, attrs=["rIDAvailablePool"])[0]["rIDAvailablePool"][0]))
        low, high = pool & 0xFFFFFFFF, pool >> 32
        floor = (max(wanted) // 1000 + 1) * 1000
        if low <= max(wanted):
            m = ldb.Message(ldb.Dn(db, rm))
            m["rIDAvailablePool"] = ldb.MessageElement(str((high << 32) | floor),
                                                       ldb.FLAG_MOD_REPLACE, "rIDAvailablePool")
            db.modify(m)

    db.transaction_start()
    try:
        group_names = set()
        for g in spec["groups"]:
            dn = dn_of(g["name"])
            db.add({"dn": dn, "objectClass": "group", "sAMAccountName": g["name"],
                    "groupType": str(spec["group_type"]),
                    "description": "certmap lab group"})
            group_names.add(g["name"])
            result["groups"][g["name"]] = {"dn": dn, "rid": rid_of(dn)}

        now_filetime = (int(time.time()) + 11644473600) * 10 ** 7
        for u in spec["users"]:
            name, dn = u["name"], dn_of(u["name"])
            msg = {"dn": dn, "objectClass": "user", "sAMAccountName": name,
                   "userPrincipalName": "%s@%s" % (name, realm), "displayName": name,
                   "mail": "%s@%s" % (name, realm),
                   "unicodePwd": ('"%s"' % u["password"]).encode("utf-16-le"),
                   "userAccountControl": str(spec["uac_disabled"] if u["state"] == "disabled"
                                             else spec["uac_normal"])}
            if u["certs"]:
                msg["userCertificate"] = [base64.b64decode(c) for c in u["certs"]]
            if u["state"] == "expired":
                msg["accountExpires"] = str(spec["expired_filetime"])
            elif u["state"] == "locked":
                msg["lockoutTime"] = str(now_filetime)
                msg["badPwdCount"] = "0"
            elif u["state"] not in ("normal", "disabled"):
                raise ValueError("user %s: unknown state %r" % (name, u["state"]))
            if u.get("rid"):
                result["rids_requested"][name] = u["rid"]
                with_sid = dict(msg)
                with_sid["objectSid"] = ndr_pack(security.dom_sid("%s-%d" % (dom_sid, u["rid"])))
                try:
                    db.add(with_sid, controls=["relax:0"])
                except ldb.LdbError as e:
                    result["rids_skipped"][name] = str(e.args[-1])
                    db.add(msg)
            else:
                db.add(msg)
            result["users"][name] = {"dn": dn, "rid": rid_of(dn)}

        def add_members(gname, member_names):
            m = ldb.Message(ldb.Dn(db, dn_of(gname)))
            m["member"] = ldb.MessageElement([dn_of(x) for x in member_names],
                                             ldb.FLAG_MOD_ADD, "member")
            db.modify(m)

        for g in spec["groups"]:
            members = [x for x in g["members"]]
            unknown = [x for x in members if x not in group_names and x not in result["users"]]
            if unknown:
                raise ValueError("group %s: unknown members %s" % (g["name"], unknown))
            if members:
                add_members(g["name"], members)

        # Primary group: member first (AD requires it), then primaryGroupID; Samba, like AD,
        # then drops the explicit member link and makes Domain Users a plain membership.
        members_of = {g["name"]: set(g["members"]) for g in spec["groups"]}
        for u in spec["users"]:
            pg = u.get("primary_group")
            if not pg:
                continue
            if pg not in group_names:
                raise ValueError("user %s: primary group %s not among the groups" % (u["name"], pg))
            if u["name"] not in members_of[pg]:
                add_members(pg, [u["name"]])
            m = ldb.Message(ldb.Dn(db, dn_of(u["name"])))
            m["primaryGroupID"] = ldb.MessageElement(str(result["groups"][pg]["rid"]),
                                                     ldb.FLAG_MOD_REPLACE, "primaryGroupID")
            db.modify(m)
        db.transaction_commit()
    except BaseException:
        db.transaction_cancel()
        raise

    # Verify the account states as the directory computes them.
    for u in spec["users"]:
        m = db.search(dn_of(u["name"]), scope=ldb.SCOPE_BASE,
                      attrs=["userAccountControl", "msDS-User-Account-Control-Computed",
                             "accountExpires", "primaryGroupID"])[0]
        uac = int(str(m["userAccountControl"][0]))
        computed = int(str(m["msDS-User-Account-Control-Computed"][0]))
        checks = {"disabled": bool(uac & 2) == (u["state"] == "disabled"),
                  "locked": bool(computed & 0x10) == (u["state"] == "locked")}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise RuntimeError("user %s (state %s): %s wrong after seeding (uAC %d, computed %d)"
                               % (u["name"], u["state"], ",".join(bad), uac, computed))
        result["users"][u["name"]]["userAccountControl"] = uac
        result["users"][u["name"]]["computed"] = computed
        result["users"][u["name"]]["primaryGroupID"] = int(str(m["primaryGroupID"][0]))
    return result


def _worker_aces(spec):
    from samba.auth import system_session
    from samba.param import LoadParm
    from samba.samdb import SamDB
    from samba.sd_utils import SDUtils

    lp = LoadParm()
    lp.load(spec["smb_conf"])
    db = SamDB(url=spec["sam_ldb"], session_info=system_session(), lp=lp)
    sd = SDUtils(db)
    for dn, ace in spec["aces"]:
        sd.dacl_add_ace(dn, ace)
    return {"aces": len(spec["aces"])}


def _worker_users(spec):
    import ldb
    from samba.auth import system_session
    from samba.param import LoadParm
    from samba.samdb import SamDB

    lp = LoadParm()
    lp.load(spec["smb_conf"])
    db = SamDB(url=spec["sam_ldb"], session_info=system_session(), lp=lp)
    base = str(db.domain_dn())
    realm = spec["realm"].lower()

    def dn_of(name):
        return "CN=%s,CN=Users,%s" % (_rdn_escape(name), base)

    dns = []
    db.transaction_start()
    try:
        for u in spec["users"]:
            msg = {"dn": dn_of(u["name"]), "objectClass": "user", "sAMAccountName": u["name"],
                   "userPrincipalName": "%s@%s" % (u["name"], realm),
                   "mail": "%s@%s" % (u["name"], realm),
                   "userAccountControl": str(0x10220)}  # normal, no password needed, never expires
            if u["certs"]:
                msg["userCertificate"] = [base64.b64decode(c) for c in u["certs"]]
            db.add(msg)
            dns.append(msg["dn"])
        if spec.get("group"):
            gdn = dn_of(spec["group"])
            if not db.search(base, scope=ldb.SCOPE_SUBTREE,
                             expression="(&(objectClass=group)(sAMAccountName=%s))"
                             % ldb.binary_encode(spec["group"]), attrs=["cn"]):
                db.add({"dn": gdn, "objectClass": "group", "sAMAccountName": spec["group"],
                        "groupType": str(spec["group_type"])})
            for i in range(0, len(dns), 1000):
                m = ldb.Message(ldb.Dn(db, gdn))
                m["member"] = ldb.MessageElement(dns[i:i + 1000], ldb.FLAG_MOD_ADD, "member")
                db.modify(m)
        db.transaction_commit()
    except BaseException:
        db.transaction_cancel()
        raise
    return {"dns": dns}


def _worker_main(argv):
    workers = {"seed": _worker_seed, "aces": _worker_aces, "users": _worker_users}
    if argv[:1] not in [[k] for k in workers]:
        sys.stderr.write("usage: python3 -m harness _samba_worker seed|aces|users < spec.json\n")
        return 2
    spec = json.loads(sys.stdin.read())
    result = workers[argv[0]](spec)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0
