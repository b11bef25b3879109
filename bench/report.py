"""The results file (markdown), its chart (PNG, matplotlib's Agg backend) and README's link."""

from __future__ import annotations

import re
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.load import median, spread

MiB = 1 << 20
SYSTEMS = ("edgecache", "distribution", "nginx")


def _fmt(value: float, digits: int = 0) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:,.{digits}f}"


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def _group(rows: list[dict[str, Any]], keys: tuple[str, ...], value: str
           ) -> dict[tuple[Any, ...], list[float]]:
    out: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    for row in rows:
        out[tuple(row[k] for k in keys)].append(float(row[value]))
    return out


def _p99_of(rows: list[dict[str, Any]]) -> float:
    return median([float(r["p99_ms"]) for r in rows])


def analyse(r: Any) -> dict[str, Any]:
    """Medians per cell, ratios and the targets' verdicts."""
    a: dict[str, Any] = {"cells": [], "targets": []}
    mb = _group(r.throughput, ("scheme", "size", "conns", "system"), "mb_s")
    rq = _group(r.throughput, ("scheme", "size", "conns", "system"), "req_s")
    cells = sorted({k[:3] for k in mb}, key=lambda k: (k[0], k[1] != "1MiB", k[2]))
    for scheme, size, conns in cells:
        row = {"scheme": scheme, "size": size, "conns": conns}
        for system in SYSTEMS:
            values = mb.get((scheme, size, conns, system), [])
            row[system] = median(values)
            row[system + "_req"] = median(rq.get((scheme, size, conns, system), []))
            row[system + "_noise"] = spread(values)
        row["vs_dist"] = row["edgecache"] / row["distribution"] if row["distribution"] else 0
        row["vs_nginx"] = row["edgecache"] / row["nginx"] if row["nginx"] else 0
        a["cells"].append(row)
    targets = a["targets"]
    for scheme, label in (("https", "warm HTTPS blob throughput >= 0.9x nginx HTTPS and above "
                                    "Distribution"),
                          ("http", "warm plain-HTTP blob throughput >= 0.9x nginx")):
        rows = [c for c in a["cells"] if c["scheme"] == scheme]
        if not rows:
            continue
        ok_rows = [c for c in rows if c["vs_nginx"] >= 0.9
                   and (scheme == "http" or c["vs_dist"] > 1.0)]
        figure = "; ".join(
            f"{c['size']} x{c['conns']}: {c['vs_nginx']:.2f}x nginx"
            + (f", {c['vs_dist']:.2f}x Distribution" if scheme == "https" else "")
            for c in rows)
        targets.append({"target": label, "figure": figure,
                        "met": len(ok_rows) == len(rows),
                        "detail": f"met in {len(ok_rows)} of {len(rows)} cells",
                        "key": scheme})
    if r.cold:
        loop_rows = [row for row in r.cold if row.get("link", "loopback") == "loopback"]
        walls = _group(loop_rows, ("system", "clients"), "wall")
        many = max(row["clients"] for row in loop_rows)
        ec_rows = [row for row in loop_rows if row["system"] == "edgecache"
                   and row["clients"] == many]
        once = all(row["upstream"]["max_per_blob"] == 1 and row["ok"] == row["clients"]
                   for row in ec_rows)
        dist_rows = [row for row in loop_rows if row["system"] == "distribution"
                     and row["clients"] == many]
        dist_fetch = median([row["upstream"]["bytes"] / MiB for row in dist_rows])
        ec_fetch = median([row["upstream"]["bytes"] / MiB for row in ec_rows])
        targets.append({
            "target": f"{many} concurrent cold pulls: upstream serves each blob exactly once",
            "figure": f"edgecache: max {max(row['upstream']['max_per_blob'] for row in ec_rows)}"
                      f" GET per blob, {ec_fetch:.0f} MiB fetched; Distribution: max "
                      f"{max((row['upstream']['max_per_blob'] for row in dist_rows), default=0)}"
                      f" GETs per blob, {dist_fetch:.0f} MiB fetched",
            "met": once, "detail": "", "key": "cold-once"})
        one, lots = median(walls[("edgecache", 1)]), median(walls[("edgecache", many)])
        targets.append({
            "target": f"{many} concurrent cold pulls within 1.2x the wall time of one "
                      "(loopback upstream)",
            "figure": f"edgecache {lots:.2f} s vs {one:.2f} s ({lots / one:.1f}x); Distribution "
                      f"{median(walls[('distribution', many)]):.2f} s vs "
                      f"{median(walls[('distribution', 1)]):.2f} s",
            "met": lots <= 1.2 * one, "detail": "", "key": "cold-wall"})
        wan = [row for row in r.cold if row.get("link") == "wan"]
        if wan:
            wan_walls = _group(wan, ("clients",), "wall")
            one, lots = median(wan_walls[(1,)]), median(wan_walls[(many,)])
            gets = max(row["upstream"]["max_per_blob"] for row in wan)
            rate = r.settings.get("wan_rate", 0) * 8 / 1e6
            targets.append({
                "target": f"{many} concurrent cold pulls within 1.2x the wall time of one "
                          f"(upstream behind a {rate:.0f} Mbit/s-per-connection link)",
                "figure": f"edgecache {lots:.2f} s vs {one:.2f} s ({lots / one:.2f}x), max "
                          f"{gets} upstream GET per blob",
                "met": lots <= 1.2 * one, "detail": "", "key": "cold-wall-wan"})
    footprint = footprints(r)
    if footprint:
        ec = footprint["edgecache"]
        peaks = {s: ec.get(f"peak64_{s}", float("nan")) for s in ("http", "https")}
        targets.append({
            "target": "edgecache peak RSS <= 64 MiB at 64 concurrent downloads",
            "figure": f"plain {peaks['http']:.0f} MiB, HTTPS {peaks['https']:.0f} MiB",
            "met": all(v <= 64 for v in peaks.values() if v == v), "detail": "",
            "key": "rss-peak"})
        idle = r.idle_rss.get("edgecache", {})
        targets.append({
            "target": "edgecache idle RSS <= 40 MiB",
            "figure": ", ".join(f"{k} {v:.0f} MiB" for k, v in idle.items()),
            "met": idle.get("fresh", 1e9) <= 40, "detail": "", "key": "rss-idle"})
    if r.startup:
        for mode in ("clean", "crash"):
            secs = [x["seconds"] for x in r.startup if x["mode"] == mode]
            rss = [x["rss_idle_mib"] for x in r.startup if x["mode"] == mode]
            if secs:
                targets.append({
                    "target": f"start-up with {r.settings['startup_blobs']:,} indexed blobs "
                              f"under 2 s ({mode})",
                    "figure": f"{median(secs):.2f} s (min {min(secs):.2f}, max "
                              f"{max(secs):.2f}), RSS {median(rss):.0f} MiB",
                    "met": median(secs) < 2.0, "detail": "", "key": f"startup-{mode}"})
    if r.outage:
        for phase in r.outage["phases"]:
            if phase["name"].startswith(("blackhole", "marked down")):
                targets.append({
                    "target": f"outage tag HEAD p99 under 50 ms ({phase['name']})",
                    "figure": f"p50 {phase['p50_ms']:.2f} ms, p99 {phase['p99_ms']:.2f} ms "
                              f"({phase['count']} HEADs)",
                    "met": phase["p99_ms"] < 50, "detail": "",
                    "key": "outage-before" if phase["name"].startswith("blackhole")
                    else "outage-down"})
    return a


