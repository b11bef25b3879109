"""A TCP fault injector on loopback, in front of a real docker-registry.

A real registry cannot go silent, fail every request, or drop a connection in the middle of a
blob on cue; this proxy does, while staying a plain HTTP/1.1 relay otherwise. It parses just
enough HTTP (request and response heads, Content-Length and chunked bodies) to know where each
exchange begins and ends, and records every request head it sees (Range headers included).

Modes, switchable at any time with `set_mode` (or `cut`):

- `forward`: relay bytes both ways.
- `blackhole`: accept connections, read and discard whatever arrives, never answer. Connections
  already open go silent too, even in the middle of a response, as when a WAN link dies.
- `refuse`: the listening socket is closed (new connections are refused by the kernel) and every
  open connection is reset. Leaving this mode listens again on the same port.
- `http500`, `http429`: every request is answered with that status and a small OCI error body;
  a response already being relayed is finished first.
- `cut`: relay, but for the next `times` responses whose body is longer than `after` bytes, close
  the connection after `after` bytes of body; then relay as in `forward`.

`FaultProxy` runs its own asyncio loop in a background thread (what the tests use);
`FaultProxyProcess` runs the same proxy as a subprocess (`python -m tests.support.faultproxy
127.0.0.1:PORT`, driven by one-line commands on stdin) so a benchmark's own load does not share
the proxy's interpreter. Both are bounded: at most `MAX_CONNECTIONS` connections (more are
reset), heads of at most 64 KiB, request bodies of at most 1 MiB, relays through 64 KiB buffers
with backpressure, and a bounded request record; `close()` stops everything, bounded in time.
Only loopback targets are accepted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import selectors
import socket
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

MODES = ("forward", "blackhole", "refuse", "http500", "http429", "cut")
MAX_CONNECTIONS = 256
HEAD_LIMIT = 64 * 1024
REQUEST_BODY_LIMIT = 1 << 20
CHUNK = 64 * 1024
RECORD_LIMIT = 10_000
CONTROL_TIMEOUT = 10.0
LOOPBACK = ("127.0.0.1", "localhost", "::1")

_REASONS = {500: "Internal Server Error", 429: "Too Many Requests"}


@dataclass
class Seen:
    """One request head the proxy read; `outcome` is what the proxy did with it: forward, cut,
    blackhole, http500, http429, or unreachable (the target refused the relay)."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    outcome: str


class _Blackholed(Exception):
    """The mode became blackhole in the middle of a relay: go silent."""


@dataclass(eq=False)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    task: asyncio.Task[None] | None = None
    up_reader: asyncio.StreamReader | None = None
    up_writer: asyncio.StreamWriter | None = None


def _loopback_target(target: str) -> tuple[str, int]:
    """`http://127.0.0.1:PORT`, or `127.0.0.1:PORT`, as (host, port); loopback only."""
    parts = urlsplit(target if "//" in target else f"//{target}")
    if parts.hostname not in LOOPBACK or parts.port is None:
        raise ValueError(f"fault proxy target must be a loopback host:port, got {target!r}")
    return parts.hostname, parts.port


def _reset(writer: asyncio.StreamWriter | None) -> None:
    """Close with a TCP reset (SO_LINGER 0), not a polite FIN."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        writer.close()


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """One HTTP head, through the blank line; None at a clean end of stream."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ConnectionError("stream ended inside an HTTP head") from exc
        return None


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    """The start line and the header fields (lower-case names; repeated fields joined)."""
    lines = head.decode("latin-1").split("\r\n")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ConnectionError(f"malformed header line {line[:80]!r}")
        key = name.strip().lower()
        fields[key] = f"{fields[key]}, {value.strip()}" if key in fields else value.strip()
    return lines[0], fields


def _content_length(fields: dict[str, str]) -> int | None:
    value = fields.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise ConnectionError(f"bad Content-Length {value[:40]!r}")
    return int(value)


def _keep_alive(fields: dict[str, str]) -> bool:
    return "close" not in fields.get("connection", "").lower()


