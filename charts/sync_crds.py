"""Copy the CRDs from crds/ (the source of truth) into the chart's files/crds/.

Run after editing a CRD: `python charts/sync_crds.py`. With `--check` it changes
nothing and exits 1 when the chart's copies differ (tests/chart runs the same check).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "crds"
TARGET = ROOT / "charts" / "apikey-operator" / "files" / "crds"


def differences() -> list[str]:
    """File names that are missing, stale or extra in the chart's copy."""
    wanted = {p.name: p.read_bytes() for p in sorted(SOURCE.glob("*.yaml"))}
    present = {p.name: p.read_bytes() for p in sorted(TARGET.glob("*.yaml"))}
    names = sorted(wanted.keys() | present.keys())
    return [name for name in names if wanted.get(name) != present.get(name)]


def sync() -> list[str]:
    """Make the chart's copy equal to crds/; return the names it changed."""
    changed = differences()
    TARGET.mkdir(parents=True, exist_ok=True)
    for name in changed:
        source, target = SOURCE / name, TARGET / name
        if source.exists():
            target.write_bytes(source.read_bytes())
        else:
            target.unlink()
    return changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report differences, change nothing")
    args = parser.parse_args()
    if args.check:
        stale = differences()
        for name in stale:
            print(f"charts/apikey-operator/files/crds/{name} differs from crds/{name}")
        return 1 if stale else 0
    for name in sync():
        print(f"updated files/crds/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
