"""The Grafana dashboard: one node or several picked by the `instance` variable (every query
filters on it), and no panel mixes units (each target's kind, read from its expression, is the
kind of the panel's one unit). Which names it may use is checked against a real scrape in
test_metrics.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[2] / "images" / "monitoring" / "dashboard.json"
UNIT_KIND = {"bytes": "bytes", "Bps": "byte rate", "s": "seconds", "reqps": "per second",
             "ops": "per second", "percentunit": "ratio", "short": "count", "none": "count"}
_SELECTOR = re.compile(r"\b((?:edgecache|process)_[a-z_]+)(\{[^}]*\})?")


def kind(expr: str) -> str:
    """What an expression's values are, from the names and functions it uses."""
    if "histogram_quantile" in expr:
        return "seconds"
    if " / " in expr or "process_cpu_seconds_total" in expr:
        return "ratio"
    counter = re.search(r"\b(rate|increase)\((\w+)", expr)
    if counter:
        function, name = counter.groups()
        if name.endswith("_bytes_total"):
            return "byte rate" if function == "rate" else "bytes"
        return "per second" if function == "rate" else "count"
    name = _SELECTOR.search(expr)
    return "bytes" if name and name.group(1).endswith("_bytes") else "count"


def panels() -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return result


def test_an_instance_variable_selects_the_nodes() -> None:
    variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
    [node] = [v for v in variables if v["name"] == "instance"]
    assert node["type"] == "query" and node["multi"] and node["includeAll"]
    assert "label_values(" in node["definition"] and "instance)" in node["definition"]
    for panel in panels():
        for target in panel["targets"]:
            for m in _SELECTOR.finditer(target["expr"]):
                assert m.group(2) and 'instance=~"$instance"' in m.group(2), \
                    f"{panel['title']}: {m.group(1)} is not filtered by $instance"


def test_no_panel_mixes_units() -> None:
    for panel in panels():
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["unit"] in UNIT_KIND, panel["title"]
        assert not any(p.get("id") == "unit" for o in panel["fieldConfig"]["overrides"]
                       for p in o.get("properties", ())), panel["title"]
        kinds = {kind(t["expr"]) for t in panel["targets"]}
        assert kinds == {UNIT_KIND[defaults["unit"]]}, f"{panel['title']}: {kinds}"


def test_kinds_are_read_from_the_expressions() -> None:
    assert kind('rate(edgecache_evicted_bytes_total{x="1"}[5m])') == "byte rate"
    assert kind("edgecache_cache_size_bytes") == "bytes"
    assert kind("sum(rate(edgecache_requests_total[5m]))") == "per second"
    assert kind("edgecache_cached_blobs") == "count"
    assert kind("sum(rate(a_total[5m])) / sum(rate(b_total[5m]))") == "ratio"


def test_panels_do_not_overlap() -> None:
    cells: set[tuple[int, int]] = set()
    for panel in panels():
        grid = panel["gridPos"]
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not mine & cells, panel["title"]
        assert grid["x"] + grid["w"] <= 24
        cells |= mine
