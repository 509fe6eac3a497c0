"""Real directories for certmap's integration tests and the lab: Samba AD and OpenLDAP slapd.

Usage (Python):

    import sys; sys.path.insert(0, "tests/integration")      # or PYTHONPATH=tests/integration
    from harness import SambaAD, Slapd

    ad = SambaAD("/tmp/certmap-harness-x/ad")                  # pki/accounts default to the repo's
    ad.start()          # restores the cached provisioned domain (or provisions and caches it)
    ad.seed()           # groups, users, certificates, states, svc-certmap + bind.pw
    ad.uris             # ["ldaps://127.0.0.1", "ldap://127.0.0.1"]
    ad.stop()

    ldap = Slapd("/tmp/certmap-harness-x/slapd")              # random free ports
    ldap.start(); ldap.seed(); ...; ldap.stop()

Both classes are context managers (``with SambaAD(d) as ad:`` starts, seeds and stops) and share:
``uris``, ``base_dn``, ``bind_dn``, ``bind_password_file``, ``ca_file``, ``pid``, ``dialect``,
``info()`` (a JSON-able dict), ``user_dn(name)``, ``group_dn(name)``, ``search(...)``,
``modify_user_certs(name, add=[...], delete=[...])``, ``set_member(group, member, present)``,
``add_users(names, group=None, certs=None)`` (bulk accounts, e.g. 10,000 for benchmarks).
SambaAD also has ``object_sid(name)`` and ``add_aces([(name or DN, sddl_ace), ...])`` (e.g. write
rights on userCertificate for svc-certmap); ``Slapd(..., extra_db_config=...)`` puts slapd.conf
lines (ACLs, limits) before the default access rules.

Samba AD listens on the fixed ports 389/636 (and 88): it must run inside a private network
namespace -- run the tests (or the CLI) under ``tests/integration/netns-run`` (root), which
also keeps parallel jobs apart. Provisioning needs real root; serving a cached domain does not.

CLI (from the repository root, or anywhere with PYTHONPATH pointing at tests/integration):

    cd tests/integration && ./netns-run python3 -m harness samba start --dir /tmp/certmap-harness-lab/ad --seed
    PYTHONPATH=tests/integration tests/integration/netns-run \\
        python3 -m harness slapd start --dir /tmp/certmap-harness-lab/slapd --seed

prints one JSON line (uris, base_dn, bind_dn, bind_password_file, ca_file, pid, ...) and keeps
the directory running until SIGTERM/SIGINT or EOF on stdin (``--no-stdin``: ignore stdin).
``--seed`` starts from fresh data; without it a restart serves what --dir holds. Other
processes join the directory's namespace with ``nsenter -t <pid> -n CMD``.
``python3 -m harness samba provision`` only fills the provisioning cache.

seed() expects a fresh directory (start(fresh=True), or a new work directory); stop() keeps the
data so start() again is a restart (outage tests); destroy() also removes a harness-made dir.

Environment: CERTMAP_CACHE_DIR (cache of provisioned domains; default ~/.cache/certmap),
CERTMAP_SAMBA_PYTHON (a python3 that can ``import samba``; default: this interpreter if it can,
else /usr/bin/python3), CERTMAP_HARNESS_ANY_NETNS=1 (allow Samba in a namespace that has
interfaces besides lo, e.g. a container's own namespace).

Only the standard library is used here; the Samba seeding runs in a child process of a python
that has the ``samba`` bindings (Debian's python3-samba).
"""

import base64
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

HARNESS_VERSION = "1"

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
DEFAULT_PKI_DIR = REPO_ROOT / "certs-fixtures" / "pki"
DEFAULT_ACCOUNTS_JSON = REPO_ROOT / "certs-fixtures" / "accounts.json"

# Password of every seeded person account (the bind account gets a random one in bind.pw).
USER_PASSWORD = "Lab-User-Passw0rd!"


class HarnessError(RuntimeError):
    """A directory could not be provisioned, started or seeded."""