class _Proxy:
    """The proxy itself; lives in one event loop."""

    def __init__(self, target: tuple[str, int], port: int) -> None:
        self.target = target
        self.port = port
        self.mode = "forward"
        self.cut_after = 0
        self.cuts_left = 0
        self.cuts_done = 0
        self.seen: collections.deque[Seen] = collections.deque(maxlen=RECORD_LIMIT)
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()

    async def listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port,
                                                  reuse_address=True, limit=HEAD_LIMIT)
        self.port = self._server.sockets[0].getsockname()[1]

    async def set_mode(self, mode: str, after: int = 0, times: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (one of {', '.join(MODES)})")
        self.mode = mode
        if mode == "cut":
            if after <= 0 or times <= 0:
                raise ValueError("cut needs after > 0 bytes and times > 0")
            self.cut_after, self.cuts_left = after, times
        if mode == "refuse":
            if self._server is not None:
                self._server.close()
                self._server = None
            for conn in list(self._conns):
                self._drop(conn)
        elif self._server is None:
            await self.listen()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        tasks = [conn.task for conn in self._conns if conn.task is not None]
        for conn in list(self._conns):
            self._drop(conn)
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), CONTROL_TIMEOUT)

    def _drop(self, conn: _Conn) -> None:
        _reset(conn.writer)
        _reset(conn.up_writer)
        if conn.task is not None and conn.task is not asyncio.current_task():
            conn.task.cancel()

    # ---- one client connection ------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= MAX_CONNECTIONS or self.mode == "refuse":
            _reset(writer)
            return
        conn = _Conn(reader, writer, asyncio.current_task())
        self._conns.add(conn)
        try:
            try:
                await self._exchanges(conn)
            except _Blackholed:
                await self._swallow(conn)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass  # dropped (refuse, close): the handler is the task's top, nothing awaits it
        finally:
            self._conns.discard(conn)
            _close(conn.up_writer)
            _close(writer)

    async def _exchanges(self, conn: _Conn) -> None:
        """Request after request on one client connection, until it closes."""
        while True:
            head = await _read_head(conn.reader)
            if head is None:
                return
            start, fields = _parse_head(head)
            method, _, rest = start.partition(" ")
            path = rest.rpartition(" ")[0] or rest
            if "chunked" in fields.get("transfer-encoding", "").lower():
                raise ConnectionError("chunked request bodies are not supported")
            length = _content_length(fields) or 0
            if length > REQUEST_BODY_LIMIT:
                raise ConnectionError("request body too large for the fault proxy")
            body = await conn.reader.readexactly(length) if length else b""
            mode = self.mode
            seen = Seen(method, path, fields, mode if mode != "cut" else "forward")
            self.seen.append(seen)
            if mode == "blackhole":
                raise _Blackholed
            if mode in ("http500", "http429"):
                await self._answer(conn, int(mode[4:]), method)
                if not _keep_alive(fields):
                    return
                continue
            if not await self._relay(conn, seen, head + body) or not _keep_alive(fields):
                return

    async def _answer(self, conn: _Conn, status: int, method: str) -> None:
        code = "UNAVAILABLE" if status >= 500 else "TOOMANYREQUESTS"
        body = json.dumps({"errors": [{"code": code, "message": f"fault proxy answers {status}"}]
                           }).encode()
        extra = "Retry-After: 1\r\n" if status == 429 else ""
        head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n{extra}\r\n").encode()
        conn.writer.write(head if method == "HEAD" else head + body)
        await conn.writer.drain()

    async def _relay(self, conn: _Conn, seen: Seen, request: bytes) -> bool:
        """Send one request upstream and relay its response; False when the connection must
        end (the response was cut, had no length, or the upstream closed)."""
        if conn.up_writer is None or conn.up_writer.is_closing():
            try:
                conn.up_reader, conn.up_writer = await asyncio.open_connection(
                    *self.target, limit=HEAD_LIMIT)
            except OSError:
                seen.outcome = "unreachable"  # the registry is gone: so is this connection
                _reset(conn.writer)
                return False
        assert conn.up_reader is not None
        conn.up_writer.write(request)
        await conn.up_writer.drain()
        while True:
            head = await _read_head(conn.up_reader)
            if head is None:
                return False
            start, fields = _parse_head(head)
            status_text = start.split(" ", 2)[1] if start.count(" ") >= 1 else ""
            status = int(status_text) if status_text.isdigit() else 0
            await self._send(conn, head)
            if not 100 <= status < 200:
                break
        if seen.method == "HEAD" or status in (204, 304):
            return _keep_alive(fields)
        if "chunked" in fields.get("transfer-encoding", "").lower():
            await self._relay_chunked(conn)
            return _keep_alive(fields)
        length = _content_length(fields)
        if length is None:  # delimited by the end of the connection
            while data := await conn.up_reader.read(CHUNK):
                await self._send(conn, data)
            return False
        cut_at: int | None = None
        if self.mode == "cut" and self.cuts_left > 0 and length > self.cut_after:
            self.cuts_left -= 1
            cut_at = self.cut_after
            seen.outcome = "cut"
        sent = 0
        while sent < length:
            want = min(CHUNK, length - sent)
            if cut_at is not None:
                want = min(want, cut_at - sent)
            data = await conn.up_reader.read(want)
            if not data:
                raise ConnectionError("upstream closed inside a body")
            await self._send(conn, data)
            sent += len(data)
            if cut_at is not None and sent >= cut_at:
                self.cuts_done += 1
                _close(conn.up_writer)
                _close(conn.writer)  # every byte so far is delivered, then a FIN
                return False
        return _keep_alive(fields)

    async def _relay_chunked(self, conn: _Conn) -> None:
        assert conn.up_reader is not None
        while True:
            line = await conn.up_reader.readuntil(b"\r\n")
            await self._send(conn, line)
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:  # trailers, through the blank line
                while (trailer := await conn.up_reader.readuntil(b"\r\n")) != b"\r\n":
                    await self._send(conn, trailer)
                await self._send(conn, b"\r\n")
                return
            remaining = size + 2  # the data and its CRLF
            while remaining:
                data = await conn.up_reader.read(min(CHUNK, remaining))
                if not data:
                    raise ConnectionError("upstream closed inside a chunk")
                await self._send(conn, data)
                remaining -= len(data)

    async def _send(self, conn: _Conn, data: bytes) -> None:
        if self.mode == "blackhole":
            raise _Blackholed
        conn.writer.write(data)
        await conn.writer.drain()

    async def _swallow(self, conn: _Conn) -> None:
        """Read and discard until the client gives up; never answer."""
        _close(conn.up_writer)
        conn.up_writer = None
        with contextlib.suppress(ConnectionError, OSError):
            while await conn.reader.read(CHUNK):
                pass


