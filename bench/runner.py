"""One benchmark run: every size against the baseline and the operator, then the stores."""

from __future__ import annotations

import asyncio
import os
import pathlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from apikey_operator.testing.servers import MotoServer, OpenBaoServer
from bench import scenarios
from bench.scenarios import environment, key_name

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass(frozen=True)
class Options:
    sizes: tuple[int, ...]
    idle_seconds: float
    revoke_many: int
    revoke_singles: int
    store_keys: int
    stores: bool
    smoke: bool
    grace_seconds: int = 5
    # The rotation storm's size at each N (at most N): issue 17 asks for 1,000 due at once.
    storm_keys: int = 1000
    # N of the operator-only large run (memory, idle, revoke one at a time, start-up with N
    # keys present; issue 17 asks for 10,000); 0 = none. Opt-in: it is long.
    large: int = 0


Progress = Callable[[str], None]


async def run_size(n: int, opts: Options, workdir: pathlib.Path,
                   say: Progress) -> dict[str, Any]:
    """Baseline then operator at N keys; the operator gets every scenario."""
    result: dict[str, Any] = {"load_average_at_start": list(os.getloadavg())}
    say(f"N={n}: baseline (minimal kopf operator)")
    async with environment(workdir / f"baseline-{n}", baseline=True) as env:
        result["control_plane"] = env.cluster.versions
        provisioning = await scenarios.provisioning(env, n)
        say(f"  provisioning {provisioning['all_ready_seconds']}s")
        memory = scenarios.memory(env, n)
        idle = await scenarios.idle(env, n, opts.idle_seconds)
        result["baseline"] = {"provisioning": provisioning, "memory": memory, "idle": idle}
    say(f"N={n}: apikey-operator")
    storm_keys = min(opts.storm_keys, n)
    async with environment(workdir / f"operator-{n}", baseline=False) as env:
        provisioning = await scenarios.provisioning(env, n, storm_keys=storm_keys)
        say(f"  provisioning {provisioning['all_ready_seconds']}s")
        memory = scenarios.memory(env, n)
        idle = await scenarios.idle(env, n, opts.idle_seconds)
        say(f"  idle {idle['requests_per_key_per_minute']} requests/key/min")
        # The storm must not outlast rotateEvery (the keys' age): three times the time its
        # share of the provisioning took is the margin (a storm of 1,000 among 5,000 keys
        # need not wait for three times the whole provisioning).
        storm_age = 3 * provisioning["all_ready_seconds"] * storm_keys / n
        storm = await scenarios.rotation_storm(env, storm_keys, opts.grace_seconds,
                                               min_age=storm_age, present=n)
        say(f"  rotation storm of {storm_keys} keys {storm['all_rotated_seconds']}s, "
            f"at most {storm['max_rotations_per_key']} rotations per key")
        singles = [key_name(i) for i in range(opts.revoke_singles)]
        revoke_one = await scenarios.revoke(env, singles, n, one_by_one=True)
        say(f"  revoke one at a time p99 {revoke_one['annotation_to_gone']['p99_s']}s "
            f"({len(singles)} keys)")
        # The burst may include the keys revoked one by one: they are Ready again by now.
        many = min(opts.revoke_many, n)
        revoke_many = await scenarios.revoke(env, [key_name(i) for i in range(many)], n)
        say(f"  revoke at once p99 {revoke_many['annotation_to_gone']['p99_s']}s ({many} keys)")
        memory_end = scenarios.memory(env, n)
        result["operator"] = {"provisioning": provisioning, "memory": memory, "idle": idle,
                              "rotation_storm": storm, "revoke_single": revoke_one,
                              "revoke_burst": revoke_many, "memory_end": memory_end}
    result["ratios"] = ratios(result["operator"], result["baseline"])
    result["load_average_at_end"] = list(os.getloadavg())
    return result


def _ratio(ours: float, floor: float) -> float | None:
    return round(ours / floor, 2) if floor else None


def ratios(ours: Mapping[str, Any], floor: Mapping[str, Any]) -> dict[str, float | None]:
    """Our figures divided by the kopf floor's, same N, same run."""
    po, pf = ours["provisioning"], floor["provisioning"]
    return {
        "provisioning_all_ready_seconds": _ratio(po["all_ready_seconds"],
                                                 pf["all_ready_seconds"]),
        "apply_to_ready_p50": _ratio(po["apply_to_ready"]["p50_s"], pf["apply_to_ready"]["p50_s"]),
        "apply_to_ready_p99": _ratio(po["apply_to_ready"]["p99_s"], pf["apply_to_ready"]["p99_s"]),
        "requests_per_key": _ratio(po["api"]["requests_per_key"], pf["api"]["requests_per_key"]),
        "writes_per_key": _ratio(po["api"]["writes_per_key"]["all"],
                                 pf["api"]["writes_per_key"]["all"]),
        "provisioning_operator_cpu_seconds": _ratio(po["operator_cpu_seconds"],
                                                    pf["operator_cpu_seconds"]),
        "provisioning_apiserver_cpu_seconds": _ratio(po["apiserver_cpu_seconds"],
                                                     pf["apiserver_cpu_seconds"]),
        "provisioning_etcd_cpu_seconds": _ratio(po["etcd_cpu_seconds"], pf["etcd_cpu_seconds"]),
        "rss_mb": _ratio(ours["memory"]["rss_mb"], floor["memory"]["rss_mb"]),
        "idle_operator_cpu_seconds": _ratio(ours["idle"]["operator_cpu_seconds"],
                                            floor["idle"]["operator_cpu_seconds"]),
    }


