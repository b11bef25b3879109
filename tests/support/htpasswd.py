"""htpasswd files for client auth in tests: bcrypt as `htpasswd -B` writes it (the `$2y$`
prefix), cost 4 unless a test measures the cost itself."""

from __future__ import annotations

from pathlib import Path

import bcrypt


def entry(user: str, password: str, cost: int = 4) -> str:
    """One line's content (bcrypt reads at most 72 bytes of a password, as htpasswd does)."""
    hashed = bcrypt.hashpw(password.encode()[:72], bcrypt.gensalt(rounds=cost)).decode()
    return f"{user}:$2y${hashed[4:]}"


def write_htpasswd(path: Path, user: str, password: str) -> Path:
    """A one-user htpasswd file, mode 0600 (edgecache warns about secrets others can read)."""
    path.write_text(entry(user, password) + "\n")
    path.chmod(0o600)
    return path
