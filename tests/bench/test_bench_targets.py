"""Issue 17's targets as report.targets judges them, on made-up figures (no servers)."""

from __future__ import annotations

from typing import Any

import pytest
from bench.report import summary, targets

pytestmark = pytest.mark.unit


def _size(cpu_ratio: float, ready_ratio: float, burst_p99: float, *, storm_keys: int = 1000,
          twice: int = 0, peak: int = 16) -> dict[str, Any]:
    return {
        "ratios": {"provisioning_operator_cpu_seconds": cpu_ratio,
                   "provisioning_all_ready_seconds": ready_ratio},
        "operator": {
            "memory": {"rss_mb": 120.0},
            "revoke_burst": {"revoked": 100, "annotation_to_gone": {"p99_s": burst_p99}},
            "rotation_storm": {"keys": storm_keys, "all_rotated": True,
                               "all_rotated_seconds": 50.0,
                               "keys_rotated_twice_in_window": twice,
                               "store": {"peak_concurrent_calls": peak},
                               "store_concurrency_limit": 16},
        },
    }


def _large(*, revoke_p99: float = 0.1, rss: float = 150.0, second_half_cpu: float = 0.1,
           rewrites: int = 0, ready: float = 5.0) -> dict[str, Any]:
    return {"operator": {
        "revoke_single": {"revoked": 20, "annotation_to_gone": {"p99_s": revoke_p99}},
        "memory_idle": {"rss_mb": rss, "rss_kb_per_key": 15.4, "added_kb_per_key": 9.0},
        "idle": {"seconds": 60.0, "requests_per_key_per_minute": 0.0,
                 "store_calls_per_key_per_minute": 0.0, "operator_cpu_percent": 3.0,
                 "operator_cpu_seconds_second_half": second_half_cpu, "api": {"requests": 0}},
        "startup": {"rewrites": rewrites, "new_key_ready_seconds": ready,
                    "first_restart": {"resume_seconds": 12.0}},
    }}


def _verdicts(figures: dict[str, Any]) -> dict[str, str]:
    return {t["name"]: t["verdict"] for t in targets(figures)}


def test_a_full_run_that_meets_every_target() -> None:
    figures = {"sizes": {"1000": _size(1.2, 1.1, 0.8), "5000": _size(1.4, 1.25, 0.9)},
               "large": {"10000": _large()}}
    assert _verdicts(figures) == {
        "provisioning CPU": "met", "provisioning time": "met", "revoke, one at a time": "met",
        "revoke, 100 at once": "met", "memory": "met", "idle": "met", "rotation storm": "met",
        "start-up": "met"}
    assert "provisioning CPU" in summary({"targets": targets(figures)})


def test_misses_at_any_target_size_and_each_large_figure() -> None:
    figures = {"sizes": {"1000": _size(1.6, 1.1, 1.5, twice=1), "5000": _size(1.4, 1.4, 0.9)},
               "large": {"10000": _large(revoke_p99=0.3, rss=250, second_half_cpu=1.2,
                                         rewrites=3)}}
    verdicts = _verdicts(figures)
    assert set(verdicts.values()) == {"MISSED"}


def test_a_small_run_is_not_measured_unless_it_already_misses() -> None:
    # 100 keys: no target size; a 300-key large run: figures shown, judged only on a miss.
    figures = {"sizes": {"100": _size(1.0, 1.0, 0.5, storm_keys=100)},
               "large": {"300": _large(ready=40.0)}}
    verdicts = _verdicts(figures)
    assert verdicts["provisioning CPU"] == "not measured"
    assert verdicts["revoke, 100 at once"] == "not measured"
    assert verdicts["memory"] == "not measured"
    assert verdicts["rotation storm"] == "not measured"
    # A new key 40 s after the restart misses "within 30 s" with only 300 keys present.
    assert verdicts["start-up"] == "MISSED"
    no_large = _verdicts({"sizes": {"100": _size(1.0, 1.0, 0.5, storm_keys=100)}})
    assert no_large["idle"] == "not measured"
    assert no_large["start-up"] == "not measured"
