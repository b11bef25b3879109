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
from edgecache.config import Config, StorageConfig, load
from edgecache.errors import ConfigError, EdgecacheError


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
    client.add_argument("--out", help="write the files under this root ('/' installs them); "
                                      "without it they are printed")
    client.add_argument("--address", action="append", default=[],
                        help="host[:port] clients use to reach this mirror (repeatable)")
    du = sub.add_parser("du", help="show cache usage by upstream and by image")
    du.add_argument("--config")
    du.add_argument("--storage-path", help="override storage.path")
    return parser


def _load(args: argparse.Namespace) -> Config:
    config = load(args.config)
    if getattr(args, "storage_path", None):
        config = replace(config, storage=StorageConfig(path=Path(args.storage_path)))
    return config


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = _load(args)
    except ConfigError as exc:
        print(f"edgecache: config: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"{args.config}: ok ({len(config.upstreams)} upstreams)")
        return 0
    if args.command in ("ca", "client-config"):
        try:
            return _ca(config) if args.command == "ca" else _client_config(config, args)
        except (EdgecacheError, OSError) as exc:
            print(f"edgecache: {exc}", file=sys.stderr)
            return 1
    if args.command in ("verify", "du"):
        try:
            return _verify(config, args.repair) if args.command == "verify" else _du(config)
        except EdgecacheError as exc:
            print(f"edgecache: {exc}", file=sys.stderr)
            return 1
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


def _verify(config: Config, repair: bool) -> int:
    from edgecache.app import open_storage
    from edgecache.metrics import Metrics
    from edgecache.storage.integrity import verify

    storage = open_storage(config, Metrics(), sweep=False)
    try:
        report = verify(storage.blobs, storage.index, repair)
    finally:
        storage.close(clean=False)
    for digest in report.corrupt:
        print(f"corrupt: {digest}" + (" (removed)" if repair else ""))
    for digest in report.forgotten:
        print(f"missing file: {digest}" + (" (forgotten)" if repair else ""))
    for digest in report.adopted:
        print(f"not indexed: {digest}" + (" (adopted)" if repair else ""))
    for path in report.removed:
        print(f"stray file: {path}" + (" (removed)" if repair else ""))
    print(f"checked {report.checked} blobs: {len(report.corrupt)} corrupt, "
          f"{len(report.forgotten)} missing, {len(report.adopted)} not indexed")
    return 0 if report.clean or repair else 1


def _ca_pem(config: Config) -> bytes | None:
    """The CA clients must trust: ours when self-managed, none for operator certificates."""
    from edgecache.tls import ensure_self_managed

    if config.tls.cert_file:
        return None
    files = ensure_self_managed(config.storage.path / "tls", config.tls.extra_names)
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


def _client_config(config: Config, args: argparse.Namespace) -> int:
    from pathlib import PurePosixPath

    from edgecache.clientconfig import endpoints, render

    ca_pem = _ca_pem(config) if config.listen.https else None
    root = PurePosixPath(Path(args.out).resolve()) if args.out else PurePosixPath("/")
    files = render(config, endpoints(config, args.address), ca_pem, root)
    for path, data in files.items():
        if args.out:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            print(f"wrote {target}")
        elif not data.startswith(b"-----BEGIN"):
            print(f"# ---- {path}\n{data.decode()}")
    if not args.out and ca_pem is not None:
        print("# ---- the CA certificate goes next to these files: edgecache ca > <path>")
    return 0


def _du(config: Config) -> int:
    from edgecache.app import open_storage
    from edgecache.metrics import Metrics
    from edgecache.usage import usage_report

    storage = open_storage(config, Metrics(), sweep=False)
    try:
        report = usage_report(storage.index, storage.quota, config.pins)
    finally:
        storage.close(clean=False)
    print("\n".join(report.lines()))
    return 0


async def _serve(config: Config) -> None:
    from edgecache.app import serve

    await serve(config)
