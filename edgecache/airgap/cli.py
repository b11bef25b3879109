"""The command line of `warm`, `export` and `import`: their options, usage checks and output.

Exit codes as for every command (`cli.py`): 0 success, 1 a runtime failure, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from edgecache.config import Config
from edgecache.errors import ConfigError, EdgecacheError

if TYPE_CHECKING:
    from edgecache.airgap.imported import ImportReport
    from edgecache.airgap.platform import Platform
    from edgecache.airgap.progress import Progress

T = TypeVar("T")


def airgap_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    platform_help = "os/arch[/variant],... of an index to take (default: every platform)"
    warm = sub.add_parser("warm", help="pull images into the cache ahead of need")
    warm.add_argument("images", nargs="*", help="registry/repository[:tag][@digest]")
    warm.add_argument("--file", help="a file of image references, one a line (# comments)")
    warm.add_argument("--platform", help=platform_help)
    warm.add_argument("--concurrency", type=int, default=4, help="blob transfers at a time")
    export = sub.add_parser("export", help="write cached images to an OCI layout bundle")
    export.add_argument("images", nargs="*", help="registry/repository[:tag][@digest]")
    export.add_argument("--all", action="store_true", help="every tag the cache holds")
    export.add_argument("--pinned", action="store_true", help="the images under pins:")
    export.add_argument("--output", "-o", required=True, help="bundle.tar.zst, or - (stdout)")
    export.add_argument("--level", type=int, default=3, help="zstd level 1-22 (default 3)")
    export.add_argument("--platform", help=platform_help)
    imp = sub.add_parser("import", help="load a bundle (zstd or plain OCI layout tar)")
    imp.add_argument("bundle", help="bundle.tar.zst, bundle.tar, or - (stdin)")
    imp.add_argument("--pin", action="store_true", help="print the pins: lines to add")
    imp.add_argument("--repository", help="registry/repository for entries named by a tag only")
    for command in (warm, export, imp):
        command.add_argument("--config")
        command.add_argument("--storage-path", help="override storage.path")


def airgap(config: Config, args: argparse.Namespace) -> int:
    """warm, export and import: usage errors exit 2, failures 1, each in one line."""
    from edgecache.airgap.progress import Progress

    try:
        platforms, images = _usage(config, args)
    except EdgecacheError as exc:
        print(f"edgecache: {exc}", file=sys.stderr)
        return 2
    verb = {"warm": "warming", "export": "exporting", "import": "importing"}[args.command]
    progress = Progress(verb, "members" if args.command == "import" else "images")
    try:
        if args.command == "warm":
            return _warm(config, images, platforms, args.concurrency, progress)
        if args.command == "export":
            return _export(config, args, platforms, progress)
        from edgecache.airgap.importer import import_bundle

        imported = _run(import_bundle(config, args.bundle, progress,
                                      repository=args.repository))
    except (EdgecacheError, OSError) as exc:
        progress.abandon()
        print(f"edgecache: {exc}", file=sys.stderr)
        return 1
    _print_import(imported, args.pin)
    return 0


def _usage(config: Config, args: argparse.Namespace) -> tuple[tuple[Platform, ...], list[str]]:
    """The usage checks, before any work: the platforms, and warm's images."""
    from edgecache.airgap.platform import parse_platforms

    platforms = parse_platforms(getattr(args, "platform", None))
    images: list[str] = []
    if args.command == "warm":
        from edgecache.airgap.warm import read_image_list

        images = list(args.images) + (read_image_list(args.file) if args.file else [])
        if not images:
            raise ConfigError("warm: name images, or give --file")
        if args.concurrency < 1:
            raise ConfigError("--concurrency: must be at least 1")
    if args.command == "export":
        if not (args.images or args.all or args.pinned):
            raise ConfigError("export: name images, or give --all or --pinned")
        if not 1 <= args.level <= 22:
            raise ConfigError(f"--level: zstd levels are 1 to 22, got {args.level}")
    if args.command == "import" and args.repository:
        from edgecache.airgap.reference import parse_repository

        parse_repository(args.repository, config.upstreams)
    return platforms, images


def _warm(config: Config, images: list[str], platforms: tuple[Platform, ...], concurrency: int,
          progress: Progress) -> int:
    from edgecache.airgap.warm import warm
    from edgecache.web.observability import configure_logging

    configure_logging("warning", config.log.format)  # keep the progress line readable
    report = _run(warm(config, images, progress, platforms, concurrency))
    print("\n".join(report.lines()))
    return 1 if report.failed else 0


def _export(config: Config, args: argparse.Namespace, platforms: tuple[Platform, ...],
            progress: Progress) -> int:
    from edgecache.airgap.export import export

    exported = export(config, args.images, args.output, progress, level=args.level,
                      platforms=platforms, every_tag=args.all, pinned=args.pinned)
    out = sys.stderr if args.output == "-" else sys.stdout  # stdout may be the bundle
    print("\n".join(exported.lines(args.output)), file=out)
    return 0


def _print_import(imported: ImportReport, show_pins: bool) -> None:
    for warning in imported.warnings:
        print(f"edgecache: warning: {warning}", file=sys.stderr)
    print("\n".join(imported.lines()))
    if show_pins:
        pins = imported.pins()
        print("# pins are configuration: add these lines to the config so the images are never "
              "evicted" if pins else "# nothing to pin: no entry had a registry/repository:tag")
        if pins:
            print("pins:")
            print("\n".join(f"  - {pin}" for pin in pins))


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but optional at run time
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)
