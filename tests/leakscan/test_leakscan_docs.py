"""docs/leak-detection.md: its configuration snippets parse and its gitleaks rule matches keys."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from apikey_operator import keys

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[2] / "docs" / "leak-detection.md"
MANIFEST = DOC.parents[1] / ".pre-commit-hooks.yaml"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


def _gitleaks_config() -> dict[str, Any]:
    # The allowlists block continues the rule block, as the doc says.
    return tomllib.loads("\n".join(_blocks("toml")))


def test_the_pre_commit_snippets_use_the_published_hook_id() -> None:
    published = {hook["id"] for hook in yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))}
    configs = [yaml.safe_load(block) for block in _blocks("yaml")]
    assert len(configs) >= 2
    for config in configs:
        ids = {hook["id"] for repo in config["repos"] for hook in repo["hooks"]}
        assert ids == {"apikey-leak-scan"}
        assert ids <= published


def test_the_gitleaks_rule_is_valid_toml_with_keywords_and_a_secret_group() -> None:
    (rule,) = _gitleaks_config()["rules"]
    assert rule["keywords"] == ["bill_"]
    assert rule["secretGroup"] == 1
    assert len(rule["allowlists"]) == 2


@pytest.mark.parametrize("encoding", keys.ENCODINGS)
@pytest.mark.parametrize("length", [16, 32, 77, 128])
def test_the_gitleaks_regex_matches_every_key_with_its_prefix(
    encoding: keys.Encoding, length: int
) -> None:
    # Python's re agrees with Go's RE2 on this regex: no look-arounds, no backreferences.
    (rule,) = _gitleaks_config()["rules"]
    regex = re.compile(rule["regex"])
    for _ in range(50):
        key = keys.generate(keys.KeyFormat(length=length, encoding=encoding, prefix="bill_"))
        for line in (f'API_KEY="{key}"', f"token: {key}", key):
            match = regex.search(line)
            assert match is not None, line
            assert match.group(rule["secretGroup"]) == key


def test_the_gitleaks_regex_is_shape_only_as_documented() -> None:
    (rule,) = _gitleaks_config()["rules"]
    regex = re.compile(rule["regex"])
    key = keys.generate(keys.KeyFormat(prefix="bill_"))
    wrong_checksum = key[:-5] + ("00000" if key[-5:] != "00000" else "11111")
    assert regex.search(f"x = {wrong_checksum}")  # gitleaks cannot verify the CRC32
    assert not regex.search(f"x = {keys.generate(keys.KeyFormat(prefix='ops_'))}")
    assert not regex.search("x = bill_short0")


def test_the_default_format_regex_in_the_doc_matches_exactly_the_default_keys() -> None:
    text = DOC.read_text(encoding="utf-8")
    (pattern,) = re.findall(r"`(bill_\[0-9A-Za-z\]\{43\}[^`]*)`", text)
    for _ in range(50):
        assert re.fullmatch(pattern, keys.generate(keys.KeyFormat(prefix="bill_")))
    assert not re.fullmatch(pattern, keys.generate(keys.KeyFormat(prefix="bill_", length=33)))


def test_the_allowlist_example_covers_its_own_fixture_string() -> None:
    (rule,) = _gitleaks_config()["rules"]
    by_target = next(a for a in rule["allowlists"] if a.get("regexTarget") == "match")
    (allowed,) = by_target["regexes"]
    fixture = "bill_" + "0" * 43 + "000000"
    assert re.fullmatch(allowed, fixture)
    assert re.compile(rule["regex"]).search(f"x = {fixture}")
