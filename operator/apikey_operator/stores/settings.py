"""A store's config block read field by field (`ConfigReader`), and the names a store
derives from an ApiKey kept inside their prefix (`check_ref_names`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from apikey_operator.stores.base import (
    KeyRef,
    StoreConfigError,
    StoreError,
)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def check_ref_names(ref: KeyRef) -> None:
    """Refuse names the API server would not allow, so a derived path cannot escape its prefix."""
    if not _DNS_LABEL.fullmatch(ref.namespace):
        raise StoreError(f"namespace {ref.namespace!r} is not a DNS-1123 label")
    if not _DNS_SUBDOMAIN.fullmatch(ref.name) or ".." in ref.name:
        raise StoreError(f"name {ref.name!r} is not a DNS-1123 subdomain")


class ConfigReader:
    """Reads one store's config block, collecting one message per bad field.

    Call `done()` last: it raises a single StoreConfigError listing every problem,
    so an operator with a bad config refuses to start and says everything at once.
    """

    def __init__(self, store_name: str, raw: Mapping[str, Any], prefix: str = "") -> None:
        self.store_name = store_name
        self.raw = raw
        self.prefix = prefix
        self.problems: list[str] = []
        self._seen: set[str] = {"type"}

    def problem(self, field: str, message: str) -> None:
        self.problems.append(f"{self.prefix}{field}: {message}")

    def _get(self, field: str) -> Any:
        self._seen.add(field)
        return self.raw.get(field)

    def string(
        self,
        field: str,
        default: str | None = None,
        *,
        pattern: re.Pattern[str] | None = None,
        hint: str = "",
    ) -> str:
        """A string field; '' when missing without a default (a problem is recorded)."""
        value = self._get(field)
        if value is None:
            if default is None:
                self.problem(field, "is required")
                return ""
            return default
        if not isinstance(value, str) or not value:
            self.problem(field, "must be a non-empty string")
            return default or ""
        if pattern is not None and not pattern.fullmatch(value):
            self.problem(field, f"{value!r} is not valid{': ' + hint if hint else ''}")
            return default or ""
        return value

    def optional_string(self, field: str) -> str | None:
        value = self._get(field)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            self.problem(field, "must be a string")
            return None
        return value

    def number(self, field: str, default: float, *, minimum: float, maximum: float) -> float:
        value = self._get(field)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(field, "must be a number")
            return default
        if not minimum <= value <= maximum:
            self.problem(field, f"must be between {minimum:g} and {maximum:g}, got {value:g}")
            return default
        return float(value)

    def integer(self, field: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self._get(field)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(field, "must be an integer")
            return default
        if not minimum <= value <= maximum:
            self.problem(field, f"must be between {minimum} and {maximum}, got {value}")
            return default
        return value

    def boolean(self, field: str, default: bool) -> bool:
        value = self._get(field)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(field, "must be true or false")
            return default
        return value

    def section(self, field: str, *, required: bool = False) -> ConfigReader:
        """A nested block, read with its own reader whose problems join this one's."""
        value = self._get(field)
        if value is None:
            if required:
                self.problem(field, "is required")
            value = {}
        elif not isinstance(value, Mapping):
            self.problem(field, "must be a mapping")
            value = {}
        child = ConfigReader(self.store_name, value, f"{self.prefix}{field}.")
        child.problems = self.problems
        child._seen.discard("type")
        return child

    def readable_file(self, field: str, default: str | None = None) -> str:
        """A path to a file that exists and can be read now."""
        path = self.string(field, default)
        if path:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                self.problem(field, f"cannot read {path}: {exc.strerror or type(exc).__name__}")
        return path

    def no_unknown_fields(self) -> None:
        """Record every field nobody read; `null` counts as absent, as YAML users expect."""
        for field, value in self.raw.items():
            if field not in self._seen and value is not None:
                self.problem(str(field), "is not a known field")

    def done(self) -> None:
        """Raise StoreConfigError listing every problem found, if any."""
        if self.problems:
            details = "; ".join(self.problems)
            raise StoreConfigError(f"store {self.store_name!r} is misconfigured: {details}")
