#!/usr/bin/env python3
"""One Lease, many followers: API load and takeover time as the followers grow.

Followers are simulated in one process, but with kubevipd's own Lease backend
(kubevipd.election.lease, on the real ``kubernetes`` client, each with its own connection): each
watches the Lease and, the moment it sees it released, writes an acquire built by the same
client-go rules the daemon uses (the health gate and the VIP are left out). The leader renews
every retry period. Against the lab Lease API server on loopback. Prints one JSON document.

    .venv/bin/python bench/scale.py --followers 50,500 > bench/scale.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubevipd.config.model import ElectionSpec  # noqa: E402
from kubevipd.election.base import LeaderRecord, acquire_record, release_record  # noqa: E402
from kubevipd.election.lease import LeaseElection  # noqa: E402
from kubevipd.lab.apiserver import LabApiServer, standard_tokens  # noqa: E402
from kubevipd.lab.pki import make_pki, write_kubeconfig  # noqa: E402

RETRY = 1.0  # the leader's renew period (the shipped default)


class Follower:
    def __init__(self, name: str, kubeconfig: Path, race: dict[str, Any]) -> None:
        self.name = name
        self.el = LeaseElection(ElectionSpec(kubeconfig=kubeconfig), name)
        self.race = race
        self.seen: LeaderRecord | None = None
        self.seen_at = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        self.el.watch(self._observe, self.stop.is_set)

    def _observe(self, r: LeaderRecord | None) -> None:
        self.seen, self.seen_at = r, time.monotonic()
        if r is not None and r.holder == "" and self.race.get("open"):
            out = self.el.write("acquire", acquire_record(r, self.name, 5, time.time(), False), 2.0)
            with self.race["lock"]:
                if out.ok:
                    self.race["winners"].append((time.monotonic(), self.name))
                elif out.conflict:
                    self.race["conflicts"] += 1
                else:
                    self.race["errors"] += 1


class _Count(logging.Handler):
    """Counts the followers' warnings (a list that timed out while all of them connected)
    instead of printing thousands of them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.n = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.n += 1


def run(n: int, workdir: Path) -> dict[str, Any]:
    warnings = _Count()
    election_log = logging.getLogger("kubevipd.election")
    election_log.addHandler(warnings)
    election_log.propagate = False
    pki = make_pki(workdir / f"pki{n}", ["127.0.0.1"])
    api = LabApiServer(pki, standard_tokens(), bookmark_interval=60.0)
    api.start("127.0.0.1", 0)
    kc = write_kubeconfig(workdir / f"kc{n}", api.url, pki, "lab-admin-token")
    race: dict[str, Any] = {"open": False, "lock": threading.Lock(), "winners": [],
                            "conflicts": 0, "errors": 0}  # fmt: skip
    leader = LeaseElection(ElectionSpec(kubeconfig=kc), "leader")
    rec = leader.write("acquire", acquire_record(None, "leader", 5, time.time(), False), 5.0).record
    assert rec is not None
    stop_renew = threading.Event()
    state = {"rec": rec}

    def renew() -> None:
        while not stop_renew.wait(RETRY):
            r = leader.write(
                "renew", acquire_record(state["rec"], "leader", 5, time.time(), False), 2.0
            )
            if r.ok and r.record is not None:
                state["rec"] = r.record

    followers = [Follower(f"f{i}", kc, race) for i in range(n)]
    t0 = time.monotonic()
    for f in followers:
        f.thread.start()
    ok = True
    end = time.monotonic() + 300
    while api.watches < n and time.monotonic() < end:
        time.sleep(0.05)
    ok = api.watches >= n
    connect_s = time.monotonic() - t0
    renewer = threading.Thread(target=renew, daemon=True)
    renewer.start()
    time.sleep(2)
    c0, w0 = api.request_count, time.monotonic()
    time.sleep(10)
    steady_rps = (api.request_count - c0) / (time.monotonic() - w0)
    # Propagation of one renewal to every follower.
    stop_renew.set()
    renewer.join()
    before = state["rec"]
    sent = time.monotonic()  # a follower may see the renewal before the leader's answer comes
    r = leader.write("renew", acquire_record(before, "leader", 5, time.time(), False), 2.0)
    assert r.record is not None
    target = r.record.content()
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if all(f.seen is not None and f.seen.content() == target for f in followers):
            break
        time.sleep(0.005)
    lags = [f.seen_at - sent for f in followers if f.seen is not None]
    # The release and the race to take the lease.
    race["open"] = True
    released = time.monotonic()
    leader.write("release", release_record(r.record, time.time()), 2.0)
    end = time.monotonic() + 60
    while not race["winners"] and time.monotonic() < end:
        time.sleep(0.001)
    time.sleep(2)  # let the losers finish their attempts
    takeover_ms = (race["winners"][0][0] - released) * 1000 if race["winners"] else None
    for f in followers:
        f.stop.set()
        f.el.close()
    api.stop()
    election_log.removeHandler(warnings)
    return {
        "followers": n,
        "all_watching": ok,
        "connect_all_s": round(connect_s, 2),
        "watch_connections": n,
        "steady_api_requests_per_s": round(steady_rps, 2),
        "renew_to_all_followers_ms": {
            "median": round(statistics.median(lags) * 1000, 1),
            "max": round(max(lags) * 1000, 1),
        },
        "takeover_after_release_ms": round(takeover_ms, 1) if takeover_ms is not None else None,
        "winners": len(race["winners"]),
        "lost_races_409": race["conflicts"],
        "errors": race["errors"],
        "follower_warnings": warnings.n,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--followers", default="50,500", help="comma-separated counts, e.g. 50,500,2000"
    )
    args = ap.parse_args()
    counts = [int(x) for x in args.followers.split(",")]
    with tempfile.TemporaryDirectory(prefix="kubevipd-scale-") as d:
        results = []
        for n in counts:
            print(f"{n} followers ...", file=sys.stderr)
            results.append(run(n, Path(d)))
            print(json.dumps(results[-1]), file=sys.stderr)
    doc = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"kernel": platform.release(), "cpus": os.cpu_count()},
        "leader_retry_period_s": RETRY,
        "results": results,
    }
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
