"""containerd `certs.d/<registry>/hosts.toml`, merged into the file that is there.

edgecache owns the `host` entries for its own endpoints (first, in order: containerd tries hosts
in file order) and `server` only when the file has none; every other key and host is kept. The
CA is named relative to the hosts.toml (containerd resolves `ca` from the file's directory), so
the same file is right staged under `--out DIR`, installed under /etc/containerd/certs.d, or
copied into another `config_path` (k3s, a kubelet's CRI). With `--username`, each of our
entries carries `header = { Authorization = "Basic ..." }`: containerd sends it with every
request to that host, which is how node-level credentials reach the mirror (credentials.py).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable

from edgecache.clientconfig.endpoints import Endpoint
from edgecache.clientconfig.tomlwrite import dumps
from edgecache.errors import ConfigError

CA_NAME = "edgecache-ca.crt"  # in certs.d itself, beside the per-registry directories
HEADER = "# edgecache client-config owns the host entries for its endpoints; the rest is kept"


def hosts_toml(server: str | None, points: list[Endpoint], with_ca: bool,
               authorization: str | None = None) -> Callable[[bytes | None, str], bytes]:
    """A merge: (existing bytes or None, the path to name in errors) -> the new file.
    `authorization` (a Basic value for the mirror) goes into each of our entries' `header`."""
    ours: dict[str, dict[str, object]] = {}
    for point in points:
        entry: dict[str, object] = {"capabilities": ["pull", "resolve"]}
        if point.scheme == "https" and with_ca:
            entry["ca"] = f"../{CA_NAME}"
        if authorization is not None:
            entry["header"] = {"Authorization": authorization}
        ours[point.url] = entry

    def merge(existing: bytes | None, where: str) -> bytes:
        doc = _parse(existing, where)
        hosts = doc.pop("host", {})
        if not isinstance(hosts, dict):
            raise ConfigError(f"{where}: `host` is not a table; fix or move the file")
        merged: dict[str, object] = {}
        if server is not None or "server" in doc:
            merged["server"] = doc.pop("server", server)
        merged.update(doc)
        # our keys win inside our entries; a key someone added there (a header) stays
        mine = {url: _entry(_table(hosts.get(url)), entry) for url, entry in ours.items()}
        merged["host"] = {**mine, **{u: e for u, e in hosts.items() if u not in ours}}
        return dumps(merged, inline=frozenset({"host"}), header=HEADER).encode()

    return merge


def _entry(existing: dict[str, object], entry: dict[str, object]) -> dict[str, object]:
    """Our keys over theirs; inside `header`, our Authorization over their other headers."""
    merged = {**existing, **entry}
    if "header" in entry and isinstance(existing.get("header"), dict):
        merged["header"] = {**_table(existing["header"]), **_table(entry["header"])}
    return merged


def _table(entry: object) -> dict[str, object]:
    return dict(entry) if isinstance(entry, dict) else {}


def _parse(existing: bytes | None, where: str) -> dict[str, object]:
    if existing is None:
        return {}
    try:
        return tomllib.loads(existing.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{where}: not valid TOML ({exc}); fix or move it, then run "
                          "client-config again") from None
