"""The benchmark keeps working: one quick round of a graceful stop, kubevipd and the baseline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import require_root

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]


def test_bench_failover_smoke() -> None:
    require_root()
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "failover.py"), "--rounds", "1",
         "--systems", "kubevipd,polling-elector", "--scenarios", "graceful_stop,follower_restart",
         "--no-idle"],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    k = doc["systems"]["kubevipd"]
    graceful = k["scenarios"]["graceful_stop"]
    assert graceful["rounds"] == 1 and graceful["dual_holder_ms_total"] == 0
    # A few times the medians in bench/README.md (graceful 40 ms, follower restart 16 ms,
    # which is the probe's own jitter): one round, so its max is its median.
    assert graceful["outage_ms"]["max"] < 250
    assert k["scenarios"]["follower_restart"]["outage_ms"]["max"] < 100
    assert k["api_requests_per_s"]["follower"] == 0  # followers watch, they do not poll
    assert 0 < k["api_requests_per_s"]["leader"] <= 4  # one renew per retry_period (500ms)
    assert k["idle_leader"]["rss_mib"] > 0 and k["start_to_vip_ms"] > 0
    alone = k["single_node_start"]
    assert 0 < alone["to_ready_ms"] <= alone["to_vip_ms"] < 30_000
    # The baseline: the kubernetes package's polling elector on a Lease; its followers poll.
    p = doc["systems"]["polling-elector"]
    assert p["scenarios"]["graceful_stop"]["dual_holder_ms_total"] == 0
    assert p["scenarios"]["graceful_stop"]["outage_ms"]["max"] < 1000  # median 163 ms
    assert p["api_requests_per_s"]["follower"] > 0
    assert 0 < p["single_node_start"]["to_vip_ms"] < 30_000
