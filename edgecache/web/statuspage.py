"""The status pages as HTML, drawn from their JSON documents (`statusjson.py`).

f-strings and `html.escape`: no template engine, no script (search and sort are query
parameters, so a page is one request and works without JavaScript). Every value that came from
an upstream or a client (names, tags, errors, the search) is escaped here, in one place: `_e`.
"""

from __future__ import annotations

import html
import time
from typing import Any
from urllib.parse import urlencode

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2530;background:#f4f6f8}
header{background:#1d2530;color:#fff;padding:10px 24px}header a{color:#fff}
main{padding:16px 24px;max-width:1200px}h1{font-size:18px;margin:0}h2{font-size:15px}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:#fff;border-radius:6px;
padding:10px 14px;min-width:200px;box-shadow:0 1px 2px #0002}.big{font-size:20px}
.bar{height:6px;background:#dde3ea;border-radius:3px}.bar i{display:block;height:6px;
background:#3a7bd5;border-radius:3px}table{border-collapse:collapse;width:100%;
background:#fff;box-shadow:0 1px 2px #0002}th,td{padding:5px 8px;text-align:left;
border-bottom:1px solid #e6eaef}th a{color:inherit}td.n,th.n{text-align:right}
.ok{color:#18794e}.bad{color:#c0392b}.warn{color:#b7791f}.mut{color:#6b7785}
code{font-size:12px}form{margin:8px 0}input[type=search]{width:320px;padding:4px}
.tag{background:#e8eef7;border-radius:3px;padding:0 4px;margin-right:3px;font-size:12px}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def size(n: object) -> str:
    if not isinstance(n, int):
        return "—"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # not reached


def ago(when: object) -> str:
    if not isinstance(when, int | float):
        return "—"
    seconds = max(0, int(time.time() - when))
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{seconds // length} {unit} ago"
    return f"{seconds} s ago"


def _ratio(value: object) -> str:
    return f"{value * 100:.1f} %" if isinstance(value, float | int) else "—"


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
            f"<meta name=viewport content='width=device-width'><style>{_STYLE}</style></head>"
            f"<body><header><h1><a href='/'>edgecache</a> · {_e(title)}</h1></header>"
            f"<main>{body}</main></body></html>")


def overview_html(doc: dict[str, Any]) -> str:
    disk, rates = doc["disk"], doc["rates"]
    used, quota = disk["used_bytes"], disk["quota_bytes"]
    share = min(100.0, 100.0 * used / quota) if quota else 0.0
    hour, start = rates["last_hour"], rates["since_start"]
    cards = (
        f"<div class=card id=disk>Disk used / quota<div class=big>{size(used)} / "
        f"{size(quota)}</div>"
        f"<div class=bar><i style='width:{share:.1f}%'></i></div>"
        f"<span class=mut>{size(disk['free_bytes'])} free of "
        f"{size(disk['filesystem_bytes'])}</span></div>"
        f"<div class=card id=hits>Hit ratio<div class=big>{_ratio(hour['hit_ratio'])}</div>"
        f"<span class=mut>last hour ({hour['requests']} requests); since start "
        f"{_ratio(start['hit_ratio'])}</span></div>"
        f"<div class=card id=saved>Bytes saved<div class=big>{size(hour['saved_bytes'])}</div>"
        f"<span class=mut>last hour; since start {size(start['saved_bytes'])}</span></div>")
    return _page("status", f"<div class=cards>{cards}</div>" + _upstreams(doc)
                 + _peers(doc["peers"]) + _images(doc))


def _upstreams(doc: dict[str, Any]) -> str:
    rows = []
    for u in doc["upstreams"]:
        state = ("<span class=bad>down</span>" if not u["up"] else
                 "<span class=warn>suspect</span>" if u["suspect"] else "<span class=ok>up</span>")
        limit = u["ratelimit"]
        budget = (f"{limit['remaining']} / {limit['limit'] or '?'}"
                  if limit["remaining"] is not None else "—")
        rows.append(f"<tr><td>{_e(u['name'])}</td><td>{state}</td><td>{_e(u['access'])}</td>"
                    f"<td class=n>{_e(budget)}</td><td class=mut>{_e(u['last_error'])}</td></tr>")
    hidden = doc["viewer"]["hidden_upstreams"]
    note = (f"<p class=mut>{hidden} authenticated upstream(s) and their images are hidden: "
            f"<a href='/login'>log in</a> to see them.</p>" if hidden else "")
    return ("<h2>Upstreams</h2><table id=upstreams><tr><th>Name</th><th>State</th><th>Access"
            "</th><th class=n>Rate-limit budget</th><th>Last error</th></tr>"
            + "".join(rows) + "</table>" + note)


def _peers(peers: dict[str, Any]) -> str:
    if not peers["cluster"]:
        return "<h2>Cluster peers</h2><p id=peers class=mut>cluster mode off</p>"
    rows = "".join(
        f"<tr><td>{_e(p['name'])}</td><td>{_e(p['address'])}</td><td>"
        f"{'<span class=ok>up</span>' if p['up'] else '<span class=bad>down</span>'}</td>"
        f"<td class=mut>{_e(p['detail'])}</td></tr>" for p in peers["nodes"])
    return ("<h2>Cluster peers</h2><table id=peers><tr><th>Node</th><th>Address</th>"
            f"<th>State</th><th></th></tr>{rows or '<tr><td colspan=4>none yet</td></tr>'}</table>")


def _images(doc: dict[str, Any]) -> str:
    images = doc["images"]
    q, sort, order = images["q"], images["sort"], images["order"]

    def head(key: str, label: str, cls: str = "") -> str:
        flip = "desc" if sort == key and order == "asc" else "asc"
        mark = (" ▲" if order == "asc" else " ▼") if sort == key else ""
        href = "/?" + urlencode({"q": q, "sort": key, "order": flip})
        return f"<th{cls}><a href='{_e(href)}'>{label}{mark}</a></th>"

    rows = []
    for r in images["rows"]:
        link = "/image?" + urlencode({"upstream": r["upstream"], "repository": r["repository"],
                                      "tag": r["tag"]})
        flags = ("<span class=tag>pinned</span>" if r["pinned"] else "") + (
            "<span class=tag>local</span>" if r["local"] else "") + (
            "" if r["held"] else "<span class=tag>evicted</span>")
        rows.append(
            f"<tr><td>{_e(r['upstream'])}</td><td><a href='{_e(link)}'>{_e(r['repository'])}"
            f"</a></td><td>{_e(r['tag'])}</td><td>{_e(', '.join(r['platforms']) or '—')}</td>"
            f"<td class=n>{size(r['size_bytes'])}</td><td>{ago(r['last_pulled'])}</td>"
            f"<td>{flags}</td></tr>")
    more = (f"<p><a id=next href='{_e(images['next'])}'>next page</a></p>"
            if images["next"] else "")
    note = f"<p class=warn id=note>{_e(images['note'])}</p>" if images["note"] else ""
    return (
        "<h2>Images held</h2><form method=get action='/'>"
        f"<input type=search name=q value='{_e(q)}' placeholder='search upstream/repository:tag'>"
        f"<input type=hidden name=sort value='{_e(sort)}'>"
        f"<input type=hidden name=order value='{_e(order)}'> <button>Search</button> "
        f"<a href='/?format=json'>JSON</a></form>{note}<table id=images><tr>"
        f"<th>Upstream</th>{head('name', 'Repository')}<th>Tag</th><th>Platforms</th>"
        f"{head('size', 'Size', ' class=n')}{head('pulled', 'Last pulled')}<th></th></tr>"
        + ("".join(rows) or "<tr><td colspan=7 class=mut>no images</td></tr>")
        + "</table>" + more)


def image_html(doc: dict[str, Any]) -> str:
    r = doc["image"]
    name = f"{r['upstream']}/{r['repository']}:{r['tag']}"
    facts = (f"<p><code>{_e(r['digest'])}</code><br>{_e(r['media_type'] or 'manifest not held')}"
             f" · {size(r['size_bytes'])} held · platforms {_e(', '.join(r['platforms']) or '—')}"
             f" · last pulled {ago(r['last_pulled'])}"
             f"{' · pinned' if r['pinned'] else ''}{' · local' if r['local'] else ''}</p>")
    blobs = "".join(
        f"<tr><td><code>{_e(b['digest'])}</code></td><td class=n>{size(b['size_bytes'])}</td>"
        f"<td>{_e(b['media_type'] or '—')}</td><td>"
        f"{'<span class=ok>cached</span>' if b['cached'] else '<span class=mut>not cached</span>'}"
        "</td></tr>" for b in doc["blobs"])
    referrers = "".join(f"<tr><td><code>{_e(x['digest'])}</code></td>"
                        f"<td>{_e(x['artifact_type'] or '—')}</td></tr>" for x in doc["referrers"])
    query = urlencode({"upstream": r["upstream"], "repository": r["repository"],
                       "tag": r["tag"], "format": "json"})
    return _page(name, f"<h2>{_e(name)}</h2>{facts}<p><a href='/image?{_e(query)}'>JSON</a></p>"
                 "<h2>Blobs</h2><table id=blobs><tr><th>Digest</th><th class=n>Size</th>"
                 f"<th>Media type</th><th>Cached</th></tr>{blobs}</table>"
                 "<h2>Referrers</h2>" + (
                     f"<table id=referrers><tr><th>Digest</th><th>Artifact type</th></tr>"
                     f"{referrers}</table>" if referrers else
                     "<p id=referrers class=mut>no referrers cached</p>"))


def not_found_html(upstream: str, repository: str, tag: str) -> str:
    return _page("not held", f"<p>{_e(upstream)}/{_e(repository)}:{_e(tag)} is not held "
                 "here (or not visible to you).</p>")