# --------------------------------------------------------------------------------------------
# Small utilities


def cert_der(source, pki_dir=None):
    """DER bytes of a certificate given as DER bytes, or a PEM/DER file (relative to pki_dir).

    A PEM file with several certificates yields the first one."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    path = Path(source)
    if not path.is_absolute() and pki_dir is not None:
        path = Path(pki_dir) / path
    data = path.read_bytes()
    m = re.search(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", data, re.S)
    if m:
        return base64.b64decode(b"".join(m.group(1).split()))
    if data[:1] != b"\x30":
        raise HarnessError("%s: neither a PEM certificate nor DER" % path)
    return data


def load_accounts(path):
    with open(path, "rb") as f:
        acc = json.load(f)
    for key in ("domain", "groups", "users"):
        if key not in acc:
            raise HarnessError("%s: missing key %r" % (path, key))
    return acc


def sid_to_str(raw):
    """Binary SID (objectSid, tokenGroups values) -> 'S-1-5-21-...'."""
    raw = bytes(raw)
    rev, n = raw[0], raw[1]
    auth = int.from_bytes(raw[2:8], "big")
    subs = [int.from_bytes(raw[8 + 4 * i:12 + 4 * i], "little") for i in range(n)]
    return "S-%d-%d" % (rev, auth) + "".join("-%d" % s for s in subs)


def filter_escape_bytes(data):
    """Every byte as \\XX: an LDAP filter assertion value for an octet string (AD dialect)."""
    return "".join("\\%02x" % b for b in bytes(data))


def ldif_attr(name, value):
    """One LDIF line; values are always base64 (``::``) unless plain printable ASCII."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    if value and all(0x20 <= b < 0x7F for b in value) and value[:1] not in (b" ", b":", b"<") \
            and value[-1:] != b" ":
        return "%s: %s\n" % (name, value.decode("ascii"))
    return "%s:: %s\n" % (name, base64.b64encode(value).decode("ascii"))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port, host="127.0.0.1"):
    """True when something listens on host:port (a TIME_WAIT leftover does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
            if e.errno == errno.EACCES:
                raise HarnessError("cannot probe %s:%d: %s (privileged port, not root?)" % (host, port, e))
            raise
    return False


def network_interfaces():
    """Interfaces of this process's network namespace (/sys/class/net would show the
    namespace sysfs was mounted in)."""
    try:
        with open("/proc/self/net/dev") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return []
    return sorted(line.split(":", 1)[0].strip() for line in lines if ":" in line)


def in_private_netns():
    """Heuristic: a namespace made by netns-run has only lo."""
    return network_interfaces() == ["lo"]


def _pdeathsig():
    """preexec_fn: the child gets SIGTERM when the harness dies, even by SIGKILL."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def process_alive(pid):
    """Alive and not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return "(no log: %s)" % e
    return "\n".join(data.splitlines()[-lines:])


def write_secret(path, text):
    """One line, mode 0600 (created so, never world-readable in between)."""
    path = Path(path)
    if path.exists():
        path.unlink()
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    os.chmod(str(path), 0o600)


def copy_file(src, dst, mode):
    shutil.copyfile(str(src), str(dst))
    os.chmod(str(dst), mode)


def parse_ldif(text):
    """ldapsearch -LLL -o ldif-wrap=no output -> [(dn, {attr: [bytes, ...]})]."""
    entries = []
    for block in re.split(r"\n\s*\n", text.strip("\n")):
        dn, attrs = None, {}
        for line in block.splitlines():
            if not line or line.startswith("#"):
                continue
            m = re.match(r"^([^:]+)(::?) ?(.*)$", line)
            if not m:
                continue
            name, sep, value = m.groups()
            raw = base64.b64decode(value) if sep == "::" else value.encode("utf-8")
            if dn is None:
                if name.lower() != "dn":
                    break  # a search reference ("ref: ...") or other non-entry block
                dn = raw.decode("utf-8")
                continue
            attrs.setdefault(name, []).append(raw)
        if dn is not None:
            entries.append((dn, attrs))
    return entries


class LdapError(HarnessError):
    def __init__(self, msg, rc, stderr):
        super().__init__(msg)
        self.rc = rc
        self.stderr = stderr


# --------------------------------------------------------------------------------------------
# Common base of both directories


class Directory:
    """What SambaAD and Slapd share: paths, attributes, ldap-utils based client helpers."""

    kind = None          # "samba" | "slapd"
    dialect = None       # "ad" | "rfc4523"
    cert_attr = None     # attribute written/read for certificates

    def __init__(self, workdir=None, pki_dir=None, accounts_json=None):
        self._own_workdir = workdir is None
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="certmap-harness-%s-" % self.kind)
        self.workdir = Path(workdir).resolve()
        self.pki_dir = Path(pki_dir or DEFAULT_PKI_DIR).resolve()
        self.accounts_json = Path(accounts_json or DEFAULT_ACCOUNTS_JSON).resolve()
        self.bind_password_file = str(self.workdir / "bind.pw")
        self.ca_file = str(self.pki_dir / "ca-bundle.pem")
        self.proc = None
        self.log_file = None
        self._log_fh = None
        self.seeded = False
        self.timings = {}

    # -- process plumbing ------------------------------------------------------------------
    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None and process_alive(self.proc.pid)

    def _spawn(self, argv, log_name, stdin_pipe=False, env=None):
        (self.workdir / "log").mkdir(parents=True, exist_ok=True)
        self.log_file = str(self.workdir / "log" / log_name)
        self._log_fh = open(self.log_file, "ab")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            stdout=self._log_fh, stderr=subprocess.STDOUT, cwd=str(self.workdir),
            env=env, preexec_fn=_pdeathsig, start_new_session=True)
        return self.proc

    def _terminate(self, timeout=10):
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            if proc.stdin:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def _fail(self, what):
        raise HarnessError("%s: %s\n--- last lines of %s ---\n%s"
                           % (self.kind, what, self.log_file, tail(self.log_file)))

    # -- LDAP client helpers (ldap-utils) --------------------------------------------------
    def ldap_env(self, ca_file=None):
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("LDAPTLS_") or k in ("LDAPNOINIT", "LDAPURI", "LDAPBASE", "LDAPBINDDN"):
                del env[k]
        env["LDAPCONF"] = "/dev/null"           # no /etc/ldap/ldap.conf surprises
        env["LDAPRC"] = "certmap-harness-no-ldaprc"
        env["LDAPTLS_CACERT"] = str(ca_file or self.ca_file)
        env["LDAPTLS_REQCERT"] = "demand"
        return env

    def _credentials(self, bind):
        """bind: 'service' (svc-certmap), 'admin', None (anonymous) or (dn, password)."""
        if bind is None:
            return None
        if bind == "service":
            with open(self.bind_password_file) as f:
                return self.bind_dn, f.read().rstrip("\n")
        if bind == "admin":
            return self.admin_dn, self.admin_password
        return bind

    def _ldap_tool(self, tool, args, bind, uri=None, starttls=False, ca_file=None, input_data=None,
                   timeout=30, ok_codes=(0,)):
        uri = uri or self.uris[0]
        argv = [tool, "-H", uri, "-o", "nettimeout=5"]
        if starttls:
            argv.append("-ZZ")
        cred = self._credentials(bind)
        pwfile = None
        if cred is None:
            argv.append("-x")
        else:
            fd, pwfile = tempfile.mkstemp(prefix="certmap-harness-pw-")
            with os.fdopen(fd, "w") as f:
                f.write(cred[1])
            argv += ["-x", "-D", cred[0], "-y", pwfile]
        try:
            r = subprocess.run(argv + list(args), input=input_data, capture_output=True,
                               env=self.ldap_env(ca_file), timeout=timeout)
        finally:
            if pwfile:
                os.unlink(pwfile)
        if r.returncode not in ok_codes:
            raise LdapError("%s %s failed (rc %d): %s"
                            % (tool, uri, r.returncode, r.stderr.decode("utf-8", "replace").strip()),
                            r.returncode, r.stderr)
        return r

    def search(self, filt="(objectClass=*)", attrs=(), base=None, scope="sub", bind="service",
               uri=None, starttls=False, ca_file=None, extra_args=()):
        """ldapsearch; returns [(dn, {attr: [bytes]})]. Raises LdapError on failure."""
        args = ["-LLL", "-o", "ldif-wrap=no", "-b", self.base_dn if base is None else base,
                "-s", scope] + list(extra_args) + [filt] + list(attrs)
        r = self._ldap_tool("ldapsearch", args, bind, uri=uri, starttls=starttls, ca_file=ca_file,
                            ok_codes=(0, 4))  # 4: size limit exceeded still returns entries
        return parse_ldif(r.stdout.decode("utf-8", "replace"))

    def ldapmodify(self, ldif, bind="admin", ok_codes=(0,), continue_on_error=False):
        args = ["-c"] if continue_on_error else []
        return self._ldap_tool("ldapmodify", args, bind, input_data=ldif.encode("utf-8"),
                               uri=self.admin_uri, ok_codes=ok_codes)

    # -- shared write helpers --------------------------------------------------------------
    def modify_user_certs(self, name, add=(), delete=()):
        """Value-level add/delete of certificates (DER bytes, or cert files; relative names are
        taken from pki_dir) on account `name`. Adding a present value or deleting an absent one
        is not an error."""
        dn = self.user_dn(name)
        for op, items in (("add", add), ("delete", delete)):
            for item in items:
                ldif = "dn: %s\nchangetype: modify\n%s: %s\n%s-\n" % (
                    dn, op, self.cert_attr, ldif_attr(self.cert_attr, cert_der(item, self.pki_dir)))
                # 20 attributeOrValueExists, 16 noSuchAttribute (value absent)
                self.ldapmodify(ldif, ok_codes=(0, 20, 16))

    def set_member(self, group, member, present=True):
        """Make `member` (a user or group name, or a DN) a direct member of `group` or not."""
        gdn = group if "=" in group else self.group_dn(group)
        if "=" in member:
            mdn = member
        else:
            mdn = self.group_dn(member) if member in self._group_names() else self.user_dn(member)
        ldif = "dn: %s\nchangetype: modify\n%s: member\n%s-\n" % (
            gdn, "add" if present else "delete", ldif_attr("member", mdn))
        # 20/68: already a member; 16/53: not a member (AD answers 53 unwillingToPerform)
        self.ldapmodify(ldif, ok_codes=(0, 16, 20, 68) + ((53,) if not present else ()))

    def _group_names(self):
        try:
            return {g["name"] for g in load_accounts(self.accounts_json)["groups"]}
        except (OSError, HarnessError, ValueError):
            return set()

    def info(self):
        return {
            "kind": self.kind, "dialect": self.dialect, "uris": list(self.uris),
            "base_dn": self.base_dn, "bind_dn": self.bind_dn,
            "bind_password_file": self.bind_password_file, "ca_file": self.ca_file,
            "pid": self.pid, "workdir": str(self.workdir), "log_file": self.log_file,
        }

    def destroy(self):
        """stop() and remove the work directory if the harness created it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(str(self.workdir), ignore_errors=True)

    def __enter__(self):
        self.start()
        try:
            self.seed()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.destroy()
        return False


from .samba_ad import SambaAD  # noqa: E402
from .slapd import Slapd  # noqa: E402

__all__ = ["SambaAD", "Slapd", "HarnessError", "LdapError", "cert_der", "sid_to_str",
           "filter_escape_bytes", "parse_ldif", "USER_PASSWORD", "HARNESS_VERSION"]