def footprints(r: Any) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for system in SYSTEMS:
        rows = [t for t in r.throughput if t["system"] == system]
        if not rows:
            continue
        f: dict[str, float] = {}
        for scheme in ("http", "https"):
            sub = [t for t in rows if t["scheme"] == scheme]
            if not sub:
                continue
            f[f"peak64_{scheme}"] = max(t["peak_rss_mib"] for t in sub if t["conns"] == 64)
            f[f"cpu_per_gb_{scheme}"] = sum(t["cpu_s"] for t in sub) / (
                sum(t["bytes"] for t in sub) / 1e9)
            small = [t for t in sub if t["size"] == "1MiB"]
            if small:  # the per-request cost: what a single event loop thread has to spare
                f[f"cpu_us_per_req_{scheme}"] = sum(t["cpu_s"] for t in small) / sum(
                    t["bytes"] / r.sizes["1MiB"] for t in small) * 1e6
        f["peak_all"] = max(t["peak_rss_mib"] for t in rows)
        out[system] = f
    return out


LIMITS = {
    "https": "64 MiB: AES-GCM and the loopback write dominate (see the profile), at about "
             "nginx's CPU per GB. 1 MiB: edgecache spends about nginx's CPU per request "
             "(section 4), but in one event-loop thread, while nginx runs one worker per core: "
             "with 16-64 connections and wrk decrypting on the same 2 cores, one core cannot "
             "match two.",
    "http": "64 MiB: zero-copy sendfile on both sides, bound by the kernel's copy. 1 MiB: "
            "edgecache answers from one event-loop thread, nginx from one worker per core; "
            "the sendfile copy is ~45 % of the loop's time and the rest is per-request Python "
            "(aiohttp parsing and response, routing, auth, metrics, access line: see CPU per "
            "1 MiB request in section 4), so with 16-64 connections one core cannot match two.",
    "cold-once": "Single-flight fills: one upstream GET per digest however many clients.",
    "cold-wall": "On loopback the upstream is as fast as the cache, so the cold pull is bound by "
                 "delivering 50x the bytes to 50 clients on 2 cores (the clients included), not "
                 "by the upstream; the target assumes a WAN-bound upstream.",
    "cold-wall-wan": "Delivering 50x the bytes to 50 clients on 2 shared cores still takes "
                     "longer than the upstream transfer.",
    "rss-peak": "The plain-HTTP figure is the idle footprint (sendfile holds no buffers); TLS "
                "adds ~0.3 MiB per connection (a 48 KiB piece, its ciphertext, OpenSSL's BIO, "
                "OpenSSL and uvloop state).",
    "rss-idle": "CPython + asyncio + uvloop + ssl + aiohttp alone are ~37 MiB on this machine; "
                "edgecache's modules, yaml, prometheus_client, sqlite and the running loop ~8 "
                "more (cryptography runs in a child only when a certificate is issued).",
    "startup-clean": "Imports (~0.25 s) dominate; the index is opened, not read.",
    "startup-crash": "Reconciliation walks every file with pathlib (rglob, is_dir, Digest.parse"
                     " per path) and loads the whole index into a dict.",
    "outage-before": "Until a revalidation has gone unanswered for revalidate_timeout (2 s), "
                     "tag HEADs wait for it; from then on until the upstream answers again "
                     "they are answered from cache at once.",
    "outage-down": "Served from cache without asking the upstream; with 64 closed-loop "
                   "clients latency is queueing: 64 requests in flight / a few thousand HEADs "
                   "per second on one shared core (the aiohttp client runs on the same 2 "
                   "cores), and p99 adds scheduling noise.",
}


