"""Fixtures that render the chart with Helm's real engine (see helm_engine.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helm_engine import Render, ensure_helm_python, render_chart


@pytest.fixture(scope="session")
def helm_python() -> str:
    return ensure_helm_python()


@pytest.fixture(scope="session")
def render(helm_python: str) -> Render:
    cache: dict[str, dict[str, Any]] = {}

    def _render(values: dict[str, Any]) -> dict[str, Any]:
        key = json.dumps(values, sort_keys=True)
        if key not in cache:
            cache[key] = render_chart(helm_python, values)
        return cache[key]

    return _render
