"""Concurrent image pulls as clients do them, in processes of their own: a light client, like wrk.

`python -m bench.puller BASE_URL REPOSITORY TAG --clients 50 [--verify sample|all]` prints one
JSON line.

Each client, on its own connections (at most 3, kept alive and reused, as containerd's pool
does): GET the manifest by tag (OCI and Docker Accept), then GET the config and every layer, at
most 3 at a time (containerd's default max_concurrent_downloads), reading every body from the
socket to its last byte. All clients start together; `wall` is from the first request to the
last byte of the last client. Every byte a real pull downloads is downloaded here, over as many
connections; what is lighter than a real client is what happens to the bytes afterwards.

The clients are spread over one worker process per core (`--procs`), as wrk runs a thread per
core: one Python process gets one core at most, and receiving 50 x 63 MiB on loopback is about a
core's worth of kernel work by itself (more when the server sends with sendfile: the receiver's
copy then reads page-cache pages, likely cold in the CPU cache, where after a user-space copy it
reads the server's just-written buffers; see NOTES.md). A single process made the client the
limit of the figure.

Why it is not aiohttp: the clients run on the same 2 cores as the cache they measure. With
aiohttp's client (a StreamReader that allocates, buffers and re-joins every body into 1 MiB
pieces) the 50-client pull cost the client ~1.5-2 s of CPU for 3.2 GB against edgecache's ~1 s:
the figure measured mostly the client. Here each connection is an `asyncio.BufferedProtocol`
that receives into one reused 256 KiB buffer (no allocation per read) with a minimal HTTP/1.1
parser (status line, Content-Length; anything else, e.g. a chunked body, is a failure).

How the bytes are checked (`--verify sample`, the default). Hashing 50 copies with SHA-256 would
cost ~1.7 s of CPU by itself (1.8 GiB/s here), on the cores the cache needs; a real client
hashes on its own machine. So:
- every response: status 200, a Content-Length equal to the manifest's size, and exactly that
  many body bytes before the connection is reused (a cut or short body fails the client);
- once per distinct blob, one client's whole copy is hashed and must match the digest (the
  client chosen rotates with the blob, so the checked copies come from different clients);
- every other copy is sampled: the first 4 KiB of every 64 KiB and the last 4 KiB of the body
  (1/16 of the bytes) go through CRC-32, which must equal the same sample of the hashed copy.
  Bytes out of order, a wrong chunk or a stale region at 64 KiB granularity or coarser shows.
`--verify all` hashes every copy with SHA-256 (a real client's CPU; for comparison).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
PARALLEL_LAYERS = 3
BUFFER = 256 * 1024
SAMPLE_EVERY, SAMPLE_SPAN = 64 * 1024, 4 * 1024
MAX_HEADER = 64 * 1024


class Body:
    """What a response's body is checked with, fed as it arrives."""

    def __init__(self, size: int, sample: bool, hasher: Any) -> None:
        self.size = size
        self.pos = 0
        self.crc = 0
        self._sample = sample
        self.hasher = hasher
        self._tail = max(0, size - SAMPLE_SPAN)

    def feed(self, data: memoryview) -> None:
        if self.hasher is not None:
            self.hasher.update(data)
        if self._sample:
            start, end = self.pos, self.pos + len(data)
            at = start
            while at < end:  # windows [k*EVERY, k*EVERY+SPAN), then [tail, size)
                if at >= self._tail:
                    stop = end
                else:
                    window = at - at % SAMPLE_EVERY
                    if at >= window + SAMPLE_SPAN:  # between windows: skip to the next one
                        at = min(window + SAMPLE_EVERY, self._tail)
                        continue
                    stop = min(end, window + SAMPLE_SPAN, self._tail)
                self.crc = zlib.crc32(data[at - start:stop - start], self.crc)
                at = stop
        self.pos += len(data)


