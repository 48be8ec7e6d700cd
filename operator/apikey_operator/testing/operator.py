"""Run the real operator (kopf + our handlers) in a background thread, for tests and the sandbox.

kopf cancels asyncio tasks created after it starts, so it gets its own thread
and event loop rather than sharing pytest-asyncio's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import kopf

from apikey_operator import handlers
from apikey_operator.config import Settings
from apikey_operator.usage import UsageConfig


class CapturedLogs(logging.Handler):
    """Every formatted log line, all levels, for leak scans and assertions."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.lines.append(self.format(record))

    def text(self) -> str:
        return "\n".join(self.lines)


class OperatorThread:
    """The operator running against the API in `kubeconfig`, until `stop()`."""

    def __init__(self, kubeconfig: str, stores: Mapping[str, Mapping[str, Any]] | None = None,
                 generators: Mapping[str, Mapping[str, Any]] | None = None,
                 operator_namespace: str = "apikey-operator", standalone: bool = True,
                 peering_name: str = "apikey-operator",
                 usage: UsageConfig | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.settings = Settings(
            operator_namespace=operator_namespace,
            standalone=standalone,
            peering_name=peering_name,
            store_configs={"kubernetes": {"type": "kubernetes"}, **dict(stores or {})},
            generator_configs=dict(generators or {}),
            # Set here, not parsed from a file: tests may query more often than the
            # configuration file allows (its floor is the contract's once a minute).
            usage=usage,
        )
        self.logs = CapturedLogs()
        self._thread: threading.Thread | None = None
        self._stop: threading.Event = threading.Event()
        self._ready: threading.Event = threading.Event()
        self.error: BaseException | None = None
        # Built by start(): the handlers' shared state, for tests that look inside.
        self.operator: handlers.Operator | None = None

    def start(self, timeout: float = 30.0) -> OperatorThread:
        os.environ["KUBECONFIG"] = self.kubeconfig
        os.environ["POD_NAMESPACE"] = self.settings.operator_namespace
        logging.getLogger().addHandler(self.logs)
        logging.getLogger().setLevel(logging.DEBUG)
        self.operator = handlers.build_operator(self.settings)
        self._thread = threading.Thread(target=self._main, name="apikey-operator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"the operator did not become ready in {timeout}s: {self.error}")
        return self

    def _main(self) -> None:
        assert self.operator is not None, "start() builds the operator first"
        memo = self.operator.memo()
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(kopf.operator(
                clusterwide=True,
                standalone=self.settings.standalone,
                peering_name=None if self.settings.standalone else self.settings.peering_name,
                stop_flag=self._stop,
                ready_flag=self._ready,
                memo=memo,
            ))
        except BaseException as exc:
            self.error = exc
            self._ready.set()
        finally:
            loop.close()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        logging.getLogger().removeHandler(self.logs)

    def __enter__(self) -> OperatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_operator(kubeconfig: str, **kwargs: Any) -> Iterator[OperatorThread]:
    operator = OperatorThread(kubeconfig, **kwargs).start()
    try:
        yield operator
    finally:
        operator.stop()
