"""Blob bodies: Range parsing, cached files, and downloads in progress.

Cached files go out with `loop.sendfile` on plain TCP where the loop has it (the stdlib loop:
zero-copy, close to nginx). Under TLS there is no zero-copy and asyncio's sendfile emulation is
slow, and uvloop has no sendfile at all, so there we write large chunks ourselves.
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import aclosing
from pathlib import Path

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from edgecache.errors import BlobUnknown, EdgecacheError, RangeNotSatisfiable
from edgecache.proxy.fill import FillReader

log = logging.getLogger(__name__)

TLS_CHUNK = 1 << 20


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """A single `bytes=` range as [start, end) within `size`, or None for the whole blob."""
    if header is None:
        return None
    unit, eq, spec = header.partition("=")
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if (unit.strip().lower() != "bytes" or not eq or not dash or "," in spec
            or not (first or last) or not (first.isdigit() or not first)
            or not (last.isdigit() or not last)):
        raise RangeNotSatisfiable(f"unsupported Range {header[:100]!r} (one bytes range only)",
                                  size)
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable("empty suffix range", size)
        return max(0, size - suffix), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or start >= end:
        raise RangeNotSatisfiable(f"range {header[:100]!r} outside a blob of {size} bytes", size)
    return start, end


def _range_headers(headers: dict[str, str], span: tuple[int, int] | None,
                   size: int | None) -> int:
    """Add Content-Range when partial; returns the status."""
    if span is None:
        return 200
    headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{size}"
    return 206


class BlobFileResponse(web.StreamResponse):
    """A cached blob file, whole or one range."""

    def __init__(self, path: Path, size: int, span: tuple[int, int] | None,
                 headers: dict[str, str]) -> None:
        super().__init__(status=_range_headers(headers, span, size), headers=headers)
        self._path = path
        self._offset, end = span if span is not None else (0, size)
        self.content_length = end - self._offset

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        try:
            fobj = open(self._path, "rb")  # noqa: SIM115 - closed below, after streaming
        except FileNotFoundError as exc:
            raise BlobUnknown("blob was removed while being served") from exc
        try:
            writer = await super().prepare(request)
            count = self.content_length or 0
            transport = request.transport
            if transport is None:
                raise ConnectionResetError("connection lost")
            if transport.get_extra_info("sslcontext") is None:
                try:
                    await asyncio.get_running_loop().sendfile(transport, fobj, self._offset,
                                                              count)
                except NotImplementedError:  # uvloop has no sendfile
                    await self._write_chunks(fobj, count)
            else:
                await self._write_chunks(fobj, count)
            await super().write_eof()
            return writer
        finally:
            fobj.close()

    async def _write_chunks(self, fobj: object, count: int) -> None:
        fd = fobj.fileno()  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        offset, end = self._offset, self._offset + count
        while offset < end:
            data = await loop.run_in_executor(None, os.pread, fd, min(TLS_CHUNK, end - offset),
                                              offset)
            if not data:
                raise ConnectionResetError("blob file ended early")
            await self.write(data)
            offset += len(data)

    async def write_eof(self, data: bytes = b"") -> None:
        """Already done in prepare (as aiohttp's FileResponse does)."""


async def stream_fill(request: web.Request, reader: FillReader, size: int | None,
                      span: tuple[int, int] | None,
                      headers: dict[str, str]) -> tuple[web.StreamResponse, int]:
    """Stream a download in progress; the response and the body bytes sent. If it fails, the
    connection is cut before the last byte, so the client never mistakes a broken blob for a
    whole one."""
    response = web.StreamResponse(status=_range_headers(headers, span, size), headers=headers)
    start, end = span if span is not None else (0, size)
    if end is not None:
        response.content_length = end - start
    await response.prepare(request)
    sent = 0
    try:
        async with aclosing(reader.chunks(start, end)) as chunks:
            async for data in chunks:
                await response.write(data)
                sent += len(data)
    except EdgecacheError as exc:
        log.warning("cut a client off %s: %s", reader.fill.digest, exc)
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError(str(exc)) from exc
    await response.write_eof()
    return response, sent
