"""k3s `registries.yaml`, merged into the file that is there.

edgecache owns, for each upstream, its own endpoint URLs at the head of `mirrors.<name>.endpoint`
(k3s tries them in order, then the registry itself) and `configs.<host:port>.tls.ca_file` for
its HTTPS endpoints (with `--username`, also `configs.<host:port>.auth`: k3s hands it to
containerd for requests to the mirror); other mirrors, endpoints, `rewrite` and every other key
are kept.
Comments are not (the previous file stays beside it as `.edgecache-bak`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath

import yaml

from edgecache.clientconfig.credentials import Credentials
from edgecache.clientconfig.endpoints import Endpoint
from edgecache.errors import ConfigError

HEADER = ("# edgecache client-config owns its endpoints and their ca_file (and auth); the rest "
          "is kept\n")


def _mapping(parent: dict[str, object], name: str, where: str) -> dict[str, object]:
    child = parent.setdefault(name, {})
    if child is None:
        child = parent[name] = {}
    if not isinstance(child, dict):
        raise ConfigError(f"{where}: `{name}` is not a mapping; fix or move the file")
    return child


def registries_yaml(upstreams: Iterable[str], points: list[Endpoint],
                    ca_path: PurePosixPath | None, existing: bytes | None, where: str,
                    credentials: Credentials | None = None) -> bytes:
    try:
        doc = yaml.safe_load(existing) if existing else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({str(exc).splitlines()[0]}); fix or "
                          "move it, then run client-config again") from None
    doc = {} if doc is None else doc
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: not a YAML mapping; fix or move it")
    urls = [p.url for p in points]
    mirrors = _mapping(doc, "mirrors", where)
    for name in sorted(upstreams):
        mirror = _mapping(mirrors, name, where)
        before = mirror.get("endpoint") or []
        if not isinstance(before, list):
            raise ConfigError(f"{where}: mirrors.{name}.endpoint is not a list")
        mirror["endpoint"] = urls + [url for url in before if url not in urls]
    if ca_path is not None or credentials is not None:
        configs = _mapping(doc, "configs", where)
        for point in points:
            config = _mapping(configs, point.address, where)
            if point.scheme == "https" and ca_path is not None:
                _mapping(config, "tls", where)["ca_file"] = str(ca_path)
            if credentials is not None:
                config["auth"] = {"username": credentials.username,
                                  "password": credentials.password}
    return (HEADER + yaml.safe_dump(doc, sort_keys=False)).encode()
