"""A fluid model of a cold pull's blob phase behind the bench's link (bench/prefetch.py), to
say which prefetch schedule can pay before measuring it.

Not a test: `.venv/bin/python bench/prefetch_model.py`. Each upstream request waits one round
trip (three behind a redirect to a CDN on a new connection) before its bytes flow; flows share
the link fairly (each gets min(per-connection bound, link / flows)); the client (containerd: 3
blobs at a time, in manifest order) reads from the LAN at no cost, so it only waits for
downloads and for its own work per blob (`client_cost`). A prefetch schedule starts blobs in
its order, at most `width` of the image's downloads running (the client's own count), the
next as one ends. Printed: seconds from the manifest in hand to the client's last blob.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.prefetch import FLOW_RATE, LAYERS, ONE_WAY, RATE, MiB

RTT = 2 * ONE_WAY
STEP = 0.0005  # seconds
CLIENT_SLOTS = 3
CONFIG = 1500  # bytes


def pull(sizes: list[int], flow_rate: float | None, order: list[int] | None,
         width: int, latency: float = RTT, client_cost: float = 0.0) -> float:
    """When the client has the last blob; `order` None: no prefetch (the client's asks only).
    `client_cost`: what the client spends per blob once its bytes are in (ctr's commit: verify,
    fsync, rename) before that download slot asks for the next blob."""
    left = [float(s) for s in sizes]
    begins: dict[int, float] = {}  # blob -> when its bytes start flowing
    asks = list(range(len(sizes)))  # the client's, in manifest order
    slots: dict[int, float | None] = {}  # the client's blobs -> when it is done with each
    pending = list(order or [])
    now = 0.0
    for _ in range(int(60 / STEP)):  # bounded: 60 model seconds
        running = [b for b in begins if left[b] > 0]
        while pending and len(running) < width:
            blob = pending.pop(0)
            if blob not in begins:
                begins[blob] = now + latency
                running.append(blob)
        for blob, done in slots.items():
            if done is None and left[blob] <= 0:
                slots[blob] = now + client_cost
        slots = {b: d for b, d in slots.items() if d is None or d > now}
        while asks and len(slots) < CLIENT_SLOTS:
            blob = asks.pop(0)
            begins.setdefault(blob, now + latency)
            slots[blob] = None
        if not asks and not slots:
            return now
        flowing = [b for b in begins if left[b] > 0 and begins[b] <= now]
        if flowing:
            rate = min(flow_rate or RATE, RATE / len(flowing))
            for blob in flowing:
                left[blob] -= rate * STEP
        now += STEP
    raise RuntimeError("the model did not end")


WIDTHS = (3, 4, 5, 6)


def main() -> int:
    sizes = [CONFIG, *LAYERS]
    largest = [0, *sorted(range(1, len(sizes)), key=lambda b: -sizes[b])]
    print(f"Blob phase of a cold pull, {sum(sizes) / MiB:.0f} MiB, the client taking "
          f"{CLIENT_SLOTS} at a time; seconds (and / without); floor {sum(sizes) / RATE:.2f}s\n")
    print("| link | request | client per blob | without | all at once | "
          + " | ".join(f"largest first, {w}" for w in WIDTHS) + " |")
    print("|---|---|---|" + "---:|" * (2 + len(WIDTHS)))
    for link, flow in (("shared", None), ("50 Mbit/s per connection", FLOW_RATE)):
        for rtts in (1, 3):
            for cost in (0.0, 0.1):
                args = (rtts * RTT, cost)
                base = pull(sizes, flow, None, 0, *args)
                cells = [pull(sizes, flow, list(range(len(sizes))), len(sizes), *args)]
                cells += [pull(sizes, flow, largest, w, *args) for w in WIDTHS]
                print(f"| {link} | {rtts} RTT | {cost * 1000:.0f} ms | {base:.2f} | "
                      + " | ".join(f"{t:.2f} ({t / base:.2f}x)" for t in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
