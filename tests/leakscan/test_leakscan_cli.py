"""`apikey-operator scan` (leakscan.cli.main): file:line and fingerprint of leaks, exit codes."""

from __future__ import annotations

import base64
import random
import subprocess
import sys
from pathlib import Path

import pytest

from apikey_operator import keys
from apikey_operator.leakscan import cli

pytestmark = pytest.mark.unit


def _key(encoding: keys.Encoding = "base62", prefix: str = "bill_", length: int = 32) -> str:
    return keys.generate(keys.KeyFormat(length=length, encoding=encoding, prefix=prefix))


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A small source tree with leaks at known places; returns it and {"path:line": key}."""
    leaks: dict[str, str] = {}
    root = tmp_path / "repo"
    (root / "src" / "app").mkdir(parents=True)
    (root / "deploy").mkdir()
    k1, k2, k3, k4 = _key(), _key("hex", "ops_", 16), _key("base64url", "sk_live_", 64), _key()
    (root / "src" / "app" / "settings.py").write_text(
        f'import os\n\nDEBUG = False\nAPI_KEY = "{k1}"\n', encoding="utf-8"
    )
    (root / "deploy" / "values.yaml").write_text(
        f"image: app:1.0\nenv:\n  - name: TOKEN\n    value: {k2}\n  - name: OTHER\n"
        f"    value: {k3}\n",
        encoding="utf-8",
    )
    (root / "README.md").write_text("# app\n\nNothing secret here.\n", encoding="utf-8")
    (root / "notes.txt").write_text(f"first {k4} second {k1}\n", encoding="utf-8")
    leaks["src/app/settings.py:4"] = k1
    leaks["deploy/values.yaml:4"] = k2
    leaks["deploy/values.yaml:6"] = k3
    leaks["notes.txt:1"] = k4
    return root, leaks


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_every_leak_is_reported_with_file_line_and_fingerprint(
    repo: tuple[Path, dict[str, str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, leaks = repo
    monkeypatch.chdir(root)
    status, out, err = _run(capsys, ".")
    assert status == 1
    lines = sorted(out.splitlines())
    expected = [f"{where}: apikey leak ({keys.fingerprint(key)})" for where, key in leaks.items()]
    # notes.txt line 1 holds two keys: both are reported on that line.
    expected.append(
        f"notes.txt:1: apikey leak ({keys.fingerprint(leaks['src/app/settings.py:4'])})"
    )
    assert lines == sorted(expected)
    assert "leaked key(s)" in err


def test_the_key_itself_is_never_printed(
    repo: tuple[Path, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, leaks = repo
    status, out, err = _run(capsys, str(root))
    assert status == 1
    for key in leaks.values():
        assert key not in out
        assert key not in err


def test_a_key_in_a_secret_manifest_is_reported_by_its_fingerprint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = _key("base62", "pay_", 24)
    encoded = base64.b64encode(key.encode()).decode()
    (tmp_path / "secret.yaml").write_text(
        f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: billing\ndata:\n  api-key: {encoded}\n",
        encoding="utf-8",
    )
    status, out, _ = _run(capsys, str(tmp_path / "secret.yaml"))
    assert status == 1
    assert out == f"{tmp_path / 'secret.yaml'}:6: apikey leak ({keys.fingerprint(key)})\n"
    assert encoded not in out


def test_a_clean_tree_exits_zero_silently(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.py").write_text("print('hello')\n", encoding="utf-8")
    unprefixed = keys.generate(keys.KeyFormat())
    (tmp_path / "b.env").write_text(f"KEY={unprefixed}\n", encoding="utf-8")
    assert _run(capsys, str(tmp_path)) == (0, "", "")


def test_mangled_keys_are_not_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = _key()
    lines = []
    for index in range(len(key)):
        replacement = "0" if key[index] != "0" else "1"
        lines.append(key[:index] + replacement + key[index + 1 :])
    (tmp_path / "mangled.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert _run(capsys, str(tmp_path / "mangled.txt")) == (0, "", "")


def test_git_folders_binary_and_huge_files_are_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = _key()
    (tmp_path / ".git" / "objects").mkdir(parents=True)
    (tmp_path / ".git" / "objects" / "packed").write_text(key, encoding="utf-8")
    (tmp_path / "image.bin").write_bytes(b"\x89PNG\0\0" + key.encode() + b"\0")
    (tmp_path / "dump.sql").write_text("x" * 2048 + "\n" + key + "\n", encoding="utf-8")
    (tmp_path / "small.txt").write_text(key + "\n", encoding="utf-8")
    status, out, _ = _run(capsys, "--max-bytes", "1024", str(tmp_path))
    assert status == 1
    assert out.splitlines() == [
        f"{tmp_path / 'small.txt'}:1: apikey leak ({keys.fingerprint(key)})"
    ]


def test_explicit_files_are_scanned_once_even_when_named_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "f.txt").write_text("\n\n" + _key() + "\n", encoding="utf-8")
    status, out, _ = _run(capsys, str(tmp_path / "f.txt"), str(tmp_path), str(tmp_path / "f.txt"))
    assert status == 1
    assert len(out.splitlines()) == 1
    assert out.startswith(f"{tmp_path / 'f.txt'}:3: apikey leak (sha256:")


def test_undecodable_bytes_do_not_stop_the_scan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = _key()
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n" + key.encode() + b"\n")
    status, out, _ = _run(capsys, str(tmp_path))
    assert status == 1
    assert ":2: apikey leak" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["/nonexistent/for/sure"], "no such file or directory: /nonexistent/for/sure"),
        (["--bogus", "."], "unrecognized arguments: --bogus"),
        (["--max-bytes", "0", "."], "--max-bytes must be positive"),
        (["--max-bytes", "many", "."], "invalid int value"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _run(capsys, *argv)
    assert status == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("apikey-operator scan: error: ")
    assert message in err


def test_without_a_path_the_current_directory_is_scanned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = _key()
    (tmp_path / "k.txt").write_text(key + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    status, out, _ = _run(capsys)
    assert (status, out) == (1, f"k.txt:1: apikey leak ({keys.fingerprint(key)})\n")


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "--help")
    assert status == 0
    assert "usage: apikey-operator scan" in out


def test_plugin_path_points_at_the_detect_secrets_plugin(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = _run(capsys, "--plugin-path")
    assert status == 0
    path = Path(out.strip())
    assert path.name == "detect_secrets_plugin.py"
    assert "class ApiKeyOperatorDetector" in path.read_text(encoding="utf-8")


def test_runs_as_a_module(tmp_path: Path) -> None:
    key = _key("hex", "ci_", 20)
    (tmp_path / "leak.env").write_text(f"A=1\nKEY={key}\n", encoding="utf-8")
    found = subprocess.run(
        [sys.executable, "-m", "apikey_operator.leakscan", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert found.returncode == 1
    assert found.stdout == f"{tmp_path / 'leak.env'}:2: apikey leak ({keys.fingerprint(key)})\n"
    assert key not in found.stdout + found.stderr
    (tmp_path / "leak.env").write_text("A=1\n", encoding="utf-8")
    clean = subprocess.run(
        [sys.executable, "-m", "apikey_operator.leakscan", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (clean.returncode, clean.stdout) == (0, "")
    usage = subprocess.run(
        [sys.executable, "-m", "apikey_operator.leakscan", "--max-bytes", "-1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert usage.returncode == 2
    assert usage.stderr.startswith("python -m apikey_operator.leakscan: error:")


def test_keys_of_every_format_in_a_tree_are_found_at_their_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], all_key_formats: list[keys.KeyFormat]
) -> None:
    rng = random.Random(6)
    expected = set()
    for number, fmt in enumerate(all_key_formats):
        folder = tmp_path / f"pkg{number % 7}"
        folder.mkdir(exist_ok=True)
        lines = [f"line {i} of ordinary text = {i * 31}" for i in range(rng.randint(1, 40))]
        index = rng.randrange(len(lines) + 1)
        key = keys.generate(fmt)
        lines.insert(index, rng.choice(["TOKEN={}", "key: '{}'", '"{}",', "Bearer {}"]).format(key))
        path = folder / f"f{number}.cfg"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        expected.add(f"{path}:{index + 1}: apikey leak ({keys.fingerprint(key)})")
    status, out, _ = _run(capsys, str(tmp_path))
    assert status == 1
    assert set(out.splitlines()) == expected
    assert len(out.splitlines()) == len(expected)
