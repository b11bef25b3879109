"""A small closed-loop HTTP/1.1 latency client, run as its own process (uvloop, raw protocol).

`python -m bench.hammer URL --method HEAD --connections 64 --duration 3 [--header K:V]`
prints one JSON line: requests, errors, duration and latency percentiles (ms).

Why not wrk: wrk cannot do HEAD (its parser waits for the body the Content-Length announces).
Why not aiohttp's client: it costs ~5x more CPU per request than this, on the same 2 cores as
the server under test. This client keeps `connections` keep-alive connections, each sending
one request, reading the head (and, for GET, Content-Length bytes of body) and sending the next;
a latency is the time from writing a request to reading its last byte. Plain HTTP only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit


def pct(sorted_ms: list[float], p: float) -> float:
    if not sorted_ms:
        return 0.0
    return sorted_ms[min(len(sorted_ms) - 1, max(0, round(p / 100 * len(sorted_ms) + 0.5) - 1))]


async def connection(host: str, port: int, request: bytes, head_only: bool, deadline: float,
                     latencies: list[float], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    first = True  # each connection's first exchange (connect, warm-up) is not counted
    try:
        while first or time.perf_counter() < deadline:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if not head_only and length:
                await reader.readexactly(length)
            if not first:
                latencies.append(time.perf_counter() - start)
            if status != b"200":
                errors.append(status.decode(errors="replace"))
            first = False
    finally:
        writer.close()


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    url = urlsplit(args.url)
    if url.scheme != "http" or url.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("plain http on loopback only")
    host, port = url.hostname, url.port or 80
    target = url.path + (f"?{url.query}" if url.query else "")
    lines = [f"{args.method} {target} HTTP/1.1", f"Host: {url.netloc}"]
    lines += [h.replace(":", ": ", 1) if ": " not in h else h for h in args.header]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    head_only = args.method == "HEAD"
    errors: list[str] = []
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + args.duration
    await asyncio.gather(*(connection(host, port, request, head_only, deadline, latencies,
                                      errors) for _ in range(args.connections)))
    wall = time.perf_counter() - start
    ms = sorted(x * 1000 for x in latencies)
    return {"requests": len(ms), "errors": len(errors), "error_sample": errors[:3],
            "duration": wall, "rate": len(ms) / wall if wall else 0.0,
            "p50_ms": pct(ms, 50), "p90_ms": pct(ms, 90), "p99_ms": pct(ms, 99),
            "max_ms": ms[-1] if ms else 0.0}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--method", default="GET", choices=["GET", "HEAD"])
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--header", action="append", default=[])
    args = parser.parse_args()
    try:
        import uvloop
        result = uvloop.run(main_async(args))
    except ImportError:
        result = asyncio.run(main_async(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
