"""No false positives on real text and code: the Python stdlib and the venv's site-packages."""

from __future__ import annotations

import site
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from apikey_operator.leakscan.detector import find_keys

pytestmark = pytest.mark.unit

# Enough text to cover tens of thousands of long identifiers, hashes and base64
# blobs while keeping the module to a few seconds.
CAP_BYTES = 24 * 1024 * 1024
SUFFIXES = (".py", ".txt", ".md", ".rst", ".json", ".cfg", ".toml", ".yaml", ".yml", ".pem")


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.suffix in SUFFIXES and path.is_file() and not path.is_symlink():
            yield path


def _corpus(roots: list[Path]) -> Iterator[tuple[Path, str]]:
    budget = CAP_BYTES
    for root in roots:
        share = budget // 2 if root != roots[-1] else budget
        spent = 0
        for path in _files(root):
            if spent >= share:
                break
            text = path.read_text(encoding="utf-8", errors="replace")
            spent += len(text)
            yield path, text
        budget -= spent


def test_stdlib_and_site_packages_contain_no_false_positives() -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    packages = [Path(p) for p in site.getsitepackages() if Path(p).is_dir()]
    assert packages, "the venv's site-packages must exist"
    scanned_files = scanned_bytes = 0
    reported = []
    for path, text in _corpus([stdlib, *packages]):
        scanned_files += 1
        scanned_bytes += len(text)
        reported.extend((str(path), f.fingerprint) for f in find_keys(text))
    assert scanned_files > 1000
    assert scanned_bytes > CAP_BYTES // 2
    assert reported == []