def write(r: Any, out: Path, stem: str) -> Path:
    a = analyse(r)
    s = r.settings
    lines = [f"# Benchmarks: edgecache, Distribution's proxy and nginx, {stem}", "",
             f"Machine: {r.machine}.", "",
             f"Settings: {s['reps']} repetitions of each warm figure ({s['duration']:g} s each, "
             f"systems alternated run by run, order rotated per repetition), {s['cold_reps']} of"
             f" each cold pull; medians shown, noise = half the min-max spread over the median. "
             f"Load average during the run (1/5/15 min): "
             + "; ".join(f"{name} {v[0]}/{v[1]}/{v[2]}" for name, v in r.load) + ".",
             "", "How to run: `make bench` (or `.venv/bin/python -m bench [--quick]`). Loopback "
             "only; the load generators run on the same 2 cores as the server under test.", ""]
    lines += ["## Targets", "",
              "| target | figure | verdict | what limits it |", "| --- | --- | --- | --- |"]
    for t in a["targets"]:
        verdict = _verdict(t["met"]) + (f" ({t['detail']})" if t["detail"] else "")
        limit = LIMITS.get(t["key"], "") if not t["met"] or t["key"] in ("http", "https") else ""
        lines.append(f"| {t['target']} | {t['figure']} | {verdict} | {limit} |")
    if a["cells"]:
        lines += ["", "## 1. Warm blob throughput (wrk)", "",
                  "MB/s (10^6 bytes/s), median; req/s = bytes / blob size / seconds. "
                  "Distribution serves plain HTTP and HTTPS from two processes (one listener "
                  "each); nginx serves edgecache's files.", "",
                  "| scheme | blob | conns | edgecache MB/s | req/s | Distribution MB/s | req/s "
                  "| nginx MB/s | req/s | ec/Distribution | ec/nginx | noise ec/dist/nginx |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
                  "| --- |"]
        for c in a["cells"]:
            lines.append(
                f"| {c['scheme']} | {c['size']} | {c['conns']} | {_fmt(c['edgecache'])} | "
                f"{_fmt(c['edgecache_req'], 1)} | {_fmt(c['distribution'])} | "
                f"{_fmt(c['distribution_req'], 1)} | {_fmt(c['nginx'])} | "
                f"{_fmt(c['nginx_req'], 1)} | {c['vs_dist']:.2f} | {c['vs_nginx']:.2f} | "
                f"{c['edgecache_noise']} / {c['distribution_noise']} / {c['nginx_noise']} |")
        errors = sum(t["errors"] for t in r.throughput)
        lines += ["", f"wrk socket errors over all runs: {errors}."]
    if r.manifests:
        lines += ["", "## 2. Warm manifest latency, 64 connections (bench/hammer.py)", "",
                  "| request | system | p50 ms | p99 ms | requests/s | noise (rate) | "
                  "errors |", "| --- | --- | ---: | ---: | ---: | --- | ---: |"]
        cases = sorted({m["case"] for m in r.manifests})
        for case in cases:
            for system in SYSTEMS:
                rows = [m for m in r.manifests if m["case"] == case and m["system"] == system]
                if rows:
                    lines.append(
                        f"| {case} | {system} | {median([m['p50_ms'] for m in rows]):.2f} | "
                        f"{_p99_of(rows):.2f} | {median([m['rate'] for m in rows]):,.0f} | "
                        f"{spread([m['rate'] for m in rows])} | "
                        f"{sum(m['errors'] for m in rows)} |")
        lines += ["", "Distribution asks its upstream about a tag on every request (its "
                  "design); edgecache answers a tag confirmed within tag_ttl (5m) from its "
                  "index; nginx serves a static file."]
    if r.cold:
        size = r.sizes.get("cold", 0) / MiB
        rate = r.settings.get("wan_rate", 0) * 8 / 1e6
        lines += ["", f"## 3. Cold pulls of a {r.sizes.get('cold_blobs', '?')}-blob image "
                  f"({size:.0f} MiB), each against a fresh cache (bench/puller.py)", "",
                  "| upstream link | clients | system | wall s | client median / max s | "
                  "failed | upstream blob GETs | upstream MiB | max GETs per blob | peak RSS "
                  "MiB | CPU s | clients' CPU s |",
                  "| --- | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: "
                  "| ---: |"]
        for link in ("loopback", "wan"):
            for clients in sorted({c["clients"] for c in r.cold}):
                for system in ("edgecache", "distribution"):
                    rows = [c for c in r.cold if c["clients"] == clients
                            and c["system"] == system and c.get("link", "loopback") == link]
                    if not rows:
                        continue
                    shown = "loopback" if link == "loopback" else f"{rate:.0f} Mbit/s per conn."
                    lines.append(
                        f"| {shown} | {clients} | {system} | "
                        f"{median([c['wall'] for c in rows]):.2f} "
                        f"({spread([c['wall'] for c in rows])}) | "
                        f"{median([c['client_median'] for c in rows]):.2f} / "
                        f"{median([c['client_max'] for c in rows]):.2f} | "
                        f"{sum(c['failed'] for c in rows)} | "
                        f"{median([c['upstream']['blob_gets'] for c in rows]):.0f} | "
                        f"{median([c['upstream']['bytes'] / MiB for c in rows]):.0f} | "
                        f"{max(c['upstream']['max_per_blob'] for c in rows)} | "
                        f"{median([c['peak_rss_mib'] for c in rows]):.0f} | "
                        f"{median([c['cpu_s'] for c in rows]):.1f} | "
                        f"{median([c.get('client_cpu_s', float('nan')) for c in rows]):.1f} |")
        lines += ["", "Upstream bytes are the `http.response.written` of the upstream "
                  "docker-registry's blob GETs, from its JSON log. Clients: bench/puller.py, one "
                  "worker process per core, each client its own connections, 3 layers at a "
                  "time (containerd's default); their CPU shares the same cores. The "
                  "WAN-like link is tests/support/throttle.py's relay, limiting each upstream "
                  "connection (not their sum); Distribution is not run behind it (it opens an "
                  "upstream connection per client and blob, more than the relay accepts)."]
    fp = footprints(r)
    if fp:
        lines += ["", "## 4. Footprint (psutil, sampled every 20 ms during section 1)", "",
                  "| system | idle RSS MiB (fresh / warm / after load) | peak RSS MiB, 64 plain "
                  "downloads | peak RSS MiB, 64 HTTPS downloads | CPU s per GB, plain | CPU s "
                  "per GB, HTTPS | CPU µs per 1 MiB request, plain / HTTPS |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for system, f in fp.items():
            idle = r.idle_rss.get(system, {})
            idle_text = " / ".join(_fmt(idle[k]) if k in idle else "-"
                                   for k in ("fresh", "warm", "after load"))
            lines.append(f"| {system} | {idle_text} | {_fmt(f.get('peak64_http', float('nan')))}"
                         f" | {_fmt(f.get('peak64_https', float('nan')))} | "
                         f"{_fmt(f.get('cpu_per_gb_http', float('nan')), 2)} | "
                         f"{_fmt(f.get('cpu_per_gb_https', float('nan')), 2)} | "
                         f"{_fmt(f.get('cpu_us_per_req_http', float('nan')))} / "
                         f"{_fmt(f.get('cpu_us_per_req_https', float('nan')))} |")
        lines += ["", "nginx: master + 2 workers, RSS summed (shared pages counted twice). "
                  "Distribution: the plain-HTTP process for plain, the HTTPS one for HTTPS. "
                  "CPU per GB: the server's user + system seconds over bytes wrk received; the "
                  "client's own CPU is not counted. CPU per 1 MiB request: the same over the "
                  "1 MiB runs, all processes of a system together (nginx: both workers)."]
    if r.startup:
        lines += ["", f"## 5. Start-up over {r.settings['startup_blobs']:,} indexed blobs", "",
                  "| previous stop | exec to /v2/ answering, median s | min / max s | RSS at "
                  "ready MiB | RSS 1 s later MiB | runs |",
                  "| --- | ---: | --- | ---: | ---: | ---: |"]
        for mode in ("clean", "crash"):
            rows = [x for x in r.startup if x["mode"] == mode]
            if rows:
                secs = [x["seconds"] for x in rows]
                lines.append(
                    f"| {mode} | {median(secs):.3f} | {min(secs):.3f} / {max(secs):.3f} | "
                    f"{median([x['rss_ready_mib'] for x in rows]):.0f} | "
                    f"{median([x['rss_idle_mib'] for x in rows]):.0f} | {len(rows)} |")
        lines += ["", "clean: SIGTERM before (marker present: no reconciliation); crash: "
                  "SIGKILL before (marker absent: reconcile walks the tree). Plain HTTP and "
                  "HTTPS listeners, TLS material already made, page cache warm."]
    if r.outage:
        lines += ["", "## 6. Tag HEAD latency during an upstream outage (bench/outage.py)", "",
                  f"edgecache: {r.outage['config']}; hold 0 s.", "", *r.outage["lines"]]
    if getattr(r, "passwords", None):
        lines += ["", "## 7. Unrelated request latency while wrong passwords arrive "
                  "(bench/passwords.py)", "", f"edgecache: {r.passwords['config']}.", "",
                  *r.passwords["lines"]]
    if r.profiles:
        lines += ["", "## Profiles of edgecache under load (py-spy --native, event-loop "
                  "thread)", ""]
        for name, p in r.profiles.items():
            lines.append(f"- **{name}** ({p['samples']} samples, loop thread busy "
                         f"{100 * p['busy_share']:.0f}% of the time): " + "; ".join(
                             f"{frame} {share}%" for frame, share in p["top"]))
    if r.notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in r.notes)]
    chart = out / f"{stem}.png"
    if draw(r, a, chart):
        lines += ["", f"![main figures]({chart.name})"]
    text = "\n".join(lines) + "\n"
    path = out / f"{stem}.md"
    path.write_text(text)
    return path


