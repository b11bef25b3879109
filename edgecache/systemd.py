"""systemd's notify protocol: READY, STOPPING and watchdog pings, with no dependency.

A datagram to `$NOTIFY_SOCKET` (an abstract socket when it starts with `@`). Outside systemd the
variable is unset and every call is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify systemd (%s): %s", state, exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Half of `WATCHDOG_USEC`, when systemd asked for pings (and they are meant for us)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


async def watchdog(interval: float) -> None:
    """Ping while the event loop turns: a stuck loop stops the pings and systemd restarts us."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
