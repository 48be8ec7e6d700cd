"""Run the emulated API server in a background thread with its own event loop.

Usable from synchronous pytest tests and from a CLI sandbox. Object reads and writes from
other threads are marshalled onto the emulator's loop, so they are as safe as API requests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import pathlib
import threading
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

from apikey_operator.testing import kube_patches
from apikey_operator.testing.emulator import ApiServerEmulator, Body, serve
from apikey_operator.testing.kube_traffic import Traffic
from apikey_operator.testing.kubeconfig import write_kubeconfig

P = ParamSpec("P")
T = TypeVar("T")


class EmulatorRunner:
    """An :class:`ApiServerEmulator` served on a loopback port by a daemon thread.

    ``namespaces`` are created at start. ``start()`` returns once the port accepts
    connections; ``stop()`` ends watch streams and the server, then joins the thread. A runner
    starts once. The object methods mirror the emulator's and may be called from any thread.
    """

    def __init__(self, emulator: ApiServerEmulator | None = None, *,
                 crd_paths: Sequence[str | pathlib.Path] = (),
                 namespaces: Sequence[str] = ("default",),
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.emulator = emulator if emulator is not None else ApiServerEmulator(
            crd_paths=[str(p) for p in crd_paths])
        self._namespaces = tuple(namespaces)
        self._host = host
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._url: str | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Self:
        """Start serving; raises what the server raised if it could not start."""
        if self._thread is not None:
            raise RuntimeError("the emulator runner is already started")
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("the emulated API server did not start in time")
        if self._failure is not None:
            raise RuntimeError("the emulated API server failed to start") from self._failure
        for namespace in self._namespaces:
            self.call(self.emulator.ensure_namespace, namespace)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and join the thread (idempotent)."""
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is None or stop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError("the emulated API server did not stop in time")
        self._thread = None
        self._url = None
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start(); the thread must not die silently
            self._failure = exc
            self._started.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self.emulator, self._host, self._port) as url:
            self._url = url
            self._started.set()
            await self._stop.wait()

    # --- access ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:41234``."""
        if self._url is None:
            raise RuntimeError("the emulator runner is not started")
        return self._url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def traffic(self) -> Traffic:
        """Request counts and fault injection (thread-safe by itself)."""
        return self.emulator.traffic

    def write_kubeconfig(self, path: str | pathlib.Path, *,
                         namespace: str = "default") -> pathlib.Path:
        """Write a kubeconfig pointing at this emulator; returns its path."""
        return write_kubeconfig(path, self.url, namespace=namespace)

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the emulator's loop thread and return its result."""
        loop = self._loop
        if loop is None or self._url is None:
            raise RuntimeError("the emulator runner is not started")
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed over to the calling thread
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(timeout=30)

    def get_object(self, resource: str, namespace: str | None, name: str) -> Body | None:
        """The object (a copy), or None if absent."""
        return self.call(self.emulator.get_object, resource, namespace, name)

    def list_objects(self, resource: str, namespace: str | None = None, *,
             label_selector: str | None = None, field_selector: str | None = None) -> list[Body]:
        """The matching objects (copies)."""
        return self.call(lambda: self.emulator.list_objects(
            resource, namespace, label_selector=label_selector, field_selector=field_selector))

    def create_object(self, body: Mapping[str, Any], *, keep_status: bool = True) -> Body:
        """Create an object like a POST (a given ``status`` is kept by default, for seeding)."""
        return self.call(lambda: self.emulator.create_object(body, keep_status=keep_status))

    def replace_object(self, body: Mapping[str, Any], *, subresource: str | None = None) -> Body:
        """Replace an object like a PUT."""
        return self.call(lambda: self.emulator.replace_object(body, subresource=subresource))

    def patch_object(self, resource: str, namespace: str | None, name: str, patch: Any, *,
              patch_type: str = kube_patches.MERGE, subresource: str | None = None) -> Body:
        """Patch an object like a PATCH with ``patch_type`` as the content type."""
        return self.call(lambda: self.emulator.patch_object(
            resource, namespace, name, patch, patch_type=patch_type, subresource=subresource))

    def delete_object(self, resource: str, namespace: str | None, name: str, *,
               propagation: str = "Background") -> Body:
        """Delete an object like a DELETE (finalizers only mark it)."""
        return self.call(lambda: self.emulator.delete_object(
            resource, namespace, name, propagation=propagation))

    def ensure_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> Body:
        """Create the Namespace if absent, applying labels either way."""
        return self.call(self.emulator.ensure_namespace, name, labels)

    def cut_watches(self, resource: str | None = None) -> int:
        """End the open watch streams (clients re-watch); returns how many were cut."""
        return self.call(self.emulator.cut_watches, resource)
