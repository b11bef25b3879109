"""Upload sessions: a push's blob being written, between its POST and its final PUT.

A session is a `BlobWriter` begun unnamed (`Store.begin_upload`: a temporary file under
storage's tmp/, hashed as it grows; the digest is named at the end, then `Store.publish` checks
the bytes against it) and a small record: its id, repository, last activity. The sha256 is
carried in memory while the session lives. A restart drops every session: tmp/ is swept at
start, and a client whose session is gone (404 BLOB_UPLOAD_UNKNOWN) starts its upload again,
which every client does. Re-hashing the partial file instead would keep a resumable session
across a crash at the cost of reading it back whole; not worth it for a site registry.

A session idle for `upload_timeout` is aborted by the expiry task, which `Uploads` owns
(`close` cancels and awaits it and abandons every session's file). One request at a time per
session: a second one while a chunk is still arriving is refused (416 with the status to
ask for), since where it would start is not known yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from edgecache.errors import BlobUploadUnknown, TooManyRequests, UploadRangeInvalid
from edgecache.storage.store import BlobWriter, Store

MAX_SESSIONS = 1024  # open upload sessions at once; each holds a descriptor and a tmp file


@dataclass(eq=False)
class Session:
    id: str
    repository: str
    writer: BlobWriter
    touched: float = field(default_factory=time.monotonic)
    busy: bool = False

    @property
    def size(self) -> int:
        return self.writer.size


class Uploads:
    def __init__(self, store: Store, timeout: float) -> None:
        self._store = store
        self._timeout = timeout
        self._sessions: dict[str, Session] = {}
        self._expiry: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    def start(self, repository: str) -> Session:
        if len(self._sessions) >= MAX_SESSIONS:
            raise TooManyRequests("too many uploads in progress; retry shortly")
        session = Session(uuid.uuid4().hex, repository, self._store.begin_upload())
        self._sessions[session.id] = session
        if self._expiry is None or self._expiry.done():
            self._expiry = asyncio.create_task(self._expire(), name="upload-expiry")
        return session

    def get(self, repository: str, session_id: str) -> Session:
        session = self._sessions.get(session_id)
        if session is None or session.repository != repository:
            raise BlobUploadUnknown(f"upload {session_id[:64]!r} is not in progress (finished, "
                                    "cancelled, expired or lost in a restart): start again")
        session.touched = time.monotonic()
        return session

    @contextlib.contextmanager
    def using(self, session: Session) -> Iterator[Session]:
        """The session for one request; a concurrent request on it is refused."""
        if session.busy:
            raise UploadRangeInvalid("another request on this upload is in progress; ask its "
                                     "status (GET) and continue from there")
        session.busy = True
        try:
            yield session
        finally:
            session.busy = False
            session.touched = time.monotonic()

    def finish(self, session: Session) -> None:
        """Forget a session whose writer was published (or failed and was removed)."""
        self._sessions.pop(session.id, None)

    def cancel(self, session: Session) -> None:
        self._sessions.pop(session.id, None)
        session.writer.abort()

    def expire(self, now: float | None = None) -> int:
        """Abort sessions idle longer than the timeout (not one receiving a chunk)."""
        now = time.monotonic() if now is None else now
        stale = [s for s in self._sessions.values()
                 if not s.busy and now - s.touched > self._timeout]
        for session in stale:
            self.cancel(session)
        return len(stale)

    async def _expire(self) -> None:
        """Runs while sessions exist; ends (and is started again by the next POST) when
        none is left, so an idle server has no timer."""
        interval = min(max(self._timeout / 4, 0.05), 60.0)
        while self._sessions:
            await asyncio.sleep(interval)
            self.expire()

    async def close(self) -> None:
        """At shutdown: stop the expiry task and abandon every session's file."""
        task, self._expiry = self._expiry, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for session in list(self._sessions.values()):
            self.cancel(session)
