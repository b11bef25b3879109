"""The stdlib/ctypes probes that replaced psutil in the server (edgecache/ifaddrs.py and the
quota's disk probe) report what psutil reports on this host."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import psutil

from edgecache.ifaddrs import interface_addresses
from edgecache.storage.quota import disk_usage


def test_interface_addresses_match_psutil() -> None:
    expected = {ipaddress.ip_address(a.address.split("%", 1)[0])
                for addresses in psutil.net_if_addrs().values() for a in addresses
                if a.family in (socket.AF_INET, socket.AF_INET6)}
    found = interface_addresses()
    assert found == expected
    assert ipaddress.ip_address("127.0.0.1") in found


def test_disk_usage_matches_psutil(tmp_path: Path) -> None:
    ours, theirs = disk_usage(str(tmp_path)), psutil.disk_usage(str(tmp_path))
    assert ours.total == theirs.total
    # free space moves as other tenants write: the same within 64 MiB
    assert abs(ours.free - theirs.free) < 64 * 1024 * 1024
