"""Progress for the long air-gap commands, and the result table they end with.

Progress goes to stderr so stdout stays the command's result (the table, pins lines, or the
bundle itself with `export --output -`). On a terminal it is one line redrawn in place, at most
`TTY_INTERVAL` apart, so a 20 GB warm does not cost a redraw per chunk. Elsewhere (journald, a CI
log, a pipe) a carriage return would garble the log, so it is a plain line every
`PLAIN_INTERVAL` seconds: enough to show the job is alive without flooding anything.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from edgecache.oci import Digest
from edgecache.units import human

TTY_INTERVAL = 0.2
PLAIN_INTERVAL = 5.0
BAR_WIDTH = 24


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Bytes and items done out of a total that may grow as work is discovered (warm learns
    the size of an image only once its manifests are read)."""

    def __init__(self, verb: str, noun: str, stream: TextIO | None = None, *,
                 tty: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.verb = verb  # "warming", "exporting", "importing"
        self.noun = noun  # what items are: "images", "members"
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = TTY_INTERVAL if self.tty else PLAIN_INTERVAL
        self.clock = clock
        self.started = clock()
        self.total_bytes = 0
        self.done_bytes = 0
        self.total_items = 0
        self.done_items = 0
        self._last_draw = self.started
        self._drawn = False

    def add_total(self, nbytes: int = 0, items: int = 0) -> None:
        self.total_bytes += nbytes
        self.total_items += items
        self.refresh()

    def advance(self, nbytes: int) -> None:
        """Count bytes done; negative to take back the bytes of a failed transfer."""
        self.done_bytes += nbytes
        self.refresh()

    def item_done(self, count: int = 1) -> None:
        self.done_items += count
        self.refresh()

    def blob_done(self, digest: str, size: int, fetched: bool) -> None:
        """One blob is in the cache (fetched now, or found there); the line-per-layer view of
        `edgecache pin` (`ops/pins.py`) records these. The bar needs nothing more."""

    def rate(self) -> float:
        elapsed = self.clock() - self.started
        return self.done_bytes / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        parts = []
        if self.tty:
            fraction = self.done_bytes / self.total_bytes if self.total_bytes else 0.0
            filled = int(BAR_WIDTH * min(1.0, max(0.0, fraction)))
            parts.append("[" + "#" * filled + "." * (BAR_WIDTH - filled) + "]")
        else:
            parts.append(f"{self.verb}:")
        sizes = human(self.done_bytes)
        if self.total_bytes:
            sizes += f" / {human(self.total_bytes)}"
        parts.append(sizes)
        items = f"{self.done_items}"
        if self.total_items:
            items += f"/{self.total_items}"
        parts.append(f"{items} {self.noun}")
        parts.append(f"{human(rate)}/s")
        remaining = self.total_bytes - self.done_bytes
        if rate > 0 and self.total_bytes and remaining > 0:
            parts.append(f"ETA {duration(remaining / rate)}")
        return "  ".join(parts)

    def refresh(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        self._draw()

    def _draw(self) -> None:
        if self.tty:
            self.stream.write("\r" + self.line() + "\x1b[K")
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
        self._drawn = True

    def finish(self) -> None:
        """The last state, and on a terminal the newline that leaves the bar in place."""
        self._draw()
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
        self._drawn = False

    def abandon(self) -> None:
        """Before an error message: end a half-drawn bar so the message gets its own line."""
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def table(headers: Sequence[str], rows: Sequence[Sequence[str]],
          right: Sequence[int] = ()) -> list[str]:
    """Columns padded to their widest cell; the columns in `right` (numbers) right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def render(cells: Sequence[str]) -> str:
        out = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
               for i, cell in enumerate(cells)]
        return "  ".join(out).rstrip()

    return [render(headers), *(render(row) for row in rows)]


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def short_digest(digest: Digest | str | None) -> str:
    """`sha256:` and 12 hex digits, as `docker images` shows them; enough to tell apart (a
    string: as a JSON event carries it, `edgecache pin`)."""
    if not digest:
        return "-"
    algorithm, _, hexpart = str(digest).partition(":")
    return f"{algorithm}:{hexpart[:12]}"
