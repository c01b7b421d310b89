"""deploy/prometheus is valid for Prometheus itself: promtool checks the configurations and rules
and runs the alert unit tests of alerts_test.yml (every alert fires and stays quiet as meant).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
CONFIGS = ["prometheus.yml", "prometheus.local.yml", "prometheus.compose.yml"]

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian: apt-get install prometheus; or a Prometheus release)",
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result


@needs_promtool
@pytest.mark.parametrize("config", CONFIGS)
def test_promtool_check_config(config: str) -> None:
    output = promtool("check", "config", config)
    assert "SUCCESS" in output.stdout + output.stderr


@needs_promtool
def test_promtool_check_rules() -> None:
    output = promtool("check", "rules", "alerts.yml")
    assert "SUCCESS" in output.stdout + output.stderr


@needs_promtool
def test_promtool_test_rules() -> None:
    output = promtool("test", "rules", "alerts_test.yml")
    assert "SUCCESS" in output.stdout + output.stderr


def load(name: str) -> Any:
    return YAML(typ="safe", pure=True).load(PROMETHEUS_DIR / name)


def test_rule_tests_cover_every_alert_firing_and_quiet() -> None:
    """Each alert has an eval that expects it to fire and one that expects no alert."""
    alerts = {
        rule["alert"]
        for group in load("alerts.yml")["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    tests = load("alerts_test.yml")
    assert tests["rule_files"] == ["alerts.yml"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts - fires == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested quiet"
    assert (fires | quiet) <= alerts, "tests of alerts that do not exist"
