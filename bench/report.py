"""results.json (figures + machine + targets) and RESULTS.md (the short tables)."""

from __future__ import annotations

import datetime
import os
import pathlib
import platform
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict
from importlib import metadata
from typing import Any

from bench.runner import Options

REPO = pathlib.Path(__file__).resolve().parent.parent
NOTES = pathlib.Path(__file__).resolve().parent / "NOTES.md"

# Every figure a run must produce, as paths into results.json ("*" = each size).
REQUIRED_FIGURES: tuple[str, ...] = (
    "machine.cpu_model", "machine.cpus", "machine.mem_total_mb",
    "control_plane.kube_apiserver",
    "sizes.*.baseline.provisioning.all_ready_seconds",
    "sizes.*.baseline.provisioning.apply_to_ready.p50_s",
    "sizes.*.baseline.provisioning.apply_to_ready.p99_s",
    "sizes.*.baseline.provisioning.api.requests_per_key",
    "sizes.*.baseline.provisioning.api.writes_per_key.all",
    "sizes.*.baseline.memory.rss_mb",
    "sizes.*.baseline.idle.requests_per_key_per_minute",
    "sizes.*.baseline.idle.operator_cpu_seconds",
    "sizes.*.operator.provisioning.all_ready_seconds",
    "sizes.*.operator.provisioning.apply_to_ready.p50_s",
    "sizes.*.operator.provisioning.apply_to_ready.p99_s",
    "sizes.*.operator.provisioning.api.requests_per_key",
    "sizes.*.operator.provisioning.api.by_verb_per_key",
    "sizes.*.operator.provisioning.api.writes_per_key.ours_including_events",
    "sizes.*.operator.provisioning.api.writes_per_key.kopf_bookkeeping",
    "sizes.*.operator.provisioning.store.calls_per_key",
    "sizes.*.operator.provisioning.operator_cpu_seconds",
    "sizes.*.operator.provisioning.apiserver_cpu_seconds",
    "sizes.*.operator.provisioning.etcd_cpu_seconds",
    "sizes.*.baseline.provisioning.apiserver_cpu_seconds",
    "sizes.*.operator.revoke_single.annotation_to_gone.p50_s",
    "sizes.*.operator.revoke_single.annotation_to_gone.p99_s",
    "sizes.*.operator.revoke_burst.annotation_to_gone.p50_s",
    "sizes.*.operator.revoke_burst.annotation_to_gone.p99_s",
    "sizes.*.operator.rotation_storm.all_rotated_seconds",
    "sizes.*.operator.rotation_storm.store.peak_concurrent_calls",
    "sizes.*.operator.rotation_storm.store.peak_calls_started_per_100ms",
    "sizes.*.operator.idle.requests_per_key_per_minute",
    "sizes.*.operator.idle.store_calls_per_key_per_minute",
    "sizes.*.operator.idle.operator_cpu_seconds",
    "sizes.*.operator.memory.rss_mb",
    "sizes.*.operator.memory_end.peak_rss_mb",
    "sizes.*.ratios.provisioning_all_ready_seconds",
    "sizes.*.ratios.requests_per_key",
    "sizes.*.ratios.rss_mb",
    "stores.vault.all_ready_seconds", "stores.vault.store.calls_per_key",
    "stores.aws.all_ready_seconds", "stores.aws.store.calls_per_key",
    "targets",
)


def missing_figures(results: Mapping[str, Any]) -> list[str]:
    """The REQUIRED_FIGURES paths absent from ``results`` (empty: complete)."""
    missing = []
    for path in REQUIRED_FIGURES:
        nodes: list[Any] = [results]
        for part in path.split("."):
            nxt: list[Any] = []
            for node in nodes:
                if not isinstance(node, Mapping):
                    continue
                if part == "*":
                    nxt.extend(node.values())
                elif part in node:
                    nxt.append(node[part])
            if not nxt:
                missing.append(path)
                break
            nodes = nxt
        else:
            if any(node is None for node in nodes):
                missing.append(path)
    return missing


def machine() -> dict[str, Any]:
    """CPU, memory and software versions of the machine the figures come from."""
    cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    mhz = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                if line.startswith("cpu MHz")), "")
    mem_kb = next(int(line.split()[1]) for line in
                  pathlib.Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
    return {
        "cpu_model": model,
        "cpu_mhz": mhz,
        "cpus": os.cpu_count(),
        "mem_total_mb": mem_kb // 1024,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "kopf": metadata.version("kopf"),
        "aiohttp": metadata.version("aiohttp"),  # the operator's Kubernetes client
    }


def _client_version(machine: Mapping[str, Any]) -> str:
    """The operator's HTTP client: aiohttp since issue 17, lightkube in older results."""
    if "aiohttp" in machine:
        return f"aiohttp {machine['aiohttp']}"
    return f"lightkube {machine.get('lightkube', '?')}"


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                             timeout=10, check=False)
    except OSError:
        return ""
    return out.stdout.strip()


