"""Upload sessions: a push's blob being written, between its POST and its final PUT.

A session is a `BlobWriter` begun unnamed (`Store.begin_upload`: `tmp/upload-<id>.part`,
hashed as it grows; the digest is named at the end, then `Store.publish` checks the bytes
against it) and a row in the index (`storage/uploadindex.py`: id, repository, bytes received,
created and last-touched times). Sessions outlive the process, a clean stop or a kill -9
alike, until they expire: at start the sweep of tmp/ keeps the files of live rows, and this
class reopens them. The offset a resumed session reports is the file's size (every byte in it
arrived in order; a chunk cut by the crash keeps its prefix, as a cut connection does), so a
client that asks the status continues from what is really there.

hashlib's state cannot be saved: the first PATCH or PUT after a restart re-reads the file in a
thread (`BlobWriter.catch_up`, one 1 MiB buffer) before it writes; the status GET needs no
hash. A crash never publishes anything: only the final PUT names a digest, and `publish`
checks the whole file against it. No room is reserved for a push (its bytes are on the disk
as they arrive, which the free-space check sees), so nothing about the quota is lost either.

A session idle for `upload_timeout` (wall-clock time: it spans processes) is aborted by the
expiry task, which `Uploads` owns; `close` cancels and awaits it and the re-reads in progress,
then closes the files and keeps them. One request at a time per session: a second one while a
chunk is still arriving is refused (416 with the status to ask for).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from edgecache.errors import BlobUploadUnknown, TooManyRequests, UploadRangeInvalid
from edgecache.storage import uploadindex
from edgecache.storage.index import Index
from edgecache.storage.store import BlobWriter, Store

log = logging.getLogger(__name__)
MAX_SESSIONS = 1024  # open upload sessions at once; each holds a descriptor and a tmp file


@dataclass(eq=False)
class Session:
    id: str
    repository: str
    writer: BlobWriter
    touched: float = field(default_factory=time.time)
    busy: bool = False
    catching_up: asyncio.Task[None] | None = None  # the re-read after a restart, while it runs

    @property
    def size(self) -> int:
        return self.writer.size


class Uploads:
    def __init__(self, store: Store, index: Index, timeout: float) -> None:
        """Reopens the sessions a previous process left (their files survived the sweep)."""
        self._store = store
        self._index = index
        self._timeout = timeout
        self._sessions: dict[str, Session] = {}
        self._expiry: asyncio.Task[None] | None = None
        self._closing = False  # read by the re-reading threads between pieces
        self._reading: set[asyncio.Task[None]] = set()  # re-reads, the cancelled ones' too
        for row in uploadindex.rows(index):
            writer = store.resume_upload(row.id)
            if writer is None:
                uploadindex.remove(index, row.id)
                continue
            if writer.size != row.received:
                log.info("upload %s resumes at %d bytes (%d were acknowledged)", row.id,
                         writer.size, row.received)
            self._sessions[row.id] = Session(row.id, row.repository, writer, row.touched_at)
        if self._sessions:
            log.info("%d upload session(s) resumed", len(self._sessions))
            self._arm()

    def __len__(self) -> int:
        return len(self._sessions)

    def start(self, repository: str) -> Session:
        if len(self._sessions) >= MAX_SESSIONS:
            raise TooManyRequests("too many uploads in progress; retry shortly")
        session_id = uuid.uuid4().hex
        session = Session(session_id, repository, self._store.begin_upload(session_id))
        uploadindex.add(self._index, session.id, repository, session.touched)
        self._sessions[session.id] = session
        self._arm()
        return session

    def get(self, repository: str, session_id: str) -> Session:
        session = self._sessions.get(session_id)
        if session is None or session.repository != repository:
            raise BlobUploadUnknown(f"upload {session_id[:64]!r} is not in progress (finished, "
                                    "cancelled or expired): start again")
        self._touch(session)
        return session

    @contextlib.asynccontextmanager
    async def using(self, session: Session) -> AsyncIterator[Session]:
        """The session for one request that writes, its hash caught up with its file; a
        concurrent request on it is refused."""
        if session.busy:
            raise UploadRangeInvalid("another request on this upload is in progress; ask its "
                                     "status (GET) and continue from there")
        session.busy = True
        try:
            if session.writer.behind:
                await self._catch_up(session)
            yield session
        finally:
            session.busy = False
            if session.id in self._sessions:
                self._touch(session)

    async def _catch_up(self, session: Session) -> None:
        """Re-hash what a previous process wrote, in a thread. The task is the session's, not
        the request's: a client that goes away leaves it running (the writer's descriptor is
        never closed under it) and the next request waits for the same one."""
        if session.catching_up is None:
            session.catching_up = asyncio.create_task(
                asyncio.to_thread(session.writer.catch_up, self._stopping), name="upload-catch-up")
            self._reading.add(session.catching_up)
            session.catching_up.add_done_callback(self._reading.discard)
        try:
            await asyncio.shield(session.catching_up)
        finally:
            if session.catching_up.done():
                session.catching_up = None

    def finish(self, session: Session) -> None:
        """Forget a session whose writer is being published (or failed and was removed)."""
        self._sessions.pop(session.id, None)
        uploadindex.remove(self._index, session.id)

    def cancel(self, session: Session) -> None:
        """End the session and remove its file (once a re-read in progress let go of it)."""
        self.finish(session)
        task = session.catching_up
        if task is not None and not task.done():
            task.add_done_callback(lambda _: session.writer.abort())
        else:
            session.writer.abort()

    def expire(self, now: float | None = None) -> int:
        """Abort sessions idle longer than the timeout (not one receiving a chunk)."""
        now = time.time() if now is None else now
        stale = [s for s in self._sessions.values()
                 if not s.busy and now - s.touched > self._timeout]
        for session in stale:
            self.cancel(session)
        return len(stale)

    def _stopping(self) -> bool:
        return self._closing

    def _touch(self, session: Session) -> None:
        session.touched = time.time()
        uploadindex.touch(self._index, session.id, session.size, session.touched)

    def _arm(self) -> None:
        if self._expiry is None or self._expiry.done():
            self._expiry = asyncio.create_task(self._expire(), name="upload-expiry")

    async def _expire(self) -> None:
        """Runs while sessions exist; ends (and is started again by the next POST) when
        none is left, so an idle server has no timer."""
        interval = min(max(self._timeout / 4, 0.05), 60.0)
        while self._sessions:
            await asyncio.sleep(interval)
            self.expire()

    async def close(self) -> None:
        """At shutdown: stop the expiry task and the re-reads, close every session's file and
        keep it (and its row): the next process resumes them."""
        self._closing = True
        task, self._expiry = self._expiry, None
        if task is not None:
            task.cancel()
        await asyncio.gather(*(t for t in (task, *self._reading) if t), return_exceptions=True)
        for session in self._sessions.values():
            session.writer.close()
        self._sessions.clear()
