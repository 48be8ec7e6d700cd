"""Reading the hostile-input corpus: one YAML file per case, its expected outcome in its header.

A case file starts with comment lines: a one-line description, then
``# expect: {...}`` (JSON) and optionally ``# setup: {...}``. ``$NS`` in the body
is replaced by the namespace the runner gives the case. The body is one or more
YAML documents applied in order; which one is under test depends on the outcome:

* ``rejected``: the last document is refused by the API server with ``status``
  (the message names ``field``); the earlier ones are setup;
* ``condition``: the ApiKey ``name`` (default: the last ApiKey) ends up with the
  condition ``type``/``status``/``reason`` and a message containing ``message``;
* ``ready``: the ApiKey ``name`` becomes Ready at ``version`` (default 1);
* ``invalid-yaml``: the file does not even parse (a client refuses it).

When the ApiKey under test appears more than once, the earlier documents are setup (each
applied and Ready in turn) and the last is an update of its spec: nothing but that ApiKey may
change then, neither its Secret nor its store entry.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass
from typing import Any

import yaml

CASES_DIR = pathlib.Path(__file__).parent / "cases"
OUTCOMES = ("rejected", "condition", "ready", "invalid-yaml")


@dataclass(frozen=True)
class CorpusCase:
    path: pathlib.Path
    description: str
    expect: dict[str, Any]
    setup: dict[str, Any]
    text: str

    @property
    def id(self) -> str:
        return self.path.stem

    @property
    def namespace(self) -> str:
        return f"c{self.path.stem.split('-', 1)[0]}"

    @property
    def outcome(self) -> str:
        return str(self.expect["outcome"])

    def body_text(self) -> str:
        return self.text.replace("$NS", self.namespace)

    def documents(self) -> list[Any]:
        """The parsed documents (raises yaml.YAMLError for the invalid-yaml cases)."""
        return list(yaml.safe_load_all(self.body_text()))


def load_case(path: pathlib.Path) -> CorpusCase:
    text = path.read_text(encoding="utf-8")
    header: list[str] = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line[1:].strip())
    fields: dict[str, dict[str, Any]] = {}
    for line in header[1:]:
        label, _, value = line.partition(":")
        fields[label.strip()] = json.loads(value)
    return CorpusCase(path=path, description=header[0] if header else "",
                      expect=fields.get("expect", {}), setup=fields.get("setup", {}), text=text)


def load_all() -> list[CorpusCase]:
    return [load_case(p) for p in sorted(CASES_DIR.glob("*.yaml"))]
