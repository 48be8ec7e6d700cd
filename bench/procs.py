"""The benchmark's child processes (control plane + proxy, operator, baseline) and what /proc
says of them."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import yaml

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


# The control plane's processes, by binary, and their names in the figures.
COMPONENTS: Mapping[str, str] = {"kube-apiserver": "apiserver", "etcd": "etcd",
                                 "kube-controller-manager": "controller_manager"}


class Cluster(Child):
    """``bench.cluster_main`` in a child process: a real control plane and the counting proxy.

    Once :meth:`wait_ready` returns: ``url`` (the proxy, for the process under test, through
    ``kubeconfig``), ``apiserver_url``, ``ca_file`` and ``token`` (for the driver, which goes
    to the kube-apiserver directly), ``pids`` of the control plane's processes and
    ``versions``.
    """

    def __init__(self, workdir: pathlib.Path, namespaces: Sequence[str]) -> None:
        args = ["-m", "bench.cluster_main", "--workdir", str(workdir / "cluster")]
        for namespace in namespaces:
            args += ["--namespace", namespace]
        super().__init__("cluster", args, workdir, capture_stdout=True)
        self.info: dict[str, Any] = {}
        self.url = self.apiserver_url = self.token = ""
        self.ca_file = self.kubeconfig = pathlib.Path()
        self.pids: dict[str, int] = {}

    def wait_ready(self, timeout: float = 180.0) -> Self:
        stdout = self.process.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        buffer = b""
        while time.monotonic() < deadline:
            readable, _, _ = select.select([stdout], [], [], 0.5)
            if readable:
                chunk = os.read(stdout.fileno(), 65536)
                buffer += chunk
                lines = buffer.split(b"\n")
                buffer = lines.pop()
                for raw in lines:
                    line = raw.decode(errors="replace").strip()
                    if line.startswith("READY "):
                        self._ready(json.loads(line.split(" ", 1)[1]))
                        return self
                if not chunk:
                    self.process.wait(5)
            self.check_alive()
        raise TimeoutError(f"the control plane did not start in {timeout:g}s "
                           f"(see {self.log_path})")

    def _ready(self, info: dict[str, Any]) -> None:
        self.info = info
        self.url = str(info["proxy_url"])
        self.apiserver_url = str(info["apiserver_url"])
        self.ca_file = pathlib.Path(info["ca_file"])
        self.token = str(info["admin_token"])
        self.kubeconfig = pathlib.Path(info["kubeconfig"])
        self.pids = {COMPONENTS.get(k, k): int(v) for k, v in info["pids"].items()}

    @property
    def versions(self) -> dict[str, str]:
        return {"kube_apiserver": str(self.info.get("kube_apiserver_version", "unknown")),
                "etcd": str(self.info.get("etcd_version", "unknown"))}

    def counts(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.info['stats_url']}/counts", timeout=30) as response:
            data: dict[str, Any] = json.load(response)
        return data

    def component_usage(self) -> dict[str, Usage]:
        """CPU and memory of each control-plane process (``apiserver``, ``etcd``,
        ``controller_manager``) and of the proxy (this child process itself: ``proxy``)."""
        found = {name: usage(pid) for name, pid in self.pids.items()}
        found["proxy"] = self.usage()
        return found

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM: the child stops the control plane. Whatever of it outlives the child
        (the child was killed) is killed by process id."""
        super().stop(timeout)
        for name, pid in self.pids.items():
            binary = next((k for k, v in COMPONENTS.items() if v == name), name)
            with contextlib.suppress(OSError):
                cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
                if binary.encode() in cmdline.split(b"\0", 1)[0]:
                    os.kill(pid, signal.SIGKILL)


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
