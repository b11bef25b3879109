"""The quota's disk probe (os.statvfs, which psutil.disk_usage wraps) reports what psutil
reports on this host."""

from __future__ import annotations

from pathlib import Path

import psutil

from edgecache.storage.quota import disk_usage


def test_disk_usage_matches_psutil(tmp_path: Path) -> None:
    ours, theirs = disk_usage(str(tmp_path)), psutil.disk_usage(str(tmp_path))
    assert ours.total == theirs.total
    # free space moves as other tenants write: the same within 64 MiB
    assert abs(ours.free - theirs.free) < 64 * 1024 * 1024
