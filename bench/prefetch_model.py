"""A fluid model of a cold pull's blob phase behind the bench's link (bench/prefetch.py), to
say which prefetch schedule can pay before measuring it.

Not a test: `.venv/bin/python bench/prefetch_model.py`. Each upstream request waits one round
trip (three behind a redirect to a CDN on a new connection) before its bytes flow; flows share
the link fairly (each gets min(per-connection bound, link / flows)); the client (containerd: 3
blobs at a time, in manifest order) reads from the LAN at no cost, so it only waits for
downloads. A prefetch schedule starts blobs in its order, at most `width` of the image's
downloads running (the client's own count), the next as one ends. Printed: seconds from the
manifest in hand to the last blob, per schedule and link.
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
         width: int, latency: float = RTT) -> float:
    """When the last blob has arrived; `order` None: no prefetch (the client's asks only)."""
    left = [float(s) for s in sizes]
    begins: dict[int, float] = {}  # blob -> when its bytes start flowing
    asks = list(range(len(sizes)))  # the client's, in manifest order
    slots: list[int] = []
    pending = list(order or [])
    now = 0.0
    for _ in range(int(60 / STEP)):  # bounded: 60 model seconds
        running = [b for b in begins if left[b] > 0]
        while pending and len(running) < width:
            blob = pending.pop(0)
            if blob not in begins:
                begins[blob] = now + latency
                running.append(blob)
        slots = [b for b in slots if left[b] > 0]
        while asks and len(slots) < CLIENT_SLOTS:
            blob = asks.pop(0)
            begins.setdefault(blob, now + latency)
            slots.append(blob)
        flowing = [b for b in begins if left[b] > 0 and begins[b] <= now]
        if not asks and all(v <= 0 for v in left):
            return now
        if flowing:
            rate = min(flow_rate or RATE, RATE / len(flowing))
            for blob in flowing:
                left[blob] -= rate * STEP
        now += STEP
    raise RuntimeError("the model did not end")


def main() -> int:
    sizes = [CONFIG, *LAYERS]
    largest = [0, *sorted(range(1, len(sizes)), key=lambda b: -sizes[b])]
    print(f"blob phase, {sum(sizes) / MiB:.0f} MiB, RTT {RTT * 1000:.0f} ms, floor "
          f"{sum(sizes) / RATE:.2f}s")
    for title, flow, latency in (
            ("shared only", None, RTT), ("50 Mbit/s per connection", FLOW_RATE, RTT),
            ("shared, 3 round trips a request (a CDN redirect)", None, 3 * RTT),
            ("per connection, 3 round trips a request", FLOW_RATE, 3 * RTT)):
        rows = [("without", pull(sizes, flow, None, 0, latency)),
                ("all at once", pull(sizes, flow, list(range(len(sizes))), len(sizes), latency))]
        rows += [(f"largest first, {w} at a time", pull(sizes, flow, largest, w, latency))
                 for w in (3, 4, 5, 6)]
        base = rows[0][1]
        print(f"{title}:\n  " + "; ".join(f"{name} {t:.2f}s ({t / base:.2f}x)"
                                          for name, t in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
