"""The benchmark's child processes (emulator, operator, baseline) and what /proc says of them."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import yaml

from apikey_operator.testing.kubeconfig import write_kubeconfig

REPO = pathlib.Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    """CPU seconds (user + system) and resident memory of one process at one instant."""

    cpu_seconds: float
    rss_mb: float
    peak_rss_mb: float


def usage(pid: int) -> Usage:
    """Read /proc/<pid>/stat and /proc/<pid>/status (no psutil needed)."""
    stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    # After the ")" closing comm, field 3 (state) is index 0: utime is 14, stime 15.
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    rss = hwm = 0.0
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return Usage(cpu, rss, hwm)


class Child:
    """A Python child process of the benchmark, logging to ``log_path``; stopped with SIGTERM."""

    def __init__(self, name: str, argv: Sequence[str], workdir: pathlib.Path,
                 env: Mapping[str, str] | None = None, capture_stdout: bool = False) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        python_path = [str(REPO), full_env.get("PYTHONPATH", "")]
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in python_path if p)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, *argv], env=full_env, cwd=REPO,
            stdout=subprocess.PIPE if capture_stdout else self._log, stderr=self._log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def usage(self) -> Usage:
        return usage(self.pid)

    def check_alive(self) -> None:
        if not self.alive():
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{tail}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


class Emulator(Child):
    """``bench.emulator_main`` in a child process; ``url`` once started."""

    def __init__(self, workdir: pathlib.Path, namespaces: Sequence[str]) -> None:
        args = ["-m", "bench.emulator_main"]
        for namespace in namespaces:
            args += ["--namespace", namespace]
        super().__init__("emulator", args, workdir, capture_stdout=True)
        self.url = ""
        self.kubeconfig = workdir / "kubeconfig"

    def wait_ready(self, timeout: float = 60.0) -> Self:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline().decode().strip()
            if line.startswith("READY "):
                self.url = line.split(" ", 1)[1]
                write_kubeconfig(self.kubeconfig, self.url)
                return self
            self.check_alive()
        raise TimeoutError("the emulator did not start in time")

    def counts(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_bench/counts", timeout=30) as response:
            data: dict[str, Any] = json.load(response)
        return data


class OperatorUnderTest(Child):
    """The real operator (``bench.operator_main``) with instrumented stores."""

    def __init__(self, workdir: pathlib.Path, kubeconfig: pathlib.Path,
                 stores: Mapping[str, Mapping[str, Any]], env: Mapping[str, str]) -> None:
        config = workdir / "operator-config.yaml"
        config.write_text(yaml.safe_dump({"stores": {k: dict(v) for k, v in stores.items()}}))
        self.port_file = workdir / "operator-stats-port"
        self.port_file.unlink(missing_ok=True)
        super().__init__(
            "operator",
            ["-m", "bench.operator_main", "--stats-port-file", str(self.port_file), "--",
             "run", "--config", str(config), "--standalone", "--log-format", "json"],
            workdir,
            env={"KUBECONFIG": str(kubeconfig), "POD_NAMESPACE": "apikey-operator", **env})
        self._stats_url = ""

    def wait_stats(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.port_file.exists():
            self.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError("the operator's stats endpoint did not start")
            time.sleep(0.05)
        self._stats_url = f"http://127.0.0.1:{self.port_file.read_text().strip()}/stats"

    def store_stats(self, reset_peaks: bool = False) -> dict[str, Any]:
        url = self._stats_url + ("?reset_peaks=1" if reset_peaks else "")
        with urllib.request.urlopen(url, timeout=30) as response:
            data: dict[str, Any] = json.load(response)
        return data


class Baseline(Child):
    """``bench.baseline_operator``: the kopf floor."""

    def __init__(self, workdir: pathlib.Path, kubeconfig: pathlib.Path) -> None:
        super().__init__("baseline", ["-m", "bench.baseline_operator"], workdir,
                         env={"KUBECONFIG": str(kubeconfig)})
