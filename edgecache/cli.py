"""The command line: subcommands and exit codes, no logic.

Exit codes: 0 success, 1 a runtime failure, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
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
    if args.command in ("verify", "du"):
        try:
            return _verify(config, args.repair) if args.command == "verify" else _du(config)
        except EdgecacheError as exc:
            print(f"edgecache: {exc}", file=sys.stderr)
            return 1
    logging.basicConfig(level=config.log.level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