def draw(r: Any, a: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"edgecache": "#1f77b4", "distribution": "#ff7f0e", "nginx": "#7f7f7f"}
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    for ax, size in ((axes[0][0], "64MiB"), (axes[0][1], "1MiB")):
        cells = [c for c in a["cells"] if c["size"] == size]
        labels = [f"{c['scheme']}\nx{c['conns']}" for c in cells]
        width = 0.27
        for i, system in enumerate(SYSTEMS):
            ax.bar([x + (i - 1) * width for x in range(len(cells))],
                   [c[system] for c in cells], width, label=system, color=colors[system])
        ax.set_xticks(range(len(cells)), labels)
        ax.set_ylabel("MB/s")
        ax.set_title(f"warm {size} blob throughput (median)")
        ax.legend(fontsize=8)
    ax = axes[1][0]
    if r.cold:
        cold = [c for c in r.cold if c.get("link", "loopback") == "loopback"]
        many = max(c["clients"] for c in cold)
        groups = [(1, "wall, 1 client"), (many, f"wall, {many} clients")]
        for i, system in enumerate(("edgecache", "distribution")):
            values = [median([c["wall"] for c in cold if c["system"] == system
                              and c["clients"] == n]) for n, _ in groups]
            ax.bar([x + (i - 0.5) * 0.35 for x in range(len(groups))], values, 0.35,
                   label=system, color=colors[system])
            fetched = median([c["upstream"]["bytes"] / MiB for c in cold
                              if c["system"] == system and c["clients"] == many])
            ax.text(1 + (i - 0.5) * 0.35, values[1], f"{fetched:.0f} MiB\nfrom upstream",
                    ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(groups)), [g for _, g in groups])
        ax.set_ylim(top=ax.get_ylim()[1] * 1.2)  # room for the labels
        ax.set_ylabel("seconds")
        ax.set_title("cold pull, loopback upstream (fresh cache)")
        ax.legend(fontsize=8)
    ax = axes[1][1]
    fp = footprints(r)
    if fp:
        keys = [("peak64_http", "peak RSS\n64 plain"), ("peak64_https", "peak RSS\n64 HTTPS")]
        for i, system in enumerate(SYSTEMS):
            values = [fp.get(system, {}).get(k, 0) for k, _ in keys]
            values.append(r.idle_rss.get(system, {}).get("fresh",
                          r.idle_rss.get(system, {}).get("warm", 0)))
            ax.bar([x + (i - 1) * 0.27 for x in range(3)], values, 0.27, label=system,
                   color=colors[system])
        ax.axhline(64, color="red", linewidth=0.8, linestyle="--")
        ax.axhline(40, color="red", linewidth=0.8, linestyle=":")
        ax.set_xticks(range(3), [k for _, k in keys] + ["idle RSS"])
        ax.set_ylabel("MiB")
        ax.set_title("memory (targets: 64 MiB peak, 40 MiB idle)")
        ax.legend(fontsize=8)
    fig.suptitle("edgecache vs Distribution proxy vs nginx (loopback, 2 cores shared with "
                 "the load generator)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


SECTION = re.compile(r"## Benchmarks\n.*?(?=\n## |\Z)", re.S)


def update_readme(readme: Path, results: Path) -> None:
    """Point README's "Benchmarks" section at `results` (a quick run only when there is no full
    run to link to)."""
    text = readme.read_text()
    if results.stem.endswith("-quick"):
        full = sorted(p for p in (readme.parent / results.parent).glob("20*.md")
                      if not p.stem.endswith("-quick"))
        if full:
            results = full[-1].relative_to(readme.parent)
    section = "## Benchmarks\n" + textwrap.fill(
        "`make bench` (about 15 minutes; `make bench BENCH_ARGS=--quick` about 3) runs edgecache "
        "side by side with Distribution's proxy (docker-registry in proxy mode) and nginx "
        "(sendfile) on loopback: warm blob throughput over plain HTTP and HTTPS, manifest "
        "latency, cold pulls by 1 and 50 clients with the bytes fetched upstream, memory and "
        "CPU per GB, start-up over 100,000 indexed blobs and tag latency during an upstream "
        f"outage. Latest results, with each target and whether it is met: "
        f"[`{results}`]({results}).", width=100, break_on_hyphens=False) + "\n"
    if SECTION.search(text):
        text = SECTION.sub(lambda _: section, text, count=1)
    elif "\n## Development" in text:
        text = text.replace("\n## Development", "\n" + section + "\n## Development", 1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    readme.write_text(text)
