"""The operator's settings and store configuration, validated once at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from apikey_operator import generators
from apikey_operator.generators import GeneratorConfigError, KeyGenerator
from apikey_operator.stores import Store, StoreConfigError, factory_for

if TYPE_CHECKING:
    from apikey_operator.kube import KubeClient

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
    generator_configs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    max_concurrent_store_calls: int = 16


def load_config(path: str | None) -> tuple[dict[str, Mapping[str, Any]],
                                           dict[str, Mapping[str, Any]]]:
    """Read and shape-check the YAML file: (stores, generators).

    The built-in `kubernetes` store is always present.
    """
    stores: dict[str, Mapping[str, Any]] = {"kubernetes": {"type": "kubernetes"}}
    if not path:
        return stores, {}
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML ({exc})") from None
    if raw is None:
        return stores, {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config file {path}: must be a mapping with a 'stores' key")
    unknown = set(raw) - {"stores", "generators"}
    if unknown:
        raise ConfigError(f"config file {path}: unknown top-level key(s) {sorted(unknown)}")
    problems: list[str] = []
    stores.update(_named_blocks(raw.get("stores"), "stores",
                                "kubernetes, vault, aws-secrets-manager, azure-key-vault",
                                problems))
    generator_blocks = _named_blocks(raw.get("generators"), "generators", "webhook", problems)
    if problems:
        raise ConfigError("\n".join(problems))
    return stores, generator_blocks


def _named_blocks(value: object, section: str, types: str,
                  problems: list[str]) -> dict[str, Mapping[str, Any]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(f"{section}: must be a mapping of name to settings")
        return {}
    blocks = {}
    for name, block in value.items():
        if not isinstance(name, str) or not name or len(name) > 63:
            problems.append(f"{section}.{name}: names are 1..63 characters")
        elif not isinstance(block, Mapping):
            problems.append(f"{section}.{name}: must be a mapping with a 'type'")
        elif not isinstance(block.get("type"), str):
            problems.append(f"{section}.{name}.type: missing ({types})")
        else:
            blocks[name] = block
    return blocks


def build_stores(settings: Settings, kube: KubeClient | None = None) -> dict[str, Store]:
    """Construct every configured store, collecting one message per bad store."""
    stores: dict[str, Store] = {}
    problems = []
    for name, block in settings.store_configs.items():
        try:
            factory = factory_for(str(block["type"]))
            stores[name] = factory(name, block, settings.operator_namespace, kube)
        except StoreConfigError as exc:
            problems.append(f"stores.{name}: {exc}" if not str(exc).startswith("stores.")
                            else str(exc))
    if problems:
        raise ConfigError("\n".join(problems))
    return stores


def build_generators(settings: Settings,
                     kube: KubeClient | None = None) -> dict[str, KeyGenerator]:
    """Construct every configured key generator, one message per bad one."""
    built: dict[str, KeyGenerator] = {}
    problems = []
    for name, block in settings.generator_configs.items():
        try:
            factory = generators.factory_for(str(block["type"]))
            built[name] = factory(name, block, settings.operator_namespace, kube)
        except GeneratorConfigError as exc:
            problems.append(f"generators.{name}: {exc}" if not str(exc).startswith("generators.")
                            else str(exc))
    if problems:
        raise ConfigError("\n".join(problems))
    return built


def settings_from_args(
    config_path: str | None,
    namespaces: Sequence[str],
    standalone: bool,
    metrics_port: int | None,
    health_port: int | None,
    log_format: Literal["text", "json"],
) -> Settings:
    path = config_path or os.environ.get(CONFIG_ENV) or None
    store_configs, generator_configs = load_config(path)
    return Settings(
        operator_namespace=os.environ.get("POD_NAMESPACE") or DEFAULT_OPERATOR_NAMESPACE,
        namespaces=tuple(namespaces),
        standalone=standalone,
        metrics_port=metrics_port,
        health_port=health_port,
        log_format=log_format,
        store_configs=store_configs,
        generator_configs=generator_configs,
    )