class Connection(asyncio.BufferedProtocol):
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self) -> None:
        self._buf = bytearray(BUFFER)
        self._view = memoryview(self._buf)
        self.transport: asyncio.Transport | None = None
        self._head = bytearray()
        self._waiter: asyncio.Future[tuple[int, dict[str, str]]] | None = None
        self._done: asyncio.Future[None] | None = None
        self._body: Body | bytearray | None = None
        self._length = 0
        self._received = 0
        self._in_body = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        data = self._view[:nbytes]
        if not self._in_body:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > MAX_HEADER:
                    self._fail(RuntimeError("response header too long"))
                return
            status, headers = _parse_head(bytes(self._head[:end]))
            rest = memoryview(bytes(self._head[end + 4:]))
            self._head = bytearray()
            self._in_body = True
            self._received = 0
            self._length = int(headers.get("content-length", "-1"))
            if self._length < 0 or "chunked" in headers.get("transfer-encoding", ""):
                self._fail(RuntimeError(f"no Content-Length (status {status})"))
                return
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result((status, headers))
            data = rest
        if data:
            self._consume(data)

    def _consume(self, data: memoryview) -> None:
        left = self._length - self._received
        if len(data) > left:
            self._fail(RuntimeError("more bytes than Content-Length"))
            return
        self._received += len(data)
        if isinstance(self._body, bytearray):
            self._body += data
        elif self._body is not None:
            self._body.feed(data)
        if self._received == self._length:
            self._in_body = False
            if self._done is not None and not self._done.done():
                self._done.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        for fut in (self._waiter, self._done):
            if fut is not None and not fut.done():
                fut.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionResetError(f"connection lost: {exc}"))

    async def request(self, host: str, path: str, headers: dict[str, str],
                      body: Body | bytearray) -> tuple[int, dict[str, str]]:
        """Send a GET; returns status and headers, the body arriving into `body`."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._waiter, self._done = loop.create_future(), loop.create_future()
        self._body = body
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "User-Agent: bench-puller",
                 *(f"{k}: {v}" for k, v in headers.items()), "", ""]
        self.transport.write("\r\n".join(lines).encode())
        return await self._waiter

    async def finished(self) -> None:
        assert self._done is not None
        await self._done


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise RuntimeError(f"bad status line {lines[0][:100]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


class Client:
    """One pulling client: its own pool of connections."""

    def __init__(self, base: str) -> None:
        url = urlsplit(base)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.hostport = url.netloc
        self._idle: list[Connection] = []
        self._all: list[Connection] = []

    async def get(self, path: str, headers: dict[str, str],
                  body: Body | bytearray) -> tuple[int, dict[str, str]]:
        conn = None
        while self._idle and conn is None:
            candidate = self._idle.pop()
            conn = None if candidate.closed else candidate
        if conn is None:
            _, conn = await asyncio.get_running_loop().create_connection(
                Connection, self.host, self.port)
            self._all.append(conn)
        status, response_headers = await conn.request(self.hostport, path, headers, body)
        await conn.finished()
        self._idle.append(conn)
        return status, response_headers

    def close(self) -> None:
        for conn in self._all:
            if conn.transport is not None:
                conn.transport.close()


Samples = dict[str, int]  # digest -> CRC-32 of the body's sample


async def pull(index: int, clients: int, base: str, repository: str, tag: str, verify: str,
               verified: Samples) -> tuple[float, int, Samples]:
    """One client's pull: (seconds, bytes, its copies' samples). A copy it hashed and found
    right puts its sample into `verified`."""
    start = time.perf_counter()
    client = Client(base)
    samples: Samples = {}
    try:
        raw = bytearray()
        status, _ = await client.get(f"/v2/{repository}/manifests/{tag}", {"Accept": ACCEPT},
                                     raw)
        if status != 200:
            raise RuntimeError(f"manifest: {status}")
        manifest = json.loads(bytes(raw))
        blobs = [manifest["config"], *manifest["layers"]]
        gate = asyncio.Semaphore(PARALLEL_LAYERS)

        async def blob(number: int, descriptor: dict[str, Any]) -> int:
            digest, size = str(descriptor["digest"]), int(descriptor["size"])
            algorithm, _, expected = digest.partition(":")
            full = verify == "all" or index == number % clients
            body = Body(size, sample=verify == "sample",
                        hasher=hashlib.new(algorithm) if full else None)
            async with gate:
                status, headers = await client.get(f"/v2/{repository}/blobs/{digest}", {}, body)
            if status != 200 or int(headers.get("content-length", -1)) != size:
                raise RuntimeError(f"blob {digest}: {status}, "
                                   f"Content-Length {headers.get('content-length')}")
            if body.pos != size:
                raise RuntimeError(f"blob {digest}: {body.pos} bytes, expected {size}")
            if body.hasher is not None:
                if body.hasher.hexdigest() != expected:
                    raise RuntimeError(f"blob {digest}: wrong digest {body.hasher.hexdigest()}")
                verified[digest] = body.crc
            samples[digest] = body.crc
            return size

        received = sum(await asyncio.gather(*(blob(i, d) for i, d in enumerate(blobs))))
    finally:
        client.close()
    return time.perf_counter() - start, received, samples


async def run_clients(args: argparse.Namespace, first: int, last: int) -> dict[str, Any]:
    """Clients [first, last) of `args.clients`: their results, the samples of the copies they
    hashed, and when they started and ended (CLOCK_MONOTONIC: comparable across processes)."""
    verified: Samples = {}
    start = time.monotonic()
    results = await asyncio.wait_for(asyncio.gather(
        *(pull(i, args.clients, args.base, args.repository, args.tag, args.verify, verified)
          for i in range(first, last)), return_exceptions=True), timeout=600)
    end = time.monotonic()
    return {"start": start, "end": end, "verified": verified,
            "clients": [{"error": repr(r)[:200]} if isinstance(r, BaseException)
                        else {"time": r[0], "bytes": r[1], "samples": r[2]} for r in results]}


def summarize(args: argparse.Namespace, parts: list[dict[str, Any]]) -> dict[str, object]:
    """One result from the workers' parts; every copy's sample is checked against the copy of
    the same blob that was hashed (in whichever worker)."""
    verified: Samples = {}
    for part in parts:
        verified.update(part["verified"])
    clients: list[dict[str, Any]] = [c for part in parts for c in part["clients"]]
    if args.verify == "sample":
        for n, client in enumerate(clients):
            for digest, crc in client.get("samples", {}).items():
                if digest not in verified:
                    clients[n] = {"error": f"{digest}: no verified copy to compare with"}
                elif verified[digest] != crc:
                    clients[n] = {"error": f"{digest}: sampled bytes differ from the verified "
                                           "copy"}
    ok = [c for c in clients if "error" not in c]
    failed = [c["error"] for c in clients if "error" in c]
    failed += ["client missing"] * (args.clients - len(clients))
    times = sorted(c["time"] for c in ok)
    return {"clients": args.clients, "ok": len(ok), "failed": len(failed),
            "errors": failed[:3], "verify": args.verify, "procs": len(parts),
            "wall": max(p["end"] for p in parts) - min(p["start"] for p in parts),
            "client_median": times[len(times) // 2] if times else 0.0,
            "client_max": times[-1] if times else 0.0,
            "bytes": sum(c["bytes"] for c in ok)}


def run_loop(args: argparse.Namespace, first: int, last: int) -> dict[str, Any]:
    try:
        import uvloop
        return uvloop.run(run_clients(args, first, last))
    except ImportError:
        return asyncio.run(run_clients(args, first, last))


def run_workers(args: argparse.Namespace, procs: int) -> list[dict[str, Any]]:
    """`procs` worker processes, each with a share of the clients; they start together once all
    have imported (a line on their stdin), and are waited for (bounded) and killed on error."""
    bounds = [args.clients * k // procs for k in range(procs + 1)]
    workers = [subprocess.Popen(
        [sys.executable, "-m", "bench.puller", args.base, args.repository, args.tag,
         "--clients", str(args.clients), "--verify", args.verify,
         "--worker", f"{bounds[k]}:{bounds[k + 1]}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1])
        for k in range(procs)]
    try:
        for worker in workers:
            assert worker.stdout is not None
            if worker.stdout.readline().strip() != b"ready":
                raise RuntimeError("a puller worker did not start")
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(b"go\n")
            worker.stdin.flush()
        parts = []
        for worker in workers:
            out, _ = worker.communicate(timeout=660)
            if worker.returncode != 0:
                raise RuntimeError(f"a puller worker exited {worker.returncode}")
            parts.append(json.loads(out.decode().strip().splitlines()[-1]))
        return parts
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("repository")
    parser.add_argument("tag")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--verify", choices=("sample", "all"), default="sample")
    parser.add_argument("--procs", type=int, default=0,
                        help="worker processes (default: one per core, at most one per client)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # FIRST:LAST, internal
    args = parser.parse_args()
    if not args.base.startswith("http://"):
        parser.error("plain http:// only")
    if args.worker:
        first, last = (int(x) for x in args.worker.split(":"))
        print("ready", flush=True)
        sys.stdin.readline()
        print(json.dumps(run_loop(args, first, last)), flush=True)
        return 0
    procs = min(args.clients, args.procs or os.cpu_count() or 1)
    parts = (run_workers(args, procs) if procs > 1
             else [run_loop(args, 0, args.clients)])
    print(json.dumps(summarize(args, parts)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
