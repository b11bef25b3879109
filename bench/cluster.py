"""A site under a cold storm: N edgecache nodes x 10 clients pulling one cold image at once.

Not a test: run it as `.venv/bin/python bench/cluster.py [--nodes 3 5] [--clients 10]`. It
starts a real docker-registry seeded with bench/cold (six layers, 1 to 32 MiB, 63 MiB), a
relay in front of it that limits each upstream connection to `--wan-rate` Mbit/s
(tests/support/throttle.py, as the cold cells of bench/run.py), and edgecache nodes on
127.0.0.1..N (each its own store; the puller is bench/puller.py, one per node). Cells:

1. one node, cluster off: the baseline wall time of a cold pull by `--clients` clients;
2. for each N: N independent nodes (cluster off) and an N-node site (cluster on), every node's
   clients at once: WAN bytes (what the upstream served) as a multiple of the image, and wall
   time as a multiple of the baseline;
3. a 3-node site with the owner of the largest layer killed (SIGKILL) once a quarter of that
   layer has crossed the WAN: the survivors' clients must all succeed.

The relay throttles per connection, not per link: independent nodes are not slowed by each
other's WAN traffic here, so only their WAN bytes are comparable, not their wall time. On this
2-core machine N x 10 clients receive N x 630 MiB over loopback: the wall time of the larger
sites is bound by that copy, not by the WAN (see the notes in the results). Results go to
bench/results/cluster-<date>.md. Every process is stopped by PID; every wait is bounded.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import secrets
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import load  # noqa: E402
from bench.systems import Upstream, summarize_fetches  # noqa: E402
from edgecache.cluster.ring import order  # noqa: E402
from tests.support.edgecache import EdgecacheProcess  # noqa: E402
from tests.support.images import make_image, make_layer  # noqa: E402
from tests.support.registry import free_port  # noqa: E402
from tests.support.throttle import ThrottledRelay  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402

MiB = 1 << 20
COLD_LAYERS = [32, 16, 8, 4, 2, 1]  # MiB, as bench/run.py
REPO, TAG, UPSTREAM = "bench/cold", "1", "docker.io"


class Nodes:
    """N edgecache processes on 127.0.0.1..N, a site (`cluster`) or independent ones."""

    def __init__(self, work: Path, upstream_url: str, count: int, cluster: bool) -> None:
        self.hosts = [f"127.0.0.{i + 1}" for i in range(count)]
        self.ports = [free_port(h) for h in self.hosts]
        self.urls = [f"http://{h}:{p}" for h, p in zip(self.hosts, self.ports, strict=True)]
        secret = work / "secret"
        work.mkdir(parents=True, exist_ok=True)
        secret.write_text(secrets.token_hex(32))
        secret.chmod(0o600)
        extra: dict[str, Any] = {"log": {"level": "info"}, "cache": {"tag_ttl": "5m"}}
        if cluster:
            extra["cluster"] = {"peers": self.urls, "secret_file": str(secret),
                                "health_interval": "0.5s"}
        self.procs: list[EdgecacheProcess] = []
        try:
            for i in range(count):
                self.procs.append(EdgecacheProcess(
                    work / f"node{i}", {UPSTREAM: upstream_url}, default_upstream=UPSTREAM,
                    host=self.hosts[i], port=self.ports[i], metrics=cluster, extra=extra))
            if cluster:
                for proc in self.procs:
                    wait_until(lambda p=proc: _peers_up(p) == count - 1,  # type: ignore[misc]
                               "every node sees the others", timeout=30)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.close()


def _peers_up(proc: EdgecacheProcess) -> int:
    assert proc.metrics_url is not None
    with urllib.request.urlopen(proc.metrics_url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(1 for line in text.splitlines()
               if line.startswith("edgecache_peer_up{") and line.endswith(" 1.0"))


def storm(nodes: Nodes, clients: int, during: Any = None) -> dict[str, Any]:
    """Every node's clients at once (one puller process each); `during()` runs meanwhile."""
    results: list[dict[str, Any] | None] = [None] * len(nodes.procs)

    def run(i: int) -> None:
        try:
            results[i] = load.pull(nodes.procs[i].url, REPO, TAG, clients)
        except RuntimeError as exc:  # the puller of a killed node: its clients failed
            results[i] = {"ok": 0, "failed": clients, "errors": [str(exc)[-200:]]}

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(nodes.procs))]
    for thread in threads:
        thread.start()
    if during is not None:
        during()
    for thread in threads:
        thread.join(timeout=600)
    wall = time.monotonic() - started
    return {"wall": wall, "per_node": results}