class FaultProxy:
    """The proxy on its own event loop in a background thread; methods are thread-safe."""

    def __init__(self, target: str, port: int = 0) -> None:
        self._proxy = _Proxy(_loopback_target(target), port)
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(CONTROL_TIMEOUT):
            raise TimeoutError("fault proxy did not start")
        if self._error is not None:
            raise RuntimeError(f"fault proxy did not start: {self._error}") from self._error
        self.port = self._proxy.port
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            await self._proxy.listen()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self._proxy.close()

    def _call(self, coro: object) -> None:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        future.result(CONTROL_TIMEOUT)

    @property
    def mode(self) -> str:
        return self._proxy.mode

    @property
    def cuts_done(self) -> int:
        return self._proxy.cuts_done

    def set_mode(self, mode: str) -> None:
        if mode == "cut":
            raise ValueError("use cut(after, times)")
        self._call(self._proxy.set_mode(mode))

    def cut(self, after: int, times: int) -> None:
        """Cut the next `times` responses longer than `after` bytes after `after` bytes."""
        self._call(self._proxy.set_mode("cut", after, times))

    def requests(self) -> list[Seen]:
        """Every request head seen so far (the last RECORD_LIMIT)."""
        async def snapshot() -> list[Seen]:
            return list(self._proxy.seen)
        return asyncio.run_coroutine_threadsafe(snapshot(), self._loop).result(CONTROL_TIMEOUT)

    def outcomes(self) -> dict[str, int]:
        return dict(collections.Counter(seen.outcome for seen in self.requests()))

    def close(self) -> None:
        if self._thread.is_alive() and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(CONTROL_TIMEOUT + 5)


class FaultProxyProcess:
    """The same proxy as a subprocess, stopped by its PID; the API of `FaultProxy` minus
    `requests()` (use `outcomes()`)."""

    def __init__(self, target: str) -> None:
        _loopback_target(target)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.faultproxy", target],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parents[2], env=dict(os.environ))
        self.port = int(self._reply().removeprefix("port "))
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self.mode = "forward"

    def _reply(self) -> str:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(CONTROL_TIMEOUT):
                raise TimeoutError("fault proxy process did not answer")
        line = self.proc.stdout.readline().strip()
        if not line or line.startswith("error"):
            raise RuntimeError(f"fault proxy process: {line or 'exited'}")
        return line

    def _command(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def set_mode(self, mode: str) -> None:
        self._command(f"mode {mode}")
        self.mode = mode

    def cut(self, after: int, times: int) -> None:
        self._command(f"cut {after} {times}")
        self.mode = "cut"

    def outcomes(self) -> dict[str, int]:
        return dict(json.loads(self._command("outcomes")))

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()  # end of commands: the child closes the proxy and exits
            try:
                self.proc.wait(timeout=CONTROL_TIMEOUT + 5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def main(argv: list[str]) -> int:
    """`python -m tests.support.faultproxy 127.0.0.1:PORT`: prints `port N`, then answers each
    stdin command (`mode NAME`, `cut AFTER TIMES`, `outcomes`) with one line; EOF stops it."""
    if len(argv) != 1:
        print("error usage: faultproxy 127.0.0.1:PORT", flush=True)
        return 2
    proxy = FaultProxy(argv[0])
    print(f"port {proxy.port}", flush=True)
    try:
        for line in sys.stdin:
            words = line.split()
            try:
                if words[:1] == ["mode"] and len(words) == 2:
                    proxy.set_mode(words[1])
                    print("ok", flush=True)
                elif words[:1] == ["cut"] and len(words) == 3:
                    proxy.cut(int(words[1]), int(words[2]))
                    print("ok", flush=True)
                elif words == ["outcomes"]:
                    print(json.dumps(proxy.outcomes()), flush=True)
                else:
                    print(f"error unknown command {line.strip()[:80]!r}", flush=True)
            except (ValueError, RuntimeError, TimeoutError) as exc:
                print(f"error {exc}", flush=True)
    finally:
        proxy.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
