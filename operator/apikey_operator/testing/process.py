"""`apikey-operator run` as a real child process, for crash, peering and outage tests.

Unlike the in-thread operator, a process can be killed with SIGKILL mid-step and
two of them can compete for the same ApiKeys, as replicas in a cluster would.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

import yaml


class OperatorProcess:
    """One operator process against the API in `kubeconfig`; logs go to `log_path`."""

    def __init__(self, kubeconfig: str | pathlib.Path, workdir: str | pathlib.Path, *,
                 stores: Mapping[str, Mapping[str, object]] | None = None,
                 standalone: bool = True, extra_args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, name: str = "operator",
                 verbose: bool = True, usage: Mapping[str, object] | None = None) -> None:
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = pathlib.Path(kubeconfig)
        self.log_path = self.workdir / f"{name}.log"
        self.config_path = self.workdir / f"{name}-config.yaml"
        config: dict[str, object] = {"stores": dict(stores or {})}
        if usage is not None:
            config["usage"] = dict(usage)  # the configuration file's own rules apply
        self.config_path.write_text(yaml.safe_dump(config))
        self.standalone = standalone
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        # DEBUG logs every HTTP request: useful in tests, too costly for load runs.
        self.verbose = verbose
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, env: Mapping[str, str] | None = None) -> OperatorProcess:
        args = [sys.executable, "-m", "apikey_operator.cli", "run", "--config",
                str(self.config_path), "--log-format", "json", *self.extra_args]
        if self.verbose:
            args.append("--verbose")
        if self.standalone:
            args.append("--standalone")
        full_env = dict(os.environ)
        full_env.update({"KUBECONFIG": str(self.kubeconfig), "POD_NAMESPACE": "apikey-operator",
                         "PYTHONUNBUFFERED": "1"})
        full_env.pop("APIKEY_OPERATOR_CRASH_AT", None)
        full_env.update(self.env)
        full_env.update(env or {})
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                        env=full_env)
        log.close()
        self.starts += 1
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None if still running after `timeout` seconds."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no finalizers, like a node failure."""
        if self.alive and self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if not self.alive or self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive:
            time.sleep(0.05)
        self.kill()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
