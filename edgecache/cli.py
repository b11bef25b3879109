"""The command line: subcommands and exit codes, no logic.

Exit codes: 0 success, 1 a runtime failure, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import replace
from pathlib import Path

from edgecache import __version__
from edgecache.airgap.cli import airgap, airgap_parsers
from edgecache.cluster.cli import peers_command, peers_parser
from edgecache.config import Config, InvalidConfig, load
from edgecache.errors import ConfigError, EdgecacheError
from edgecache.local.gccli import gc_command, gc_parser
from edgecache.ops.pinscli import pin_parsers, pins_command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgecache", description="Edge registry mirror.")
    parser.add_argument("--version", action="version", version=f"edgecache {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the mirror")
    serve.add_argument("--config", help="YAML configuration (embedded defaults when omitted)")
    serve.add_argument("--storage-path", help="override storage.path")
    check = sub.add_parser("check-config", help="validate a configuration and exit")
    check.add_argument("--config", required=True)
    verify = sub.add_parser("verify", help="re-hash every cached blob (exit 1 if any is corrupt)")
    verify.add_argument("--config")
    verify.add_argument("--storage-path", help="override storage.path")
    verify.add_argument("--repair", action="store_true",
                        help="remove corrupt blobs and reconcile the index with the files")
    ca = sub.add_parser("ca", help="print the local CA certificate (PEM), creating it if needed")
    ca.add_argument("--config")
    ca.add_argument("--storage-path", help="override storage.path")
    client = sub.add_parser("client-config",
                            help="write or print containerd, podman, k3s and Docker config")
    client.add_argument("--config")
    client.add_argument("--storage-path", help="override storage.path")
    client.add_argument("--out", help="write the files under this root ('/' installs them), "
                                      "merged into files already there (the old one kept as "
                                      "*.edgecache-bak); without it they are printed")
    client.add_argument("--diff", action="store_true",
                        help="show what --out (default /) would change; write nothing")
    client.add_argument("--address", action="append", default=[],
                        help="host[:port] clients use to reach this mirror (repeatable)")
    client.add_argument("--username", help="a user of auth.htpasswd_file: put its credentials "
                                           "for the mirror into hosts.toml and registries.yaml")
    client.add_argument("--password-file", help="the file holding --username's password")
    client.add_argument("--show-secrets", action="store_true",
                        help="with --username, allow printing (no --out) or --diff, which "
                             "show the password on stdout")
    du = sub.add_parser("du", help="show cache usage by upstream and by image")
    ls = sub.add_parser("ls", help="list the images held: size, last use, pinned")
    for reader in (du, ls):
        reader.add_argument("--config")
        reader.add_argument("--storage-path", help="override storage.path")
        reader.add_argument("--json", action="store_true", help="one JSON document")
    airgap_parsers(sub)
    gc_parser(sub)
    pin_parsers(sub)
    peers_parser(sub)
    return parser


def _load(args: argparse.Namespace) -> Config:
    """The config, with `--storage-path` replacing only the path: the quota (max_size,
    min_free, watermarks) still applies to wherever the cache lives."""
    config = load(args.config)
    override = getattr(args, "storage_path", None)
    if override is not None:
        if not override.strip():
            raise ConfigError("--storage-path: must not be empty")
        config = replace(config, storage=replace(config.storage, path=Path(override)))
    return config


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = _load(args)
    except ConfigError as exc:
        for problem in exc.problems if isinstance(exc, InvalidConfig) else (str(exc),):
            print(f"edgecache: config: {problem}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"{args.config}: ok ({len(config.upstreams)} upstreams)")
        return 0
    if args.command in ("ca", "client-config"):
        try:
            _check_client_options(args)
        except ConfigError as exc:
            print(f"edgecache: {exc}", file=sys.stderr)
            return 2
        try:
            return _ca(config) if args.command == "ca" else _client_config(config, args)
        except (EdgecacheError, OSError) as exc:
            print(f"edgecache: {exc}", file=sys.stderr)
            return 1
    if args.command in ("warm", "export", "import"):
        return airgap(config, args)
    if args.command == "gc":
        return gc_command(config, args)
    if args.command in ("pin", "unpin", "pins"):
        return pins_command(config, args)
    if args.command == "peers":
        return peers_command(config, args)
    if args.command in ("verify", "du", "ls"):
        from edgecache.ops import cachecli

        try:
            if args.command == "verify":
                return cachecli.verify(config, args.repair)
            return (cachecli.du if args.command == "du" else cachecli.ls)(config, args.json)
        except (EdgecacheError, OSError) as exc:
            print(f"edgecache: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # a long verify stopped by hand: one line, not a traceback
            print("edgecache: interrupted", file=sys.stderr)
            return 130
    from edgecache.web.observability import configure_logging

    configure_logging(config.log.level, config.log.format)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but optional at run time
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(_serve(config))
    except EdgecacheError as exc:
        print(f"edgecache: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _ca_pem(config: Config) -> bytes | None:
    """The CA clients must trust: ours when self-managed, none for operator certificates."""
    from edgecache.tls.server import ensure_self_managed
    from edgecache.tls.site import certificate_names

    if config.tls.cert_file:
        return None
    if config.tls.ca_cert_file:  # the site CA: one certificate trusts every node
        return Path(config.tls.ca_cert_file).read_bytes()
    files = ensure_self_managed(config.storage.path / "tls", certificate_names(config))
    assert files.ca is not None
    return files.ca.read_bytes()


def _ca(config: Config) -> int:
    pem = _ca_pem(config)
    if pem is None:
        print("edgecache: tls.cert_file is set: the operator's CA signs it, not edgecache",
              file=sys.stderr)
        return 1
    sys.stdout.write(pem.decode())
    return 0


def _check_client_options(args: argparse.Namespace) -> None:
    """Usage errors (exit 2) before any work: an `--address` becomes a path and a URL."""
    if args.command == "client-config":
        from edgecache.clientconfig.endpoints import check_address

        for address in args.address:
            check_address(address)
        if args.username and (args.diff or not args.out) and not args.show_secrets:
            # stdout ends up in terminals' scrollback, CI logs and tickets
            raise ConfigError("client-config: with --username, printing the files (no --out) "
                              "or --diff shows the password: add --show-secrets, or use --out")


def _client_config(config: Config, args: argparse.Namespace) -> int:
    from edgecache.clientconfig import apply, diff, endpoints, plan, render
    from edgecache.clientconfig.credentials import load

    credentials = load(args.username, args.password_file)
    ca_pem = _ca_pem(config) if config.listen.https else None
    outputs, warnings = render(config, endpoints(config, args.address), ca_pem, credentials)
    for line in warnings:
        print(f"edgecache: {line}", file=sys.stderr)
    if not args.out and not args.diff:
        for output in outputs:
            data = output.merge(None, str(output.path))
            if not data.startswith(b"-----BEGIN"):
                print(f"# ---- {output.path}\n{data.decode()}")
        if ca_pem is not None:
            print("# ---- the CA certificate goes next to these files: edgecache ca > <path>")
        return 0
    changes = plan(outputs, Path(args.out or "/").resolve())  # every merge before any write
    for change in changes:
        if args.diff:
            sys.stdout.write(diff(change) if change.changed else "")
        elif not change.changed:
            print(f"unchanged {change.target}")
        else:
            apply(change)
            kept = f" (the previous file is {change.backup})" if change.old is not None else ""
            print(f"wrote {change.target}{kept}")
    return 0


async def _serve(config: Config) -> None:
    from edgecache.server import serve

    await serve(config)
