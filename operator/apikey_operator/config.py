"""The operator's settings and store configuration, validated once at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from apikey_operator.stores import Store, StoreConfigError, factory_for

DEFAULT_OPERATOR_NAMESPACE = "apikey-operator"
CONFIG_ENV = "APIKEY_OPERATOR_CONFIG"


class ConfigError(Exception):
    """The configuration is invalid; the message lists every problem, one per line."""


@dataclass(frozen=True)
class Settings:
    operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    standalone: bool = False
    peering_name: str = "apikey-operator"
    metrics_port: int | None = None
    health_port: int | None = None
    log_format: Literal["text", "json"] = "text"
    store_configs: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: {"kubernetes": {"type": "kubernetes"}}
    )
    max_concurrent_store_calls: int = 16


def load_store_configs(path: str | None) -> dict[str, Mapping[str, Any]]:
    """Read and shape-check the YAML file; the built-in `kubernetes` store is always present."""
    configs: dict[str, Mapping[str, Any]] = {"kubernetes": {"type": "kubernetes"}}
    if not path:
        return configs
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML ({exc})") from None
    if raw is None:
        return configs
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config file {path}: must be a mapping with a 'stores' key")
    unknown = set(raw) - {"stores"}
    if unknown:
        raise ConfigError(f"config file {path}: unknown top-level key(s) {sorted(unknown)}")
    stores = raw.get("stores") or {}
    if not isinstance(stores, Mapping):
        raise ConfigError(f"config file {path}: 'stores' must be a mapping of name to store")
    problems = []
    for name, block in stores.items():
        if not isinstance(name, str) or not name or len(name) > 63:
            problems.append(f"stores.{name}: store names are 1..63 characters")
        elif not isinstance(block, Mapping):
            problems.append(f"stores.{name}: must be a mapping with a 'type'")
        elif not isinstance(block.get("type"), str):
            problems.append(f"stores.{name}.type: missing (kubernetes, vault, aws-secrets-manager)")
        else:
            configs[name] = block
    if problems:
        raise ConfigError("\n".join(problems))
    return configs


def build_stores(settings: Settings) -> dict[str, Store]:
    """Construct every configured store, collecting one message per bad store."""
    stores: dict[str, Store] = {}
    problems = []
    for name, block in settings.store_configs.items():
        try:
            factory = factory_for(str(block["type"]))
            stores[name] = factory(name, block, settings.operator_namespace)
        except StoreConfigError as exc:
            problems.append(f"stores.{name}: {exc}" if not str(exc).startswith("stores.")
                            else str(exc))
    if problems:
        raise ConfigError("\n".join(problems))
    return stores


def settings_from_args(
    config_path: str | None,
    namespaces: Sequence[str],
    standalone: bool,
    metrics_port: int | None,
    health_port: int | None,
    log_format: Literal["text", "json"],
) -> Settings:
    path = config_path or os.environ.get(CONFIG_ENV) or None
    return Settings(
        operator_namespace=os.environ.get("POD_NAMESPACE") or DEFAULT_OPERATOR_NAMESPACE,
        namespaces=tuple(namespaces),
        standalone=standalone,
        metrics_port=metrics_port,
        health_port=health_port,
        log_format=log_format,
        store_configs=load_store_configs(path),
    )
