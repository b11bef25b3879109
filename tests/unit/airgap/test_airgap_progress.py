"""Progress output and the result table, on a fake clock: what an operator sees."""

from __future__ import annotations

import io

import pytest

from edgecache.airgap.platform import Platform, parse_platforms, wanted
from edgecache.airgap.progress import PLAIN_INTERVAL, Progress, duration, short_digest, table
from edgecache.errors import ConfigError

MiB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_a_plain_line_every_few_seconds() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress("warming", "images", out, tty=False, clock=clock)
    progress.add_total(100 * MiB, items=4)
    for _ in range(10):  # many updates within one interval: no line yet
        clock.now += PLAIN_INTERVAL / 20
        progress.advance(2 * MiB)
    assert out.getvalue() == ""
    clock.now += PLAIN_INTERVAL
    progress.item_done()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    line = lines[0]
    assert line.startswith("warming:")
    assert "20.0 MiB / 100.0 MiB" in line and "1/4 images" in line
    assert "2.7 MiB/s" in line  # 20 MiB over 7.5 s
    assert "ETA 0:30" in line  # 80 MiB left at 2.67 MiB/s
    progress.finish()
    assert len(out.getvalue().splitlines()) == 2


def test_on_a_terminal_one_line_redrawn_in_place() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress("exporting", "images", out, tty=True, clock=clock)
    progress.add_total(10 * MiB, items=1)
    clock.now += 1
    progress.advance(5 * MiB)
    clock.now += 1
    progress.advance(5 * MiB)
    progress.item_done()
    progress.finish()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # one line, ended once
    frames = [f for f in text.rstrip("\n").split("\r") if f]
    assert len(frames) == 3  # two refreshes and the final frame
    assert frames[0].startswith("[############............]")
    assert frames[-1].startswith("[" + "#" * 24 + "]") and "1/1 images" in frames[-1]
    assert all(f.endswith("\x1b[K") for f in frames)


def test_an_error_after_a_bar_starts_on_its_own_line() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress("importing", "members", out, tty=True, clock=clock)
    clock.now += 1
    progress.advance(MiB)
    progress.abandon()
    assert out.getvalue().endswith("\n")


def test_table_aligns_columns_and_numbers_right() -> None:
    lines = table(["IMAGE", "SIZE", "STATUS"],
                  [["docker.io/library/alpine:3.20", "3.4 MiB", "fetched"],
                   ["ghcr.io/x/y:1", "120.0 MiB", "failed: HTTP 404"]], right=[1])
    assert lines == [
        "IMAGE                               SIZE  STATUS",
        "docker.io/library/alpine:3.20    3.4 MiB  fetched",
        "ghcr.io/x/y:1                  120.0 MiB  failed: HTTP 404",
    ]
    assert short_digest("sha256:" + "ab" * 32) == "sha256:abababababab"
    assert duration(59) == "0:59" and duration(3725) == "1:02:05"


def test_platforms() -> None:
    arm64, arm = parse_platforms("linux/arm64, linux/arm/v7")
    assert arm64 == Platform("linux", "arm64") and str(arm) == "linux/arm/v7"
    assert wanted([arm64], {"os": "linux", "architecture": "arm64", "variant": "v8"})
    assert not wanted([arm], {"os": "linux", "architecture": "arm", "variant": "v6"})
    assert not wanted([arm64], {"os": "unknown", "architecture": "unknown"})
    assert not wanted([arm64], None)
    assert wanted([], None)  # no filter: everything, attestations included
    with pytest.raises(ConfigError, match="os/arch"):
        parse_platforms("arm64")
