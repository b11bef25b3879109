"""The containers-registries.conf(5) drop-in for podman, CRI-O, skopeo and buildah.

The drop-in (`registries.conf.d/edgecache.conf`) is edgecache's own file, written whole; the
user's registries.conf is never touched. containers/image (podman 4.3, skopeo 1.9) parses a
mirror `location` with the Docker reference grammar, which has no IPv6 literal
("invalid reference format"), so an endpoint like `[::1]:30003` is left out of this file and
the caller is told to name it by a host name instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from edgecache.clientconfig.endpoints import Endpoint
from edgecache.clientconfig.tomlwrite import value

HEADER = "# written by edgecache client-config (podman, CRI-O, skopeo, buildah)"


def usable(points: list[Endpoint]) -> list[Endpoint]:
    return [p for p in points if not p.ipv6]


def refused(points: list[Endpoint]) -> str | None:
    """The one line that says why IPv6 endpoints are missing from the drop-in, if any are."""
    v6 = [p.address for p in points if p.ipv6]
    if not v6:
        return None
    return (f"podman/CRI-O/skopeo cannot use an IPv6 address as a mirror ({', '.join(v6)}): "
            "left out of registries.conf.d/edgecache.conf; add a host name for it to "
            "tls.extra_names and pass it with --address NAME")


def registries_conf(upstreams: Iterable[str], points: list[Endpoint]) -> bytes:
    lines = [HEADER]
    for name in sorted(upstreams):
        lines += ["", "[[registry]]", f"prefix = {value(name)}", f"location = {value(name)}"]
        for point in usable(points):
            lines += ["[[registry.mirror]]", f"location = {value(f'{point.address}/{name}')}"]
            if point.scheme == "http":
                lines.append("insecure = true")
    return ("\n".join(lines) + "\n").encode()