def commit() -> str:
    """The commit measured; ``+dirty`` when the operator's sources differ from it."""
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if _git("status", "--porcelain", "operator") else "")


def _target(name: str, goal: str, measured: str, met: bool | None, note: str = "") -> dict[str,
                                                                                           Any]:
    verdict = "not measured" if met is None else ("met" if met else "MISSED")
    return {"name": name, "target": goal, "measured": measured, "met": met, "verdict": verdict,
            "note": note}


def targets(figures: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, checked against this run's figures."""
    sizes: Mapping[str, Any] = figures["sizes"]
    out = []
    writes = {n: s["operator"]["provisioning"]["api"]["writes_per_key"]
              for n, s in sizes.items()}
    out.append(_target(
        "provisioning writes", "<= 3 Kubernetes writes per key beyond kopf's bookkeeping",
        ", ".join(f"N={n}: {w['ours_including_events']} (events {w['our_events']}, "
                  f"kopf bookkeeping {w['kopf_bookkeeping']})" for n, w in writes.items()),
        all(w["ours_including_events"] <= 3 for w in writes.values())))
    time_ratio = {n: s["ratios"]["provisioning_all_ready_seconds"] for n, s in sizes.items()}
    out.append(_target(
        "provisioning time", "all Ready within 1.5x of the kopf floor",
        ", ".join(f"N={n}: {r}x" for n, r in time_ratio.items()),
        all(r is not None and r <= 1.5 for r in time_ratio.values())))
    big = {n: s for n, s in sizes.items() if int(n) >= 1000}
    for mode, what in (("revoke_single", "revoke, one at a time"),
                       ("revoke_burst", "revoke, 100 at once")):
        goal = "p99 < 1 s with 1,000 keys present"
        if big:
            p99 = {n: s["operator"][mode]["annotation_to_gone"]["p99_s"] for n, s in big.items()}
            out.append(_target(what, goal, ", ".join(f"N={n}: {v}s" for n, v in p99.items()),
                               all(v < 1.0 for v in p99.values())))
        else:
            out.append(_target(what, goal, "no run with >= 1,000 keys", None))
    idle = {n: s["operator"]["idle"] for n, s in sizes.items()}
    out.append(_target(
        "idle", "0 API requests and 0 store calls per key per minute beyond the watches",
        ", ".join(f"N={n}: {i['requests_per_key_per_minute']} requests, "
                  f"{i['store_calls_per_key_per_minute']} store calls" for n, i in idle.items()),
        all(i["requests_per_key_per_minute"] == 0 and i["store_calls_per_key_per_minute"] == 0
            for i in idle.values())))
    if "5000" in sizes:
        rss = sizes["5000"]["operator"]["memory_end"]
        out.append(_target("memory", "< 200 MB RSS at 5,000 keys",
                           f"{rss['rss_mb']} MB (peak {rss['peak_rss_mb']} MB)",
                           rss["peak_rss_mb"] < 200))
    else:
        largest = max(sizes, key=int)
        rss = sizes[largest]["operator"]["memory_end"]
        out.append(_target("memory", "< 200 MB RSS at 5,000 keys",
                           f"N={largest}: {rss['rss_mb']} MB (peak {rss['peak_rss_mb']} MB); "
                           "run --long for 5,000", None))
    return out


def assemble(opts: Options, figures: Mapping[str, Any],
             commit_at_start: str | None = None) -> dict[str, Any]:
    """results.json; ``commit_at_start`` is :func:`commit` when the run began (another
    session may commit or edit the operator while a long run goes on)."""
    return {
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "commit_at_start": commit_at_start,
        "options": asdict(opts),
        "machine": machine(),
        "control_plane": dict(figures.get("control_plane") or {}),
        "run_seconds": figures["run_seconds"],
        "complete": figures["complete"],
        "targets": targets(figures),
        "sizes": figures["sizes"],
        "stores": figures["stores"],
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _load(figures: Mapping[str, Any]) -> str:
    load = figures.get("load_average") or []
    return "-".join(f"{v:g}" for v in load) or "-"


def _size_section(n: str, s: Mapping[str, Any]) -> str:
    ours, floor, ratio = s["operator"], s["baseline"], s["ratios"]
    po, pf = ours["provisioning"], floor["provisioning"]
    rows = [
        ["all Ready (s)", po["all_ready_seconds"], pf["all_ready_seconds"],
         ratio["provisioning_all_ready_seconds"]],
        ["apply->Ready p50 (s)", po["apply_to_ready"]["p50_s"], pf["apply_to_ready"]["p50_s"],
         ratio["apply_to_ready_p50"]],
        ["apply->Ready p99 (s)", po["apply_to_ready"]["p99_s"], pf["apply_to_ready"]["p99_s"],
         ratio["apply_to_ready_p99"]],
        ["API requests / key", po["api"]["requests_per_key"], pf["api"]["requests_per_key"],
         ratio["requests_per_key"]],
        ["API writes / key (all)", po["api"]["writes_per_key"]["all"],
         pf["api"]["writes_per_key"]["all"], ratio["writes_per_key"]],
        ["operator CPU s (provisioning)", po["operator_cpu_seconds"],
         pf["operator_cpu_seconds"], ratio["provisioning_operator_cpu_seconds"]],
        ["kube-apiserver CPU s (provisioning)", po["apiserver_cpu_seconds"],
         pf["apiserver_cpu_seconds"], ratio.get("provisioning_apiserver_cpu_seconds")],
        ["etcd CPU s (provisioning)", po["etcd_cpu_seconds"], pf["etcd_cpu_seconds"],
         ratio.get("provisioning_etcd_cpu_seconds")],
        ["counting proxy CPU s (provisioning)", po["proxy_cpu_seconds"],
         pf["proxy_cpu_seconds"], None],
        ["operator RSS MB after provisioning", ours["memory"]["rss_mb"],
         floor["memory"]["rss_mb"], ratio["rss_mb"]],
        ["idle requests / key / min", ours["idle"]["requests_per_key_per_minute"],
         floor["idle"]["requests_per_key_per_minute"], None],
        ["idle operator CPU s", ours["idle"]["operator_cpu_seconds"],
         floor["idle"]["operator_cpu_seconds"], ratio["idle_operator_cpu_seconds"]],
        ["machine load average during provisioning (1 min, start-end)",
         _load(po), _load(pf), None],
    ]
    writes = po["api"]["writes_per_key"]
    verbs = ", ".join(f"{v} {c}" for v, c in po["api"]["by_verb_per_key"].items())
    floor_verbs = ", ".join(f"{v} {c}" for v, c in pf["api"]["by_verb_per_key"].items())
    store = po["store"]
    storm, r1, rm = ours["rotation_storm"], ours["revoke_single"], ours["revoke_burst"]
    detail = [
        f"- Provisioning requests per key by verb: ours {verbs}; floor {floor_verbs}.",
        f"- Our writes per key: {writes['ours_including_events']} including our Events "
        f"({writes['ours_excluding_events']} without; of which built-in store "
        f"{writes['store_backend']}); kopf bookkeeping {writes['kopf_bookkeeping']}; "
        f"kopf log Events {writes['kopf_log_events']}. Reads per key: ours "
        f"{po['api']['reads_per_key']['ours']}, kopf {po['api']['reads_per_key']['kopf']}.",
        f"- Store calls per key (provisioning): {store['calls_per_key']} "
        f"({', '.join(f'{m} {c}' for m, c in store['by_method_per_key'].items())}).",
        f"- Rotation storm ({storm['keys']} keys due at once, rotateEvery "
        f"{storm['rotate_every_seconds']}s, grace {storm['grace_seconds']}s): all rotated in "
        f"{storm['all_rotated_seconds']} s (due->rotated p50 {storm['due_to_rotated']['p50_s']} s, "
        f"p99 {storm['due_to_rotated']['p99_s']} s); peak concurrent store calls "
        f"{storm['store']['peak_concurrent_calls']}, peak store calls started in 100 ms "
        f"{storm['store']['peak_calls_started_per_100ms']}; "
        f"{storm['api']['requests_per_key']} API requests and "
        f"{storm['store']['calls_per_key']} store calls per key.",
        f"- Revoke, {r1['revoked']} keys one at a time: p50 {r1['annotation_to_gone']['p50_s']} s, "
        f"p99 {r1['annotation_to_gone']['p99_s']} s. "
        f"Revoke, {rm['revoked']} keys at once: p50 {rm['annotation_to_gone']['p50_s']} s, "
        f"p99 {rm['annotation_to_gone']['p99_s']} s, max {rm['annotation_to_gone']['max_s']} s "
        f"({rm['api']['requests_per_key']} API requests, {rm['store'].get('calls_per_key')} "
        f"store calls, {round(1000 * rm['operator_cpu_seconds'] / max(rm['revoked'], 1), 1)} ms "
        "of operator CPU per revoked key; peak concurrent store calls "
        f"{rm['store'].get('peak_concurrent_calls')}).",
        f"- Idle {ours['idle']['seconds']:.0f} s: {ours['idle']['requests_per_key_per_minute']} "
        f"requests and {ours['idle']['store_calls_per_key_per_minute']} store calls per key per "
        f"minute, operator CPU {ours['idle']['operator_cpu_seconds']} s "
        f"({ours['idle']['operator_cpu_percent']} %; second half of the window "
        f"{ours['idle'].get('operator_cpu_seconds_second_half', '-')} s).",
        f"- Memory: RSS {ours['memory']['rss_mb']} MB after provisioning, "
        f"{ours['memory_end']['rss_mb']} MB at the end, peak {ours['memory_end']['peak_rss_mb']} "
        f"MB (floor {floor['memory']['rss_mb']} MB).",
    ]
    return (f"### N = {n}\n\n"
            + _table(["figure", "apikey-operator", "kopf floor", "ratio"], rows)
            + "\n\n" + "\n".join(detail) + "\n")


def markdown(results: Mapping[str, Any]) -> str:
    m = results["machine"]
    plane = results.get("control_plane") or {}
    apiserver = plane.get("kube_apiserver", "unknown")
    parts = [
        "# Benchmark results\n",
        f"Generated {results['generated_at']} at commit `{results['commit']}` against "
        f"kube-apiserver {apiserver} (etcd {plane.get('etcd', 'unknown')}) by "
        f"`python -m bench` (sizes {', '.join(str(s) for s in results['options']['sizes'])}, "
        f"idle window {results['options']['idle_seconds']:g} s; run took "
        f"{results['run_seconds']:g} s)."
        + ("" if results.get("complete", True) else
           " PARTIAL: the run was cut short; the sizes below are the ones it finished.")
        + (f" The sources changed during the run: it began at `{results['commit_at_start']}`."
           if results.get("commit_at_start") not in (None, results["commit"]) else "")
        + "\n",
        f"Machine: {m['cpu_model']} ({m['cpus']} CPUs at {m['cpu_mhz']} MHz), "
        f"{m['mem_total_mb']} MB RAM, Linux {m['kernel']}, Python {m['python']}, "
        f"kopf {m['kopf']}, {_client_version(m)}. Each size and side gets a fresh real "
        f"control plane: etcd, kube-apiserver {apiserver} and kube-controller-manager "
        "(`apikey_operator.testing.controlplane`, binaries from `tools/build-go-tools`), with "
        "a counting HTTPS proxy in front of the kube-apiserver for the process under test. "
        "The control plane with the proxy, the operator (or the floor) and the driver each "
        "run in processes of their own on these cores; the server-side CPU rows are the "
        "kube-apiserver's and etcd's own (from /proc).\n",
        "The *kopf floor* is `bench/baseline_operator.py`: kopf with its defaults, one Secret "
        "created and one status patch per ApiKey. Ratios are apikey-operator / floor, same N, "
        "same run. Requests are counted by the proxy the operator (or the floor) talks "
        "through, and told apart by User-Agent: kopf's own client (bookkeeping patches, its "
        "log Events, the Events we ask it to post) and the operator's API client; the driver "
        "talks to the kube-apiserver directly and is never counted.\n",
        "## Targets\n",
        _table(["target", "goal", "measured", "verdict"],
               [[t["name"], t["target"], t["measured"], t["verdict"]]
                for t in results["targets"]]) + "\n",
        "## Figures\n",
    ]
    for n, s in results["sizes"].items():
        parts.append(_size_section(n, s))
    if results["stores"]:
        rows = []
        for name, p in results["stores"].items():
            st = p["store"]
            rows.append([name, p["keys"], p["all_ready_seconds"], p["apply_to_ready"]["p50_s"],
                         p["apply_to_ready"]["p99_s"], st["calls_per_key"],
                         ", ".join(f"{k} {v}" for k, v in st["by_method_per_key"].items()),
                         ", ".join(f"{k} {v}" for k, v in st["mean_ms_by_method"].items()),
                         p["api"]["requests_per_key"]])
        parts += ["## Store backends (provisioning)\n",
                  _table(["store", "N", "all Ready (s)", "p50 (s)", "p99 (s)", "store calls/key",
                          "by method / key", "mean ms per call", "API requests/key"], rows)
                  + "\n"]
    if NOTES.exists():
        parts += ["## Analysis\n", NOTES.read_text().strip() + "\n"]
    return "\n".join(parts)