async def run_large(n: int, opts: Options, workdir: pathlib.Path,
                    say: Progress) -> dict[str, Any]:
    """The operator alone with N keys: provisioning, memory once idle, idle, revoke one at a
    time with N present, then the start-up scenario (two restarts). No floor: no target
    compares with it at this size."""
    say(f"large N={n}: apikey-operator alone")
    async with environment(workdir / f"large-{n}", baseline=False) as env:
        rss_without_keys = env.process.usage().rss_mb
        provisioning = await scenarios.provisioning(env, n)
        say(f"  provisioning {provisioning['all_ready_seconds']}s")
        memory = scenarios.memory(env, n, rss_without_keys)
        idle = await scenarios.idle(env, n, opts.idle_seconds)
        memory_idle = scenarios.memory(env, n, rss_without_keys)
        say(f"  idle {idle['requests_per_key_per_minute']} requests/key/min, "
            f"{idle['operator_cpu_percent']} % of a core; RSS {memory_idle['rss_mb']} MB")
        singles = [key_name(i) for i in range(opts.revoke_singles)]
        revoke_one = await scenarios.revoke(env, singles, n, one_by_one=True)
        say(f"  revoke one at a time p99 {revoke_one['annotation_to_gone']['p99_s']}s")
        startup = await scenarios.startup(env, n)
        say(f"  start-up: {startup['rewrites']} writes after the restart, a new key Ready "
            f"{startup['new_key_ready_seconds']}s after it")
        return {"load_average_at_start": list(os.getloadavg()),
                "control_plane": env.cluster.versions,
                "operator": {"provisioning": provisioning, "memory": memory, "idle": idle,
                             "memory_idle": memory_idle, "revoke_single": revoke_one,
                             "startup": startup}}


async def run_stores(n: int, workdir: pathlib.Path, say: Progress) -> dict[str, Any]:
    """Provisioning at N keys against OpenBao (vault store), then moto (aws store).

    One operator process has both stores configured; each burst is measured on its own.
    """
    results: dict[str, Any] = {}
    bao, moto = OpenBaoServer(), MotoServer()
    try:
        await asyncio.gather(asyncio.to_thread(bao.start), asyncio.to_thread(moto.start))
        token_file = bao.write_token_file(workdir / "bao-token")
        config: dict[str, dict[str, Any]] = {
            "vault": {"type": "vault", "address": bao.address, "mount": "secret",
                      "pathPrefix": "apikeys",
                      "auth": {"method": "token", "tokenFile": str(token_file)}},
            "aws": {"type": "aws-secrets-manager", "region": "us-east-1",
                    "namePrefix": "apikeys/", "endpointUrl": moto.endpoint_url},
        }
        async with environment(workdir / "stores", baseline=False, stores=config,
                               env=AWS_ENV) as env:
            for store in ("vault", "aws"):
                say(f"stores: {store} ({'OpenBao' if store == 'vault' else 'moto'}) at N={n}")
                results[store] = await scenarios.provisioning(env, n, store=store, prefix=store)
    finally:
        await asyncio.gather(asyncio.to_thread(bao.close), asyncio.to_thread(moto.close))
    return results


Checkpoint = Callable[[dict[str, Any]], None]


async def run(opts: Options, workdir: pathlib.Path, say: Progress,
              checkpoint: Checkpoint) -> dict[str, Any]:
    """Every stage in turn; ``checkpoint`` gets the figures so far after each one, so a
    long run that is cut short still leaves the sizes it finished (stores come second)."""
    started = time.monotonic()
    figures: dict[str, Any] = {"sizes": {}, "large": {}, "stores": {}, "complete": False}

    def stage_done() -> None:
        figures["run_seconds"] = round(time.monotonic() - started, 1)
        checkpoint(figures)

    for index, n in enumerate(opts.sizes):
        figures["sizes"][str(n)] = await run_size(n, opts, workdir, say)
        figures.setdefault("control_plane", figures["sizes"][str(n)]["control_plane"])
        stage_done()
        if index == 0 and opts.stores:
            figures["stores"] = await run_stores(opts.store_keys, workdir, say)
            stage_done()
    if opts.large:
        figures["large"][str(opts.large)] = await run_large(opts.large, opts, workdir, say)
        figures.setdefault("control_plane", figures["large"][str(opts.large)]["control_plane"])
    figures["complete"] = True
    stage_done()
    return figures


def run_sync(opts: Options, workdir: pathlib.Path, say: Progress,
             checkpoint: Checkpoint) -> dict[str, Any]:
    return asyncio.run(run(opts, workdir, say, checkpoint))
