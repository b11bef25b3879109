"""Applying rendered files to a tree: merge with what is there, back it up, or show the diff.

A file that would not change is not touched (and its backup is not overwritten, so running
client-config twice keeps the original in `.edgecache-bak`). New bytes go to a temporary file
renamed over the old one: a reader (containerd re-reads hosts.toml on every pull) never sees a
half-written file.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edgecache.clientconfig.render import Output

BACKUP = ".edgecache-bak"


@dataclass(frozen=True, slots=True)
class Change:
    path: PurePosixPath  # where the file is once installed
    target: Path  # where it is written now (under --out)
    old: bytes | None
    new: bytes
    secret: bool = False

    @property
    def changed(self) -> bool:
        return self.old != self.new

    @property
    def backup(self) -> Path:
        return self.target.with_name(self.target.name + BACKUP)


def plan(outputs: list[Output], root: Path) -> list[Change]:
    changes = []
    for output in outputs:
        target = root / output.path.relative_to("/")
        old = target.read_bytes() if target.is_file() else None
        changes.append(Change(output.path, target, old, output.merge(old, str(target)),
                              output.secret))
    return changes


def apply(change: Change) -> None:
    """A symlinked file (config management often links /etc files) is written through the
    link: replacing the link itself would detach the file from whoever manages it. A file
    holding credentials, and its backup, are readable by their owner only."""
    target = change.target.resolve() if change.target.is_symlink() else change.target
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = 0o644
    if change.old is not None:
        mode = target.stat().st_mode & 0o7777
    if change.secret:
        mode &= 0o7700  # credentials: the owner only (containerd and k3s run as root)
    if change.old is not None:
        _write(change.backup, change.old, mode)
    _write(target, change.new, mode)


def _write(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.edgecache-tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(temporary, mode)  # the umask must not narrow a file someone else reads
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def diff(change: Change) -> str:
    """A unified diff named by the installed path; a certificate shows as one line."""
    if change.new.startswith(b"-----BEGIN"):
        return f"{'replace' if change.old is not None else 'create'} {change.path}\n"
    old = change.old.decode(errors="replace").splitlines(keepends=True) if change.old else []
    lines = difflib.unified_diff(old, change.new.decode().splitlines(keepends=True),
                                 fromfile="/dev/null" if change.old is None else str(change.path),
                                 tofile=str(change.path))
    return "".join(lines)
