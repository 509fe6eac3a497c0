"""CLI: python3 -m harness {samba|slapd} start --dir D [--seed] ...   (see harness/__init__.py)

    python3 -m harness samba start --dir D [--seed] [--fresh] [--pki P] [--accounts A] [--no-stdin]
    python3 -m harness slapd start --dir D [--seed] [--port N] [--ldaps-port N] [--pki P] ...
    python3 -m harness samba provision [--dir D]      # fill the provisioning cache only

`start --seed` always starts from a fresh directory (samba: the cached provisioned domain);
`start` alone serves what --dir already holds (a restart). It prints one JSON line (uris, base_dn, bind_dn, bind_password_file, ca_file, pid, ...),
then runs until SIGTERM, SIGINT or EOF on stdin (unless --no-stdin), and stops the directory.
Exit status: 0 after a clean stop, 1 when the directory failed or died, 2 usage.
"""

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time

from . import HarnessError, SambaAD, Slapd, tail


def _build(args):
    if args.kind == "samba":
        return SambaAD(args.dir, args.pki, args.accounts)
    return Slapd(args.dir, args.pki, args.accounts, port=args.port, ldaps_port=args.ldaps_port)


def cmd_start(args):
    d = _build(args)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        d.start(fresh=args.fresh or args.seed)
        if args.seed:
            d.seed()
        info = d.info()
        info["timings"] = {k: round(v, 3) for k, v in d.timings.items()}
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()

        if not args.no_stdin:
            def watch_stdin():
                try:
                    while os.read(0, 4096):
                        pass
                except OSError:
                    pass
                stop.set()
            threading.Thread(target=watch_stdin, daemon=True).start()

        while not stop.wait(0.5):
            if not d.running():
                sys.stderr.write("harness: %s died (status %s)\n--- %s ---\n%s\n" % (
                    d.kind, d.proc.poll() if d.proc else "?", d.log_file, tail(d.log_file)))
                d.stop()
                return 1
        d.stop()
        return 0
    except HarnessError as e:
        sys.stderr.write("harness: %s\n" % e)
        d.stop()
        return 1
    except BaseException:
        d.stop()
        raise


def cmd_provision(args):
    d = SambaAD(args.dir or tempfile.mkdtemp(prefix="certmap-harness-provision-"), args.pki,
                args.accounts)
    t0 = time.monotonic()
    cached = d.provision()
    print(json.dumps({"cache_file": str(d.cache_file()), "from_cache": cached,
                      "seconds": round(time.monotonic() - t0, 3)}))
    if not args.dir:
        import shutil
        shutil.rmtree(str(d.workdir), ignore_errors=True)
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_samba_worker"]:
        from .samba_ad import _worker_main
        return _worker_main(argv[1:])
    p = argparse.ArgumentParser(prog="python3 -m harness",
                                description="Samba AD / slapd directories for certmap tests")
    p.add_argument("kind", choices=["samba", "slapd"])
    p.add_argument("action", choices=["start", "provision"])
    p.add_argument("--dir", help="work directory (created if missing)")
    p.add_argument("--seed", action="store_true", help="seed from accounts.json after start")
    p.add_argument("--fresh", action="store_true",
                   help="discard data already in --dir (samba: restore the cached domain; "
                        "implied by --seed); without it a restart serves the old data")
    p.add_argument("--pki", help="fixture PKI dir (default certs-fixtures/pki)")
    p.add_argument("--accounts", help="accounts.json (default certs-fixtures/accounts.json)")
    p.add_argument("--port", type=int, help="slapd: ldap:// port (default random)")
    p.add_argument("--ldaps-port", type=int, help="slapd: ldaps:// port (default random)")
    p.add_argument("--no-stdin", action="store_true", help="do not stop on EOF on stdin")
    args = p.parse_args(argv)
    if args.action == "provision":
        if args.kind != "samba":
            p.error("provision is for samba only")
        return cmd_provision(args)
    if not args.dir:
        p.error("start needs --dir")
    return cmd_start(args)


if __name__ == "__main__":
    sys.exit(main())
