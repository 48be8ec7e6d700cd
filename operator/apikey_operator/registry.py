"""A registry of backend factories by config `type`, importing each backend on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

F = TypeVar("F", bound=Callable[..., object])


class Registry(Generic[F]):
    """Maps a config `type` to its factory; a backend module registers itself on import,
    so an SDK is only imported when a configured backend needs it."""

    def __init__(self, kind: str, modules: Mapping[str, str],
                 error: Callable[[str], Exception]) -> None:
        self.kind = kind
        self.modules = modules
        self._error = error
        self._factories: dict[str, F] = {}

    def register(self, type_name: str) -> Callable[[F], F]:
        """Register the factory for a config `type`; a second registration is a bug."""

        def decorate(factory: F) -> F:
            if type_name in self._factories:
                raise RuntimeError(f"{self.kind} type {type_name!r} is registered twice")
            self._factories[type_name] = factory
            return factory

        return decorate

    def factory_for(self, type_name: str) -> F:
        """The factory for a config `type`; a clear error for unknown or uninstalled ones."""
        if type_name not in self._factories:
            module = self.modules.get(type_name)
            if module is None:
                known = ", ".join(sorted(self.modules))
                raise self._error(f"unknown {self.kind} type {type_name!r} (known: {known})")
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise self._error(f"{self.kind} type {type_name!r} needs a package that is "
                                  f"not installed: {exc.name}") from None
        return self._factories[type_name]
