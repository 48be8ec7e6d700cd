"""The pre-commit hook: the manifest is valid, and a commit with a leaked key is blocked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from apikey_operator import keys

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST = REPO_ROOT / ".pre-commit-hooks.yaml"
PRE_COMMIT = Path(sys.executable).with_name("pre-commit")

needs_pre_commit = pytest.mark.skipif(
    not PRE_COMMIT.exists() or shutil.which("git") is None,
    reason="pre-commit (pip install pre-commit) and git are needed",
)


def _hook() -> dict[str, object]:
    hooks = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    (hook,) = (h for h in hooks if h["id"] == "apikey-leak-scan")
    assert isinstance(hook, dict)
    return hook


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, timeout=60, check=check
    )


def _env(tmp_path: Path) -> dict[str, str]:
    # A private pre-commit cache and a git identity, independent of the user's setup.
    return {
        **os.environ,
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }


def test_the_manifest_defines_the_hook_as_documented() -> None:
    hook = _hook()
    assert hook["language"] == "python"
    assert hook["entry"] == "apikey-operator scan"
    assert hook.get("pass_filenames", True) is True


@needs_pre_commit
def test_pre_commit_accepts_the_manifest() -> None:
    result = subprocess.run(
        [str(PRE_COMMIT), "validate-manifest", str(MANIFEST)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def sample_repo(tmp_path: Path) -> Path:
    """A git repo whose pre-commit config runs the manifest's hook with this checkout's scanner.

    The hook keeps the manifest's id, name, file types and filename passing; only how it
    is installed differs (`system` with this interpreter instead of a pip-built venv),
    so the test needs no network and no released package.
    """
    repo = tmp_path / "sample"
    repo.mkdir()
    env = _env(tmp_path)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, env=env, check=True, timeout=60)
    hook = _hook()
    local = {key: hook[key] for key in ("id", "name", "types", "pass_filenames") if key in hook} | {
        "language": "system",
        "entry": f"{sys.executable} -m apikey_operator.leakscan",
    }
    config = {"repos": [{"repo": "local", "hooks": [local]}]}
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (repo / "app.py").write_text("print('hello')\n", encoding="utf-8")
    subprocess.run(["git", "add", "."], cwd=repo, env=env, check=True, timeout=60)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=repo, env=env, check=True, timeout=60)
    installed = subprocess.run(
        [str(PRE_COMMIT), "install"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return repo


@needs_pre_commit
def test_a_commit_with_a_leaked_key_fails_and_passes_once_it_is_removed(
    sample_repo: Path, tmp_path: Path
) -> None:
    env = _env(tmp_path)
    key = keys.generate(keys.KeyFormat(prefix="bill_"))
    (sample_repo / "settings.py").write_text(f"DEBUG = True\nAPI_KEY = '{key}'\n", "utf-8")
    subprocess.run(["git", "add", "settings.py"], cwd=sample_repo, env=env, check=True, timeout=60)

    run = subprocess.run(
        [str(PRE_COMMIT), "run"],
        cwd=sample_repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"settings.py:2: apikey leak ({keys.fingerprint(key)})" in run.stdout
    assert key not in run.stdout + run.stderr

    commit = subprocess.run(
        ["git", "commit", "-qm", "leak"],
        cwd=sample_repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert commit.returncode != 0
    assert _git(sample_repo, "log", "--oneline").stdout.count("\n") == 1

    (sample_repo / "settings.py").write_text(
        "import os\nDEBUG = True\nAPI_KEY = os.environ['API_KEY']\n", "utf-8"
    )
    subprocess.run(["git", "add", "settings.py"], cwd=sample_repo, env=env, check=True, timeout=60)
    clean = subprocess.run(
        [str(PRE_COMMIT), "run"],
        cwd=sample_repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr
    commit = subprocess.run(
        ["git", "commit", "-qm", "no leak"],
        cwd=sample_repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert commit.returncode == 0, commit.stdout + commit.stderr


def _scan_subcommand_is_wired() -> bool:
    console = Path(sys.executable).with_name("apikey-operator")
    if not console.exists():
        return False
    probe = subprocess.run(
        [str(console), "scan", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    return probe.returncode == 0


@pytest.mark.slow
@needs_pre_commit
@pytest.mark.skipif(
    not _scan_subcommand_is_wired(), reason="`apikey-operator scan` is not wired into the CLI yet"
)
def test_the_published_hook_installs_and_blocks_a_leak(tmp_path: Path) -> None:
    """The manifest as users consume it: pre-commit pip-installs this repository into a venv."""
    env = _env(tmp_path)
    repo = tmp_path / "consumer"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, env=env, check=True, timeout=60)
    key = keys.generate(keys.KeyFormat(encoding="hex", prefix="ops_", length=16))
    (repo / "deploy.env").write_text(f"TOKEN={key}\n", encoding="utf-8")
    subprocess.run(["git", "add", "."], cwd=repo, env=env, check=True, timeout=60)
    leaked = subprocess.run(
        [str(PRE_COMMIT), "try-repo", str(REPO_ROOT), "apikey-leak-scan", "--all-files"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert leaked.returncode == 1, leaked.stdout + leaked.stderr
    assert f"deploy.env:1: apikey leak ({keys.fingerprint(key)})" in leaked.stdout
    (repo / "deploy.env").write_text("TOKEN=\n", encoding="utf-8")
    subprocess.run(["git", "add", "."], cwd=repo, env=env, check=True, timeout=60)
    clean = subprocess.run(
        [str(PRE_COMMIT), "try-repo", str(REPO_ROOT), "apikey-leak-scan", "--all-files"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr
