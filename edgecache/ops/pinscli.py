"""`edgecache pin`, `unpin` and `pins`: clients of the running service's admin API
(`admin.py`, on `metrics.listen`), which they reach on loopback.

Pins act on the running service, never on the storage behind its back: a pin must take effect
without a restart, and the image is fetched through the service's pull path. `pin` waits for
the fetch (a line per blob as it lands) unless `--no-wait`; the fetch carries on in the service
either way. Exit codes as everywhere (`cli.py`): 2 bad usage (a bad reference), 1 a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

import aiohttp

from edgecache.airgap.endpoint import WILDCARDS
from edgecache.airgap.progress import short_digest, table
from edgecache.config import Config, parse_hostport
from edgecache.errors import EdgecacheError
from edgecache.imagerefs import reference_problem
from edgecache.units import human

TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)


def pin_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pin = sub.add_parser("pin", help="pin images on the running service (fetched if not held)")
    pin.add_argument("images", nargs="+", help="registry/repository[:tag][@digest]")
    pin.add_argument("--no-wait", action="store_true", help="return once pinned; the service "
                                                            "fetches in the background")
    pin.add_argument("--platform", help="os/arch[/variant],... of an index to fetch")
    unpin = sub.add_parser("unpin", help="remove runtime pins (config pins: stay)")
    unpin.add_argument("images", nargs="+", help="registry/repository[:tag][@digest]")
    pins = sub.add_parser("pins", help="list the pins: the config's and the runtime ones")
    pins.add_argument("--json", action="store_true", help="the admin API's JSON")
    for command in (pin, unpin, pins):
        command.add_argument("--config")


def pins_command(config: Config, args: argparse.Namespace) -> int:
    if args.command in ("pin", "unpin"):
        bad = [why for text in args.images
               if (why := reference_problem(text, config.upstreams)) is not None]
        if bad:
            for why in bad:
                print(f"edgecache: {args.command}: {why}", file=sys.stderr)
            return 2
    try:
        base = admin_url(config)
        return asyncio.run(_run(base, args))
    except EdgecacheError as exc:
        print(f"edgecache: {args.command}: {exc}", file=sys.stderr)
        return 1


def admin_url(config: Config) -> str:
    if not config.metrics.listen:
        raise EdgecacheError("metrics.listen is off: the admin API for pins is served there")
    host, port = parse_hostport(config.metrics.listen, "metrics.listen")
    host = "127.0.0.1" if host in WILDCARDS else host
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/admin"


async def _run(base: str, args: argparse.Namespace) -> int:
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            if args.command == "pin":
                return await _pin(session, base, args)
            if args.command == "unpin":
                return await _unpin(session, base, args.images)
            return await _list(session, base, args.json)
    except aiohttp.ClientConnectorError:
        raise EdgecacheError(f"nothing answers on {base} (metrics.listen): pins act on the "
                             "running service; start it first") from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise EdgecacheError(f"{base}: {exc or type(exc).__name__}") from None


async def _check(response: aiohttp.ClientResponse) -> None:
    if response.status < 300:
        return
    try:
        message = (await response.json(content_type=None))["errors"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        message = f"HTTP {response.status}"
    raise EdgecacheError(str(message))


async def _pin(session: aiohttp.ClientSession, base: str, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"references": args.images, "wait": not args.no_wait}
    if args.platform:
        body["platforms"] = args.platform
    async with session.post(f"{base}/pins", json=body) as response:
        await _check(response)
        if args.no_wait:
            for text in (await response.json())["pinned"]:
                print(f"pinned {text} (fetching in the service: see `edgecache pins`)")
            return 0
        failed = False
        async for raw in response.content:
            event = json.loads(raw)
            if event["event"] == "blob":
                how = "fetched" if event["fetched"] else "held"
                print(f"{event['reference']}: {short_digest(event['digest'])} "
                      f"{human(event['size'])} {how} ({event['done']}/{event['total']})",
                      flush=True)
            elif event["event"] == "done":
                failed |= bool(event["error"])
                print(f"{event['reference']}: " + (f"pinned, not held: {event['error']}"
                                                   f"{_retry(event.get('next_retry'))}"
                                                   if event["error"] else "pinned and held"),
                      flush=True)
        return 1 if failed else 0


async def _unpin(session: aiohttp.ClientSession, base: str, images: list[str]) -> int:
    async with session.delete(f"{base}/pins", params=[("reference", i) for i in images]) \
            as response:
        await _check(response)
        doc = await response.json()
    for text in doc["removed"]:
        print(f"unpinned {text}")
    for text, why in doc["refused"].items():
        print(f"edgecache: unpin: {text}: {why}", file=sys.stderr)
    return 1 if doc["refused"] else 0


async def _list(session: aiohttp.ClientSession, base: str, as_json: bool) -> int:
    async with session.get(f"{base}/pins") as response:
        await _check(response)
        doc = await response.json()
    if as_json:
        print(json.dumps(doc, indent=2))
        return 0
    rows = []
    for pin in doc["pins"]:
        added = pin["added_at"]
        when = datetime.fromtimestamp(added, UTC).strftime("%Y-%m-%d %H:%M") if added else "-"
        state = pin["state"] + (f" ({pin['blobs']}/{pin['total']})"
                                if pin["state"] == "fetching" else "")
        if pin.get("error"):
            state += f" ({pin['failures']}x): {pin['error']}{_retry(pin.get('next_retry'))}"
        rows.append([pin["reference"], pin["source"], when, state])
    for line in table(["IMAGE", "SOURCE", "ADDED (UTC)", "STATE"], rows):
        print(line)
    return 0


def _retry(at: object) -> str:
    """When a failed pin is tried again (the service does it: nothing to run)."""
    if not isinstance(at, int | float):
        return ""
    return f"; next try {datetime.fromtimestamp(at, UTC).strftime('%H:%M:%S')} UTC"
