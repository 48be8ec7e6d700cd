"""The detect-secrets plugin, through detect-secrets' own API and its real command line."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from detect_secrets import SecretsCollection
from detect_secrets.settings import transient_settings

from apikey_operator import keys
from apikey_operator.leakscan import detect_secrets_plugin

pytestmark = pytest.mark.unit

PLUGIN_PATH = Path(detect_secrets_plugin.__file__).resolve()
SECRET_TYPE = detect_secrets_plugin.ApiKeyOperatorDetector.secret_type
DETECT_SECRETS = Path(sys.executable).with_name("detect-secrets")


def _settings() -> dict[str, object]:
    """Only our plugin, loaded from its file the way a baseline or `--plugin` names it."""
    return {
        "plugins_used": [{"name": "ApiKeyOperatorDetector", "path": f"file://{PLUGIN_PATH}"}],
    }


def _write_sample(root: Path) -> tuple[dict[int, str], list[str]]:
    """Keys of every encoding on known lines, and their mangled twins on others."""
    lines = ["# config", "name: billing"]
    found: dict[int, str] = {}
    mangled: list[str] = []
    for encoding in keys.ENCODINGS:
        for prefix, length in (("bill_", 32), ("sk_live_", 16), ("x", 128)):
            key = keys.generate(keys.KeyFormat(length=length, encoding=encoding, prefix=prefix))
            lines.append(f"client_id: {key}")  # detect-secrets' id heuristic must not drop it
            found[len(lines)] = key
            index = len(key) // 2
            twin = key[:index] + ("0" if key[index] != "0" else "1") + key[index + 1 :]
            lines.append(f"api_key = '{twin}'")
            mangled.append(twin)
    lines.append("shaped, random checksum: bill_" + "A" * 43 + "000000")
    (root / "settings.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return found, mangled


def test_the_api_reports_verified_keys_on_their_lines_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found, _ = _write_sample(tmp_path)
    monkeypatch.chdir(tmp_path)
    with transient_settings(_settings()):
        secrets = SecretsCollection()
        secrets.scan_file("settings.yaml")
    reported = [(s.line_number, s.secret_value, s.type) for _, s in secrets]
    assert sorted(reported) == sorted((line, key, SECRET_TYPE) for line, key in found.items())


def test_the_api_reports_nothing_for_an_ordinary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("ordinary.py").write_text(
        Path(keys.__file__).read_text(encoding="utf-8")
        + f"\nUNPREFIXED = '{keys.generate(keys.KeyFormat(encoding='hex'))}'\n",
        encoding="utf-8",
    )
    with transient_settings(_settings()):
        secrets = SecretsCollection()
        secrets.scan_file("ordinary.py")
    assert list(secrets) == []


def test_the_plugin_analyzes_strings_directly() -> None:
    key = keys.generate(keys.KeyFormat(prefix="bill_"))
    plugin = detect_secrets_plugin.ApiKeyOperatorDetector()
    assert list(plugin.analyze_string(f'"{key}" and "{key[:-1]}0"')) in ([key], [key, key])
    assert list(plugin.analyze_string("bill_" + "A" * 43 + "000000")) == []


def test_a_base64_encoded_key_is_reported_as_written_in_the_line() -> None:
    key = keys.generate(keys.KeyFormat(prefix="bill_"))
    token = base64.b64encode(key.encode()).decode()
    plugin = detect_secrets_plugin.ApiKeyOperatorDetector()
    assert list(plugin.analyze_string(f"  api-key: {token}")) == [token]


def test_the_detect_secrets_command_line_loads_the_plugin(tmp_path: Path) -> None:
    found, mangled = _write_sample(tmp_path)
    result = subprocess.run(
        [str(DETECT_SECRETS), "scan", "--plugin", str(PLUGIN_PATH), "settings.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    baseline = json.loads(result.stdout)
    assert {"name": "ApiKeyOperatorDetector", "path": f"file://{PLUGIN_PATH}"} in baseline[
        "plugins_used"
    ]
    ours = [r for r in baseline["results"].get("settings.yaml", []) if r["type"] == SECRET_TYPE]
    assert sorted(r["line_number"] for r in ours) == sorted(found)
    # A baseline holds SHA-1 hashes of the secrets, never the keys themselves.
    for key in [*found.values(), *mangled]:
        assert key not in result.stdout


def test_the_detect_secrets_hook_blocks_a_new_key_against_a_baseline(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("print('clean')\n", encoding="utf-8")
    scan = subprocess.run(
        [str(DETECT_SECRETS), "scan", "--plugin", str(PLUGIN_PATH), "app.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    (tmp_path / ".secrets.baseline").write_text(scan.stdout, encoding="utf-8")
    hook = Path(sys.executable).with_name("detect-secrets-hook")
    clean = subprocess.run(
        [str(hook), "--baseline", ".secrets.baseline", "app.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr
    key = keys.generate(keys.KeyFormat(prefix="bill_"))
    (tmp_path / "app.py").write_text(f"print('clean')\nKEY = '{key}'\n", encoding="utf-8")
    leaked = subprocess.run(
        [str(hook), "--baseline", ".secrets.baseline", "app.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert leaked.returncode == 1
    assert SECRET_TYPE in leaked.stdout
    assert "app.py:2" in leaked.stdout
    assert key not in leaked.stdout
