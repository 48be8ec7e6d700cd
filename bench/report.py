"""results.json (figures + machine + targets) and RESULTS.md (the short tables)."""

from __future__ import annotations

import contextlib
import datetime
import os
import pathlib
import platform
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
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
    "sizes.*.operator.rotation_storm.all_rotated",
    "sizes.*.operator.rotation_storm.max_rotations_per_key",
    "sizes.*.operator.rotation_storm.keys_rotated_twice_in_window",
    "sizes.*.operator.provisioning.apply_to_ready_samples_s",
    "sizes.*.baseline.provisioning.apply_to_ready_samples_s",
    "sizes.*.operator.provisioning.rss_by_ready_keys",
    "sizes.*.operator.revoke_single.annotation_to_gone_samples_s",
    "sizes.*.operator.revoke_burst.annotation_to_gone_samples_s",
    "sizes.*.ratios.provisioning_operator_cpu_seconds",
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


# Every figure the large run (``--large N``) must produce, when it was asked for.
LARGE_FIGURES: tuple[str, ...] = (
    "large.*.operator.provisioning.all_ready_seconds",
    "large.*.operator.memory_idle.rss_mb",
    "large.*.operator.memory_idle.rss_kb_per_key",
    "large.*.operator.memory_idle.added_kb_per_key",
    "large.*.operator.idle.requests_per_key_per_minute",
    "large.*.operator.idle.store_calls_per_key_per_minute",
    "large.*.operator.idle.operator_cpu_percent",
    "large.*.operator.idle.operator_cpu_seconds_second_half",
    "large.*.operator.revoke_single.annotation_to_gone.p99_s",
    "large.*.operator.startup.rewrites",
    "large.*.operator.startup.new_key_ready_seconds",
    "large.*.operator.startup.first_restart.resume_seconds",
)


def missing_figures(results: Mapping[str, Any]) -> list[str]:
    """The REQUIRED_FIGURES (and, after a large run, LARGE_FIGURES) paths absent from
    ``results`` (empty: complete)."""
    missing = []
    wanted = REQUIRED_FIGURES
    if (results.get("options") or {}).get("large"):
        wanted = (*wanted, *LARGE_FIGURES)
    for path in wanted:
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
        # kopf logs in through each client library it finds installed, and so loads it into
        # the operator's and the floor's processes: memory figures depend on these.
        "kopf_login_libraries": _installed("pykube-ng", "kubernetes"),
    }


def _installed(*distributions: str) -> list[str]:
    found = []
    for name in distributions:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name} {metadata.version(name)}")
    return found


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


# Issue 17's target sizes: provisioning is compared with the floor at these N.
PROVISIONING_SIZES = ("1000", "5000")
LARGE = 10_000


def _judge(values: Mapping[str, float | None], wanted: Iterable[str],
           ok: Callable[[float], bool]) -> bool | None:
    """MISSED if any wanted size missed; not measured if one is absent; else met."""
    present = {n: v for n, v in values.items() if n in wanted and v is not None}
    if any(not ok(v) for v in present.values()):
        return False
    return True if len(present) == len(tuple(wanted)) else None


def _sizes_text(values: Mapping[str, Any], unit: str, wanted: Iterable[str]) -> str:
    wanted = tuple(wanted)
    text = ", ".join(f"N={n}: {v}{unit}" + ("" if n in wanted else " (not a target size)")
                     for n, v in values.items())
    return text or "no run"


