"""The alert rules, run by promtool's own rule evaluator (`promtool test rules`) over the
series in images/monitoring/alerts.test.yaml: each alert fires on its trouble, and a healthy
full cache fires none. The checks here keep that file honest: every alert has a test where it
fires and is listed, silent, in the healthy-full-cache test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

MONITORING = Path(__file__).resolve().parents[2] / "images" / "monitoring"
HEALTHY = "a full cache in its eviction band does not alert"


def _load(name: str) -> Any:
    return yaml.safe_load((MONITORING / name).read_text(encoding="utf-8"))


def alert_names() -> set[str]:
    return {rule["alert"] for group in _load("alerts.yaml")["groups"] for rule in group["rules"]
            if "alert" in rule}


def test_promtool_runs_every_alert_test() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (apt-get install prometheus; make system-deps)"
    result = subprocess.run([promtool, "test", "rules", "alerts.test.yaml"], cwd=MONITORING,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_fires_in_a_test_and_stays_silent_on_a_healthy_full_cache() -> None:
    tests = _load("alerts.test.yaml")["tests"]
    names = alert_names()
    assert len(names) >= 8
    fires = {case["alertname"] for test in tests for case in test.get("alert_rule_test", ())
             if case.get("exp_alerts")}
    assert names - fires == set(), "alerts no test sees firing"
    [healthy] = [test for test in tests if test.get("name") == HEALTHY]
    silent = {case["alertname"] for case in healthy["alert_rule_test"]
              if case.get("exp_alerts") == []}
    assert names - silent == set(), "alerts the healthy full cache test does not check"
    # the healthy cache really is full and cycling: it crosses the high watermark
    [size] = [s["values"] for s in healthy["input_series"]
              if s["series"].startswith("edgecache_cache_size_bytes")]
    assert "960" in size