def cell(name: str, upstream: Upstream, relay: ThrottledRelay, work: Path, count: int,
         cluster: bool, clients: int, image_bytes: int, kill_owner_of: str = "",
         kill_at: int = 0) -> dict[str, Any]:
    nodes = Nodes(work / name, relay.url, count, cluster)
    try:
        mark = upstream.log_lines()
        relay.relayed = 0
        during = None
        if kill_owner_of:
            owner = nodes.urls.index(order(nodes.urls, kill_owner_of)[0])

            def during() -> None:
                wait_until(lambda: relay.relayed >= kill_at, "the owner is mid-transfer",
                           timeout=120)
                nodes.procs[owner].proc.kill()
        out = storm(nodes, clients, during)
        time.sleep(0.5)  # anything still fetched after the clients: counted too
        fetched = summarize_fetches(upstream.blob_fetches(mark))
        wire = relay.relayed  # every byte the "WAN" carried, a cut connection's too
    finally:
        nodes.close()
    per_node = out["per_node"]
    row = {"cell": name, "nodes": count, "cluster": cluster, "clients": count * clients,
           "ok": sum(r["ok"] for r in per_node if r), "wall": out["wall"],
           "expected": (count - 1) * clients if kill_owner_of else count * clients,
           "wan_bytes": fetched["bytes"], "wan_x": fetched["bytes"] / image_bytes,
           "wire_x": wire / image_bytes,
           "blob_gets": fetched["blob_gets"], "max_per_blob": fetched["max_per_blob"],
           "errors": [e for r in per_node if r for e in r.get("errors", [])][:2]}
    print(f"  {name:28} ok {row['ok']}/{row['expected']} wall {row['wall']:6.2f} s "
          f"WAN {row['wan_x']:.2f}x image, wire {row['wire_x']:.2f}x "
          f"({fetched['blob_gets']} blob GETs, max {fetched['max_per_blob']} per blob)",
          flush=True)
    return row


def report(rows: list[dict[str, Any]], args: argparse.Namespace, image_bytes: int) -> str:
    base = next(r for r in rows if r["cell"] == "one node")["wall"]
    lines = [f"# Cluster mode: a cold storm ({datetime.date.today()})", "",
             f"`python bench/cluster.py --nodes {' '.join(map(str, args.nodes))} --clients "
             f"{args.clients} --wan-rate {args.wan_rate:g}` on {platform.node()} "
             f"({os.cpu_count()} cores, load {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
             "at the end); image bench/cold, "
             f"{image_bytes / MiB:.1f} MiB in 6 layers; WAN = a relay limiting each upstream "
             f"connection to {args.wan_rate:g} Mbit/s.", "",
             "| cell | nodes x clients | ok | WAN bytes / image (upstream log) | on the wire "
             "(relay) | blob GETs (max per blob) | wall / one node's cold pull |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['cell']} | {r['nodes']} x {r['clients'] // r['nodes']} | "
                     f"{r['ok']}/{r['expected']} | {r['wan_x']:.2f}x | {r['wire_x']:.2f}x | "
                     f"{r['blob_gets']} "
                     f"({r['max_per_blob']}) | {r['wall'] / base:.2f}x |")
    lines += ["", f"One node's cold pull ({args.clients} clients): {base:.2f} s. `ok` counts "
              "the clients of the nodes left running (the killed node's own clients lose their "
              "server).", ""]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--clients", type=int, default=10, help="clients per node")
    parser.add_argument("--wan-rate", type=float, default=200.0, help="Mbit/s per connection")
    parser.add_argument("--out", type=Path, help="results file (bench/results/cluster-DATE.md)")
    args = parser.parse_args()
    out = args.out or ROOT / "bench" / "results" / f"cluster-{datetime.date.today()}.md"
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        work = Path(tmp)
        upstream = Upstream(work / "upstream")
        relay = ThrottledRelay(upstream.port, args.wan_rate * 1e6 / 8)
        try:
            image = make_image([make_layer(n * MiB, 100 + i) for i, n in enumerate(COLD_LAYERS)])
            upstream.push_image(REPO, TAG, image)
            size = sum(len(b.data) for b in image.blobs) + len(image.manifest)
            big = max(image.blobs, key=lambda b: len(b.data))
            rows = [cell("one node", upstream, relay, work, 1, False, args.clients, size)]
            for n in args.nodes:
                rows.append(cell(f"{n} independent nodes", upstream, relay, work, n, False,
                                 args.clients, size))
                rows.append(cell(f"{n}-node site", upstream, relay, work, n, True,
                                 args.clients, size))
            rows.append(cell("3-node site, owner killed", upstream, relay, work, 3, True,
                             args.clients, size, kill_owner_of=big.digest,
                             kill_at=len(big.data) // 4))
        finally:
            relay.close()
            upstream.close()
    text = report(rows, args, size)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
