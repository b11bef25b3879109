"""Docker's `daemon.json`, merged into the file that is there.

edgecache owns its own URLs at the head of `registry-mirrors` (dockerd uses mirrors for Docker
Hub only, by design) and its plain-HTTP addresses in `insecure-registries`; `data-root`,
`log-driver`, other mirrors and every other key are kept. The CA goes in
`/etc/docker/certs.d/<host:port>/ca.crt`, which dockerd reads for each registry and mirror.
"""

from __future__ import annotations

import json

from edgecache import jsondoc
from edgecache.clientconfig.endpoints import Endpoint
from edgecache.errors import ConfigError

DAEMON_JSON_LIMIT = 16 * 1024 * 1024  # dockerd's file is a few hundred bytes; this is a wrong file


def _list(doc: dict[str, object], name: str, where: str) -> list[object]:
    items = doc.get(name) or []
    if not isinstance(items, list):
        raise ConfigError(f"{where}: `{name}` is not a list; fix or move the file")
    return items


def refused(default_upstream: str | None) -> str | None:
    """dockerd sends mirror requests for Docker Hub only, naming no registry: edgecache answers
    them from `default_upstream`, so any other default would serve other images under Hub's
    names. The line that says so, when it applies."""
    if default_upstream == "docker.io":
        return None
    return (f"Docker mirrors Docker Hub only, and edgecache answers those requests from "
            f"default_upstream ({default_upstream or 'none'}): daemon.json names no mirror; "
            "set default_upstream: docker.io, or pull by the mirror's address "
            "(<host:port>/<registry>/<repository>)")


def daemon_json(points: list[Endpoint], mirror: bool, existing: bytes | None,
                where: str) -> bytes:
    """`mirror`: whether edgecache's URLs go into `registry-mirrors` (see `refused`)."""
    try:
        doc = jsondoc.parse(existing, DAEMON_JSON_LIMIT) if existing and existing.strip() else {}
    except jsondoc.JsonUnreadable as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc}); fix or move it, then run "
                          "client-config again") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: not a JSON object; fix or move it")
    if mirror:
        urls: list[object] = [p.url for p in points]
        doc["registry-mirrors"] = urls + [u for u in _list(doc, "registry-mirrors", where)
                                          if u not in urls]
    insecure = [p.address for p in points if p.scheme == "http"]
    if insecure or "insecure-registries" in doc:
        before = _list(doc, "insecure-registries", where)
        doc["insecure-registries"] = before + [a for a in insecure if a not in before]
    return (json.dumps(doc, indent=2) + "\n").encode()