def _large(figures: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    large: Mapping[str, Any] = figures.get("large") or {}
    if not large:
        return None
    n = max(large, key=int)
    return n, large[n]["operator"]


def targets(figures: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Issue 17's targets, checked against this run's figures. A target measured only at a
    smaller size than it names is shown with its figure and judged "not measured"."""
    sizes: Mapping[str, Any] = figures["sizes"]
    out = []
    cpu = {n: s["ratios"]["provisioning_operator_cpu_seconds"] for n, s in sizes.items()}
    out.append(_target(
        "provisioning CPU", "operator CPU per key within 1.5x of the kopf floor at 1,000 and "
        "5,000 keys", _sizes_text(cpu, "x", PROVISIONING_SIZES),
        _judge(cpu, PROVISIONING_SIZES, lambda r: r <= 1.5)))
    ready = {n: s["ratios"]["provisioning_all_ready_seconds"] for n, s in sizes.items()}
    out.append(_target(
        "provisioning time", "all Ready within 1.3x of the kopf floor at 1,000 and 5,000 keys",
        _sizes_text(ready, "x", PROVISIONING_SIZES),
        _judge(ready, PROVISIONING_SIZES, lambda r: r <= 1.3)))

    large = _large(figures)
    goal = f"p99 < 0.2 s with {LARGE:,} keys present"
    if large is None:
        out.append(_target("revoke, one at a time", goal, "no large run (--large)", None))
    else:
        n, ours = large
        p99 = ours["revoke_single"]["annotation_to_gone"]["p99_s"]
        out.append(_target("revoke, one at a time", goal,
                           f"N={n}: {p99}s ({ours['revoke_single']['revoked']} samples)",
                           (p99 < 0.2) if int(n) >= LARGE or p99 >= 0.2 else None))
    burst = {n: s["operator"]["revoke_burst"] for n, s in sizes.items()}
    p99s = {n: b["annotation_to_gone"]["p99_s"] for n, b in burst.items()}
    full = [n for n, b in burst.items() if b["revoked"] >= 100]
    out.append(_target(
        "revoke, 100 at once", "p99 < 1 s with 1,000 keys present",
        ", ".join(f"N={n}: {v}s ({burst[n]['revoked']} at once)" for n, v in p99s.items())
        or "no run", _judge({n: p99s[n] for n in full}, ("1000",), lambda v: v < 1.0)))

    goal = f"< 200 MB RSS with {LARGE:,} keys provisioned and idle (about 20 kB per key)"
    if large is None:
        largest = max(sizes, key=int)
        rss = sizes[largest]["operator"]["memory"]
        out.append(_target("memory", goal, f"N={largest}: {rss['rss_mb']} MB after "
                           "provisioning; no large run (--large)", None))
    else:
        n, ours = large
        mem = ours["memory_idle"]
        out.append(_target(
            "memory", goal, f"N={n}: {mem['rss_mb']} MB ({mem['rss_kb_per_key']} kB per key; "
            f"the keys added {mem.get('added_kb_per_key')} kB each)",
            (mem["rss_mb"] < 200) if int(n) >= LARGE or mem["rss_mb"] >= 200 else None))

    goal = (f"0 API requests, 0 store calls and < 1 % of a core with {LARGE:,} keys "
            "(CPU judged on the second half of the window, after the burst's work drained)")
    if large is None:
        out.append(_target("idle", goal, "no large run (--large)", None))
    else:
        n, ours = large
        idle = ours["idle"]
        half = 100 * idle["operator_cpu_seconds_second_half"] / (idle["seconds"] / 2)
        met = (idle["requests_per_key_per_minute"] == 0
               and idle.get("store_calls_per_key_per_minute") == 0 and half < 1.0)
        out.append(_target(
            "idle", goal, f"N={n}: {idle['api']['requests']} requests, "
            f"{idle.get('store_calls_per_key_per_minute')} store calls/key/min, "
            f"{round(half, 2)} % of a core (whole window {idle['operator_cpu_percent']} %)",
            met if int(n) >= LARGE or not met else None))

    storms = {n: s["operator"]["rotation_storm"] for n, s in sizes.items()}
    at_size = {n: st for n, st in storms.items() if st["keys"] >= 1000}
    goal = ("1,000 keys due at once: all rotated, store concurrency bounded, no key rotated "
            "twice")

    def storm_ok(st: Mapping[str, Any]) -> bool:
        return bool(st["all_rotated"] and st["keys_rotated_twice_in_window"] == 0
                    and st["store"]["peak_concurrent_calls"] <= st["store_concurrency_limit"])

    bad = [st for st in storms.values() if not storm_ok(st)]
    out.append(_target(
        "rotation storm", goal,
        "; ".join(f"N={n}: {st['keys']} due, all rotated {st['all_rotated']} in "
                  f"{st['all_rotated_seconds']} s, peak store calls "
                  f"{st['store']['peak_concurrent_calls']}/{st['store_concurrency_limit']}, "
                  f"rotated twice {st['keys_rotated_twice_in_window']}"
                  for n, st in storms.items()) or "no run",
        False if bad else (True if at_size else None)))

    goal = (f"a restart with {LARGE:,} existing keys rewrites none of them and serves a new "
            "key within 30 s")
    if large is None:
        out.append(_target("start-up", goal, "no large run (--large)", None))
    else:
        n, ours = large
        st = ours["startup"]
        met = st["rewrites"] == 0 and st["new_key_ready_seconds"] < 30
        out.append(_target(
            "start-up", goal, f"N={n}: {st['rewrites']} writes after the restart, new key "
            f"Ready {st['new_key_ready_seconds']} s after it (resumed in "
            f"{st['first_restart']['resume_seconds']} s)",
            met if int(n) >= LARGE or not met else None))
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
        "large": figures.get("large") or {},
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
        f"{storm['store']['calls_per_key']} store calls per key; at most "
        f"{storm.get('max_rotations_per_key', '-')} rotations per key by key version and "
        f"{storm.get('max_rotated_events_per_key', '-')} Rotated Events per key "
        f"({storm.get('keys_with_rotated_event', '-')} keys with one), "
        f"{storm.get('keys_rotated_twice_in_window', '-')} keys rotated twice, with "
        f"{storm.get('keys_present', storm['keys'])} keys present.",
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


def _large_section(n: str, ours: Mapping[str, Any]) -> str:
    prov, mem, idle = ours["provisioning"], ours["memory_idle"], ours["idle"]
    r1, st = ours["revoke_single"], ours["startup"]
    first = st["first_restart"]
    rows = [
        ["all Ready (s)", prov["all_ready_seconds"]],
        ["apply->Ready p50 / p99 (s)",
         f"{prov['apply_to_ready']['p50_s']} / {prov['apply_to_ready']['p99_s']}"],
        ["operator CPU s (provisioning)", prov["operator_cpu_seconds"]],
        ["API requests / key (provisioning)", prov["api"]["requests_per_key"]],
        ["RSS MB before the keys / after provisioning / idle",
         f"{mem.get('rss_mb_without_keys')} / {ours['memory']['rss_mb']} / {mem['rss_mb']}"],
        ["RSS kB per key (all / added by the keys)",
         f"{mem['rss_kb_per_key']} / {mem.get('added_kb_per_key')}"],
        ["idle: requests, store calls / key / min",
         f"{idle['api']['requests']}, {idle.get('store_calls_per_key_per_minute')}"],
        ["idle: operator CPU % of a core (window / second half)",
         f"{idle['operator_cpu_percent']} / "
         f"{round(100 * idle['operator_cpu_seconds_second_half'] / (idle['seconds'] / 2), 2)}"],
        ["revoke one at a time p50 / p99 (s)",
         f"{r1['annotation_to_gone']['p50_s']} / {r1['annotation_to_gone']['p99_s']} "
         f"({r1['revoked']} samples)"],
        ["restart: writes until quiet (rewrites)", st["rewrites"]],
        ["restart: requests, store calls until quiet",
         f"{first['requests']}, {first['store_calls']}"],
        ["restart: resumed (quiet) after (s)", first["resume_seconds"]],
        ["restart: operator CPU s to resume, RSS MB", f"{first['operator_cpu_seconds']}, "
         f"{first['rss_mb']}"],
        ["restart: new key Ready after (s)", st["new_key_ready_seconds"]],
    ]
    writes = ", ".join(f"{r['actor']} {r['verb']} {r['resource']} {r['count']}"
                       for r in first["write_rows"]) or "none"
    return (f"### Large run: apikey-operator alone, N = {n}\n\n"
            + _table(["figure", "apikey-operator"], rows)
            + f"\n\n- Writes after the restart, by row: {writes}.\n")


def markdown(results: Mapping[str, Any], out: pathlib.Path | None = None) -> str:
    """RESULTS.md; ``out`` is where it goes (the plots found there are linked)."""
    out = out if out is not None else NOTES.parent
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
        f"kopf {m['kopf']}, {_client_version(m)}"
        + (f" (kopf logs in through {', '.join(m['kopf_login_libraries'])}, loaded into "
           "both the operator and the floor)" if m.get("kopf_login_libraries") else "")
        + ". Each size and side gets a fresh real "
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
    for n, s in (results.get("large") or {}).items():
        parts.append(_large_section(n, s["operator"]))
    plots = [(name, what) for name, what in PLOTS if (out / name).exists()]
    if plots:
        parts += ["## Plots\n", "\n\n".join(f"{what}:\n\n![{what}]({name})"
                                             for name, what in plots) + "\n"]
    if (NOTES.parent / "HTTP_CLIENTS.md").exists():
        parts += ["## HTTP client\n", "The HTTP client comparison (lightkube, kubernetes, "
                  "kubernetes_asyncio and raw aiohttp, the same workload on one real control "
                  "plane) and its recommendation are in `bench/HTTP_CLIENTS.md` "
                  "(`python -m bench.http_clients`).\n"]
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


# The plots `make bench` writes next to RESULTS.md: (file name, what it shows).
PLOTS: tuple[tuple[str, str], ...] = (
    ("plot_apply_to_ready.png", "apply->Ready latency distribution, ours against the floor"),
    ("plot_revoke.png", "revoke latency distribution, one at a time and at once"),
    ("plot_rss.png", "operator RSS against the number of Ready keys"),
)


def _cdf(axes: Any, samples: list[float], label: str) -> None:
    ordered = sorted(samples)
    if ordered:
        axes.step(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))],
                  where="post", label=f"{label} (n={len(ordered)})")


def plots(results: Mapping[str, Any], out: pathlib.Path) -> list[pathlib.Path]:
    """The PLOTS as PNGs in ``out``; none (and no error) without matplotlib (the ``bench``
    extra), so the CI smoke run needs nothing beyond the test dependencies."""
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")  # files only: no display on a build machine
    import matplotlib.pyplot as plt

    written = []
    sizes: Mapping[str, Any] = results["sizes"]
    large: Mapping[str, Any] = results.get("large") or {}

    # Cumulative distributions: every sample is shown, and p50/p99 read off the y axis.
    fig, axes = plt.subplots(figsize=(8, 5))
    for n, s in sizes.items():
        for side, label in (("operator", "apikey-operator"), ("baseline", "kopf floor")):
            _cdf(axes, s[side]["provisioning"].get("apply_to_ready_samples_s") or [],
                 f"{label}, N={n}")
    for n, s in large.items():
        _cdf(axes, s["operator"]["provisioning"].get("apply_to_ready_samples_s") or [],
             f"apikey-operator, N={n} (large run)")
    axes.set(xlabel="apply -> Ready (s)", ylabel="fraction of keys",
             title="Provisioning: apply -> Ready latency (CDF)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    written.append(out / PLOTS[0][0])
    fig.savefig(written[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)

    fig, axes = plt.subplots(figsize=(8, 5))
    for n, s in sizes.items():
        for mode, label in (("revoke_single", "one at a time"), ("revoke_burst", "at once")):
            _cdf(axes, s["operator"][mode].get("annotation_to_gone_samples_s") or [],
                 f"{label}, N={n} present")
    for n, s in large.items():
        _cdf(axes, s["operator"]["revoke_single"].get("annotation_to_gone_samples_s") or [],
             f"one at a time, N={n} present (large run)")
    axes.set(xlabel="revoke annotation -> old key gone (s)", ylabel="fraction of revokes",
             title="Revoke latency (CDF)", xscale="log")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize="small")
    written.append(out / PLOTS[1][0])
    fig.savefig(written[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)

    fig, axes = plt.subplots(figsize=(8, 5))
    runs = [(f"N={n}", s["operator"]["provisioning"]) for n, s in sizes.items()]
    runs += [(f"N={n} (large run)", s["operator"]["provisioning"]) for n, s in large.items()]
    for label, prov in runs:
        points = prov.get("rss_by_ready_keys") or []
        if points:
            axes.plot([p[0] for p in points], [p[1] for p in points], label=f"provisioning {label}")
    idle_points = sorted([(int(n), s["operator"]["memory_end"]["rss_mb"]) for n, s in sizes.items()]
                         + [(int(n), s["operator"]["memory_idle"]["rss_mb"])
                            for n, s in large.items()])
    if idle_points:
        axes.plot([p[0] for p in idle_points], [p[1] for p in idle_points], "o--",
                  label="after the run's scenarios / idle")
    floor = sorted((int(n), s["baseline"]["memory"]["rss_mb"]) for n, s in sizes.items())
    if floor:
        axes.plot([p[0] for p in floor], [p[1] for p in floor], "s:", label="kopf floor")
    axes.axhline(200, color="red", linewidth=0.8, label="target: 200 MB at 10,000 keys")
    axes.set(xlabel="Ready keys", ylabel="operator RSS (MB)", title="Memory against key count")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    written.append(out / PLOTS[2][0])
    fig.savefig(written[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)
    return written


def summary(results: Mapping[str, Any]) -> str:
    """The targets as a plain-text table, for the terminal."""
    rows = [(t["name"], t["verdict"], t["measured"]) for t in results["targets"]]
    widths = [max(len(r[i]) for r in [("target", "verdict", "measured"), *rows])
              for i in range(2)]
    lines = [f"{'target':<{widths[0]}}  {'verdict':<{widths[1]}}  measured",
             f"{'-' * widths[0]}  {'-' * widths[1]}  {'-' * 8}"]
    lines += [f"{name:<{widths[0]}}  {verdict:<{widths[1]}}  {measured}"
              for name, verdict, measured in rows]
    return "\n".join(lines)
