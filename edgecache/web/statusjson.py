"""The status pages as JSON documents: the twin scripts read, and what the HTML is drawn from
(`statuspage.py` renders these dicts, so the two cannot drift apart).

Times are Unix seconds, sizes bytes, ratios 0..1 (None when nothing was asked yet).
"""

from __future__ import annotations

from typing import Any

from edgecache.storage.store import Image, Part
from edgecache.web.statusdata import Disk, Peer, Rate, UpstreamState


def overview_json(disk: Disk, hour: Rate, start: Rate, upstreams: list[UpstreamState],
                  peers: list[Peer] | None, authenticated: bool, hidden: int) -> dict[str, Any]:
    return {
        "disk": {"used_bytes": disk.used, "quota_bytes": disk.budget,
                 "free_bytes": disk.free, "filesystem_bytes": disk.total},
        "rates": {"last_hour": _rate(hour), "since_start": _rate(start)},
        "upstreams": [{
            "name": u.name, "up": u.up, "suspect": u.suspect, "last_error": u.last_error,
            "access": "authenticated" if u.private else "public",
            "ratelimit": {"remaining": u.ratelimit_remaining, "limit": u.ratelimit_limit},
        } for u in upstreams],
        "peers": {"cluster": peers is not None,
                  "nodes": [{"name": p.name, "address": p.address, "up": p.up,
                             "detail": p.detail, "last_seen": p.last_seen,
                             "self": p.is_self} for p in peers or ()]},
        "viewer": {"authenticated": authenticated, "hidden_upstreams": hidden},
    }


def _rate(rate: Rate) -> dict[str, Any]:
    return {"seconds": rate.seconds, "requests": rate.requests, "hit_ratio": rate.hit_ratio,
            "saved_bytes": rate.saved_bytes}


def row_json(row: Image, platforms: list[str]) -> dict[str, Any]:
    return {"upstream": row.upstream, "repository": row.repository, "tag": row.tag,
            "digest": row.digest, "media_type": row.media_type, "held": row.media_type is not None,
            "platforms": platforms, "size_bytes": row.size, "last_pulled": row.last_use,
            "pinned": row.pinned, "local": row.local}


def image_json(row: Image, platforms: list[str], parts: list[Part],
               referrers: list[tuple[str, str | None]]) -> dict[str, Any]:
    return {
        "image": row_json(row, platforms),
        "blobs": [{"digest": p.digest, "size_bytes": p.size, "media_type": p.media_type,
                   "cached": p.held} for p in parts],
        "referrers": [{"digest": digest, "artifact_type": kind} for digest, kind in referrers],
    }
