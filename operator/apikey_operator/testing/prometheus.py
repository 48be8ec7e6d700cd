"""A real Prometheus server for usage-aware grace tests (the pinned build of
tools/build-go-tools prometheus), scraping the given targets every second.

    with PrometheusServer(targets=["127.0.0.1:8081"]) as prom:
        prom.url  # http://127.0.0.1:PORT, the operator's usage.prometheus.url

`stop()` then `start()` restarts it on the same port with its data (a TSDB in its work
directory); `pause()`/`resume()` make it hang, as an overloaded server would.
"""

from __future__ import annotations

import json
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from apikey_operator.testing.controlplane import find_tool
from apikey_operator.testing.servers import _Process, _ProcessServer, _wait, free_port

__all__ = ["PrometheusServer"]


class PrometheusServer(_ProcessServer):
    """`prometheus` on 127.0.0.1, scraping `targets` (host:port, path /metrics)."""

    def __init__(self, targets: Sequence[str] = (), *, scrape_interval: str = "1s",
                 port: int | None = None, binary: str | None = None,
                 startup_timeout: float = 60.0) -> None:
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.binary = binary or find_tool("prometheus", "prometheus")
        self.startup_timeout = startup_timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = tempfile.TemporaryDirectory(
            prefix="prometheus-")
        self.workdir = Path(self._tmp.name)
        self._process = _Process(self.workdir / "prometheus.log")

    def _write_config(self) -> Path:
        config = {
            "global": {"scrape_interval": self.scrape_interval,
                       "evaluation_interval": self.scrape_interval},
            "scrape_configs": [{"job_name": "consumers", "metrics_path": "/metrics",
                                "static_configs": [{"targets": self.targets}]}],
        }
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self) -> Self:
        if self._process.running:
            return self
        self._process.spawn([
            self.binary, f"--config.file={self._write_config()}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
        ])
        _wait("Prometheus", self._ready, self._process, self.startup_timeout)
        return self

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result of an instant query (for the tests' own checks)."""
        data = urllib.parse.urlencode({"query": promql}).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/query", data=data,  # noqa: S310
                                    timeout=5) as response:
            body = json.loads(response.read())
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def targets_up(self) -> int:
        """How many targets the last scrapes reached."""
        return sum(1 for sample in self.query("up") if sample["value"][1] == "1")

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
