"""Run a kopf operator in a thread of its own against an emulated (or any) API server.

``kopf.operator()`` cancels the asyncio tasks created after it started, so it must not share
pytest-asyncio's loop: it gets a thread and a loop of its own here.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Collection
from types import TracebackType
from typing import Any, Self

import kopf


class KopfOperatorThread:
    """``kopf.operator()`` for ``registry`` in a daemon thread, logged in to ``server_url``.

    The login handler added to the registry connects over plain HTTP without credentials, as
    the emulator expects. ``start()`` returns when kopf reports readiness; ``stop()`` sets
    kopf's stop flag, joins the thread and re-raises what the operator raised, if anything.
    """

    def __init__(self, *, server_url: str, registry: kopf.OperatorRegistry,
                 settings: kopf.OperatorSettings | None = None,
                 namespaces: Collection[str] = (), clusterwide: bool = False,
                 standalone: bool = True, memo: Any = None,
                 default_namespace: str = "default", login: bool = True) -> None:
        self.server_url = server_url
        self.registry = registry
        self.settings = settings
        self.namespaces = tuple(namespaces)
        self.clusterwide = clusterwide or not namespaces
        self.standalone = standalone
        self.memo = memo
        self._stop_flag = threading.Event()
        self._ready_flag = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        if login:
            self._add_login(default_namespace)

    def _add_login(self, default_namespace: str) -> None:
        server_url = self.server_url

        @kopf.on.login(registry=self.registry)
        def login_to_emulator(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=server_url, insecure=True,
                                       default_namespace=default_namespace)

    def start(self, timeout: float = 15.0) -> Self:
        """Start the operator; raises if it failed or did not get ready in time."""
        if self._thread is not None:
            raise RuntimeError("the operator thread is already started")
        self._thread = threading.Thread(target=self._run, name="kopf-operator", daemon=True)
        self._thread.start()
        deadline_step = 0.05
        waited = 0.0
        while not self._ready_flag.wait(deadline_step):
            waited += deadline_step
            if self._failure is not None or not self._thread.is_alive():
                raise RuntimeError("the kopf operator stopped during start") from self._failure
            if waited >= timeout:
                raise TimeoutError("the kopf operator did not get ready in time")
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the operator and join its thread; re-raises the operator's failure."""
        thread = self._thread
        if thread is None:
            return
        self._stop_flag.set()
        thread.join(timeout)
        self._thread = None
        if thread.is_alive():
            raise TimeoutError("the kopf operator did not stop in time")
        if self._failure is not None:
            raise RuntimeError("the kopf operator failed") from self._failure

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(kopf.operator(
                    registry=self.registry, settings=self.settings, standalone=self.standalone,
                    clusterwide=self.clusterwide, namespaces=self.namespaces,
                    stop_flag=self._stop_flag, ready_flag=self._ready_flag, memo=self.memo))
        except BaseException as exc:  # reported by stop(); a thread cannot raise to its caller
            self._failure = exc
        finally:
            loop.close()
