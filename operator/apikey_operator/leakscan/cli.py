"""`apikey-operator scan PATH...`: report leaked prefixed keys in files, by fingerprint only.

Exit status: 0 nothing found, 1 at least one key found, 2 usage error. Output lines
are `path:line: apikey leak (sha256:xxxxxxxxxxxx)`; the key itself is never printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn

from apikey_operator.leakscan.detector import find_keys

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
SKIPPED_DIRS = frozenset({".git", ".hg", ".svn"})
_SNIFF_BYTES = 8192


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _parser(prog: str) -> _Parser:
    parser = _Parser(
        prog=prog,
        description="Find leaked apikey-operator keys (prefixed, checksum-verified) in files.",
        epilog=(
            "With --revoke, each live key found is also revoked and timed "
            "(see: apikey-operator scan --revoke --help)."
            if prog == "apikey-operator scan"
            else None
        ),
    )
    parser.add_argument(
        "paths", nargs="*", metavar="PATH", help="files or directories (default: .)"
    )
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        help=f"skip files larger than this (default {DEFAULT_MAX_BYTES})",
    )
    parser.add_argument(
        "--plugin-path",
        action="store_true",
        help="print the path of the detect-secrets plugin module and exit",
    )
    return parser


def iter_files(path: Path) -> Iterator[Path]:
    """`path` itself if it is a file, else the regular files under it, skipping VCS folders.

    Symbolic links met while walking are not followed, so a scan stays inside the tree.
    """
    if not path.is_dir():
        yield path
        return
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in sorted(files):
            candidate = Path(root, name)
            if not candidate.is_symlink() and candidate.is_file():
                yield candidate


def read_text(path: Path, max_bytes: int) -> str | None:
    """The file's text, or None for a file that is binary or larger than `max_bytes`."""
    if path.stat().st_size > max_bytes:
        return None
    data = path.read_bytes()
    if b"\0" in data[:_SNIFF_BYTES]:
        return None
    # Keys are ASCII; undecodable bytes elsewhere must not stop the scan.
    return data.decode("utf-8", errors="replace")


def scan_text(text: str) -> Iterator[tuple[int, str]]:
    """(line number, fingerprint) of every verified key in `text`, lines counted from 1."""
    # One pass over the whole text (runs never cross a newline), then offsets -> lines.
    line, counted_to = 1, 0
    for finding in find_keys(text):
        line += text.count("\n", counted_to, finding.start)
        counted_to = finding.start
        yield line, finding.fingerprint


def _plugin_path() -> str:
    return str(Path(__file__).with_name("detect_secrets_plugin.py"))


def main(argv: Sequence[str], *, prog: str = "apikey-operator scan") -> int:
    """Scan the paths in `argv`; print one line per leaked key; return the exit status."""
    try:
        args = _parser(prog).parse_args(list(argv))
    except _UsageError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else 0
    if args.plugin_path:
        print(_plugin_path())
        return 0
    if args.max_bytes < 1:
        print(f"{prog}: error: --max-bytes must be positive", file=sys.stderr)
        return 2
    roots = [Path(p) for p in args.paths or ["."]]
    missing = [str(p) for p in roots if not p.exists()]
    if missing:
        print(f"{prog}: error: no such file or directory: {missing[0]}", file=sys.stderr)
        return 2

    leaks = 0
    seen: set[Path] = set()
    for root in roots:
        for path in iter_files(root):
            real = path.resolve()
            if real in seen:
                continue
            seen.add(real)
            try:
                text = read_text(path, args.max_bytes)
            except OSError as error:
                print(f"{path}: skipped: {error.strerror or error}", file=sys.stderr)
                continue
            if text is None:
                continue
            for line, fingerprint in scan_text(text):
                leaks += 1
                print(f"{path}:{line}: apikey leak ({fingerprint})")
    if leaks:
        print(
            f"{prog}: {leaks} leaked key(s): revoke them (apikey-operator revoke NAMESPACE/NAME)"
            " and remove them from the files and their history",
            file=sys.stderr,
        )
        return 1
    return 0
