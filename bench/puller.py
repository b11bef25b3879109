"""Concurrent image pulls as a client does them, run as its own process (aiohttp, uvloop).

`python -m bench.puller BASE_URL REPOSITORY TAG --clients 50` prints one JSON line.

Each client, on its own connection pool: GET the manifest by tag (OCI and Docker Accept), then
GET the config and every layer, at most 3 at a time (containerd's default
max_concurrent_downloads), reading every body to the end and checking its length against the
manifest (edgecache and Distribution verify digests; hashing here would only slow the client).
All clients start together; `wall` is from the first request to the last byte of the last
client. The bodies are discarded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiohttp

ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
PARALLEL_LAYERS = 3


async def pull(base: str, repository: str, tag: str) -> tuple[float, int]:
    start = time.perf_counter()
    received = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        async with session.get(f"{base}/v2/{repository}/manifests/{tag}",
                               headers={"Accept": ACCEPT}) as resp:
            if resp.status != 200:
                raise RuntimeError(f"manifest: {resp.status}")
            manifest = json.loads(await resp.read())
        blobs = [manifest["config"], *manifest["layers"]]
        gate = asyncio.Semaphore(PARALLEL_LAYERS)

        async def blob(descriptor: dict[str, object]) -> int:
            async with gate, session.get(
                    f"{base}/v2/{repository}/blobs/{descriptor['digest']}") as resp:
                if resp.status != 200:
                    raise RuntimeError(f"blob {descriptor['digest']}: {resp.status}")
                count = 0
                async for data in resp.content.iter_chunked(1 << 20):
                    count += len(data)
                if count != descriptor["size"]:
                    raise RuntimeError(f"blob {descriptor['digest']}: {count} bytes, "
                                       f"expected {descriptor['size']}")
                return count

        received = sum(await asyncio.gather(*(blob(d) for d in blobs)))
    return time.perf_counter() - start, received


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    start = time.perf_counter()
    results = await asyncio.gather(*(pull(args.base, args.repository, args.tag)
                                     for _ in range(args.clients)), return_exceptions=True)
    wall = time.perf_counter() - start
    ok = [r for r in results if not isinstance(r, BaseException)]
    failed = [repr(r)[:200] for r in results if isinstance(r, BaseException)]
    times = sorted(t for t, _ in ok)
    return {"clients": args.clients, "ok": len(ok), "failed": len(failed),
            "errors": failed[:3], "wall": wall,
            "client_median": times[len(times) // 2] if times else 0.0,
            "client_max": times[-1] if times else 0.0,
            "bytes": sum(n for _, n in ok)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("repository")
    parser.add_argument("tag")
    parser.add_argument("--clients", type=int, default=1)
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
