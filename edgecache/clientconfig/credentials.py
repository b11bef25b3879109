"""Credentials for the mirror itself, written into the node-level files that can carry them.

A kubelet pull secret (and any credential stored under a registry's own name, `quay.io`) is
sent only to that registry's host, never to a mirror in front of it: containerd matches a
secret's `server_address` against the host it is talking to. What does reach the mirror is
node configuration keyed by the mirror's address: an `Authorization` header on its `host`
entries in containerd's hosts.toml, and k3s `configs."<mirror host:port>".auth`. The password
is read from a file, never from the command line (which every local user can read in /proc).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from edgecache.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str

    @property
    def authorization(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def load(username: str | None, password_file: str | None) -> Credentials | None:
    """The credentials `--username` and `--password-file` name, or None without either."""
    if username is None and password_file is None:
        return None
    if not username or not password_file:
        raise ConfigError("client-config: --username and --password-file go together")
    if ":" in username or any(c < " " for c in username):
        raise ConfigError("client-config: --username must not hold ':' or control characters")
    try:
        text = Path(password_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise ConfigError(f"client-config: --password-file {password_file}: {reason}") from None
    password = text.rstrip("\r\n")
    if not password or "\n" in password:
        raise ConfigError(f"client-config: --password-file {password_file}: expected the "
                          "password on one line")
    return Credentials(username, password)
