"""The operator's settings and store configuration, validated once at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from apikey_operator import generators
from apikey_operator.durations import DurationError, format_duration, parse_duration
from apikey_operator.generators import GeneratorConfigError, KeyGenerator
from apikey_operator.stores import Store, StoreConfigError, factory_for
from apikey_operator.usage import DEFAULT_INTERVAL, DEFAULT_TIMEOUT, DEFAULT_WINDOW, UsageConfig

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
    # Where the operator reads how often keys in their grace are verified (None: nowhere, no
    # grace ends early).
    usage: UsageConfig | None = None


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
    unknown = set(raw) - {"stores", "generators", "usage"}
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


def load_usage(path: str | None) -> UsageConfig | None:
    """The `usage:` section of the configuration file, validated (None when absent)."""
    if not path:
        return None
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None  # load_config has already said why
    if not isinstance(raw, Mapping) or raw.get("usage") is None:
        return None
    problems: list[str] = []
    config = parse_usage(raw["usage"], problems)
    if problems:
        raise ConfigError("\n".join(problems))
    return config


MAX_TIMEOUT = timedelta(seconds=60)


def parse_usage(value: object, problems: list[str]) -> UsageConfig | None:
    """`usage: {prometheus: {url, timeout, interval, window}}`, one problem per bad field.

    The interval cannot go below the contract's one query a minute; the window must cover at
    least one interval, or consecutive answers would leave time unseen."""
    if not isinstance(value, Mapping):
        problems.append("usage: must be a mapping with a 'prometheus' key")
        return None
    unknown = set(value) - {"prometheus"}
    if unknown:
        problems.append(f"usage: unknown key(s) {sorted(map(str, unknown))}")
    block = value.get("prometheus")
    if not isinstance(block, Mapping):
        problems.append("usage.prometheus: must be a mapping with a 'url'")
        return None
    unknown = set(block) - {"url", "timeout", "interval", "window"}
    if unknown:
        problems.append(f"usage.prometheus: unknown key(s) {sorted(map(str, unknown))}")
    url = block.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) \
            or len(url) > 2048:
        problems.append("usage.prometheus.url: must be an http:// or https:// URL")
    durations: dict[str, timedelta] = {}
    for name, default, low, high in (
            ("timeout", DEFAULT_TIMEOUT, timedelta(seconds=0.1), MAX_TIMEOUT),
            ("interval", DEFAULT_INTERVAL, DEFAULT_INTERVAL, timedelta(hours=1)),
            ("window", DEFAULT_WINDOW, timedelta(minutes=1), timedelta(days=1))):
        raw = block.get(name)
        if raw is None:
            durations[name] = default
            continue
        try:
            durations[name] = parse_duration(raw)
        except DurationError as exc:
            problems.append(f"usage.prometheus.{name}: {exc}")
            continue
        if not low <= durations[name] <= high:
            lowest = format_duration(low) if low >= timedelta(seconds=1) else "100ms"
            problems.append(f"usage.prometheus.{name}: {format_duration(durations[name])} is "
                            f"not within {lowest}..{format_duration(high)}")
    if {"interval", "window"} <= set(durations) and durations["window"] < durations["interval"]:
        problems.append(f"usage.prometheus.window: {format_duration(durations['window'])} is "
                        f"shorter than the interval {format_duration(durations['interval'])}")
    if problems or not isinstance(url, str):
        return None
    return UsageConfig(url=url, timeout=durations["timeout"], interval=durations["interval"],
                       window=durations["window"])


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
    usage = load_usage(path)
    return Settings(
        operator_namespace=os.environ.get("POD_NAMESPACE") or DEFAULT_OPERATOR_NAMESPACE,
        namespaces=tuple(namespaces),
        standalone=standalone,
        metrics_port=metrics_port,
        health_port=health_port,
        log_format=log_format,
        store_configs=store_configs,
        generator_configs=generator_configs,
        usage=usage,
    )
