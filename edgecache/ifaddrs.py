"""The host's interface addresses through getifaddrs(3), for the certificate's SANs.

psutil.net_if_addrs does the same but psutil costs ~0.9 MiB of RSS in the server for this one
call (the quota's disk probe is os.statvfs); ctypes is loaded anyway (edgecache/memory.py).
Only AF_INET and AF_INET6 are read: sockaddr_in keeps the address at offset 4, sockaddr_in6 at
offset 8 (after family, port and flow info), both in network byte order.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import os
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_MAX_INTERFACES = 100_000  # a bound on the list walk (a corrupt list would otherwise loop)


class _IfAddrs(ctypes.Structure):
    pass


_IfAddrs._fields_ = [
    ("ifa_next", ctypes.POINTER(_IfAddrs)),
    ("ifa_name", ctypes.c_char_p),
    ("ifa_flags", ctypes.c_uint),
    ("ifa_addr", ctypes.c_void_p),
    ("ifa_netmask", ctypes.c_void_p),
    ("ifa_ifu", ctypes.c_void_p),
    ("ifa_data", ctypes.c_void_p),
]


def interface_addresses() -> set[IPAddress]:
    """Every IPv4 and IPv6 address on the host's interfaces (IPv6 without a zone)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    head = ctypes.POINTER(_IfAddrs)()
    if libc.getifaddrs(ctypes.byref(head)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"getifaddrs: {os.strerror(err)}")
    found: set[IPAddress] = set()
    try:
        node = head
        for _ in range(_MAX_INTERFACES):
            if not node:
                break
            entry = node.contents
            if entry.ifa_addr:
                family = ctypes.c_ushort.from_address(entry.ifa_addr).value
                if family == socket.AF_INET:
                    found.add(ipaddress.IPv4Address(ctypes.string_at(entry.ifa_addr + 4, 4)))
                elif family == socket.AF_INET6:
                    found.add(ipaddress.IPv6Address(ctypes.string_at(entry.ifa_addr + 8, 16)))
            node = entry.ifa_next
    finally:
        libc.freeifaddrs(head)
    return found
