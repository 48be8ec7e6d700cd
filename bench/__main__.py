"""``python -m bench [--sizes 100,1000] [--long] [--large 10000] [--smoke] [--out DIR]``.

Writes ``results.json``, ``RESULTS.md`` and the plots (``*.png``) into ``--out`` (default:
this folder) and prints the targets as a table. Issue 17's full measurement is
``--sizes 1000,5000 --large 10000``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time
from typing import Any

from bench import report
from bench.runner import Options, run_sync

HERE = pathlib.Path(__file__).resolve().parent


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--sizes", default=None,
                        help="comma-separated numbers of ApiKeys (default 100,1000)")
    parser.add_argument("--long", action="store_true", help="add N=5000")
    parser.add_argument("--large", type=int, default=None,
                        help="also the operator alone with this many keys: memory, idle, "
                             "revoke one at a time, start-up (issue 17: 10000; default none, "
                             "smoke 30)")
    parser.add_argument("--storm-keys", type=int, default=1000,
                        help="keys due at once in the rotation storm, at most N (default 1000)")
    parser.add_argument("--revoke-singles", type=int, default=None,
                        help="revokes one at a time per run, each a sample of the p99 "
                             "(default 100, smoke 3)")
    parser.add_argument("--revoke-many", type=int, default=None,
                        help="revokes at once (default 100, smoke 10)")
    parser.add_argument("--smoke", action="store_true",
                        help="CI mode: N=50, 2 s idle window, stores at N=10 (a few minutes)")
    parser.add_argument("--idle-seconds", type=float, default=None,
                        help="length of the idle window (default 60, smoke 2)")
    parser.add_argument("--no-stores", action="store_true",
                        help="skip the OpenBao and moto provisioning runs")
    parser.add_argument("--out", type=pathlib.Path, default=HERE,
                        help="where results.json and RESULTS.md go")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite RESULTS.md from the results.json in --out "
                             "(after editing bench/NOTES.md)")
    parser.add_argument("--workdir", type=pathlib.Path, default=None,
                        help="keep the child processes' logs here (default: a temporary folder)")
    return parser


def options(args: argparse.Namespace) -> Options:
    if args.smoke:
        sizes: tuple[int, ...] = (50,)
    elif args.sizes:
        sizes = tuple(int(s) for s in args.sizes.split(",") if s.strip())
    else:
        sizes = (100, 1000)
    if args.long and 5000 not in sizes:
        sizes = (*sizes, 5000)
    idle = args.idle_seconds if args.idle_seconds is not None else (2.0 if args.smoke else 60.0)
    def chosen(value: int | None, smoke: int, default: int) -> int:
        return value if value is not None else (smoke if args.smoke else default)

    return Options(sizes=sizes, idle_seconds=idle,
                   revoke_many=chosen(args.revoke_many, 10, 100),
                   revoke_singles=chosen(args.revoke_singles, 3, 100),
                   store_keys=10 if args.smoke else 100, stores=not args.no_stores,
                   smoke=args.smoke, grace_seconds=2 if args.smoke else 5,
                   storm_keys=args.storm_keys, large=chosen(args.large, 30, 0))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.render:
        results = json.loads((args.out / "results.json").read_text())
        report.plots(results, args.out)
        (args.out / "RESULTS.md").write_text(report.markdown(results, args.out))
        print(report.summary(results))
        return 0
    opts = options(args)
    commit_at_start = report.commit()
    if any(lib.startswith("kubernetes ") for lib in report.machine()["kopf_login_libraries"]):
        # Not an error (the figures stay comparable within the run), but not the operator's
        # real footprint either: see the http-clients extra in pyproject.toml.
        print("warning: the `kubernetes` client is installed in this venv; kopf's login loads "
              "it into the operator and the floor, adding to their RSS "
              "(pip uninstall kubernetes kubernetes_asyncio)", file=sys.stderr)

    def say(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)

    def write(figures: dict[str, Any]) -> None:
        results = report.assemble(opts, figures, commit_at_start)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        if figures["complete"]:
            # Before the markdown, which links the plots that exist.
            for path in report.plots(results, args.out):
                say(f"wrote {path}")
        (args.out / "RESULTS.md").write_text(report.markdown(results, args.out))
        say(f"wrote {args.out / 'results.json'} and {args.out / 'RESULTS.md'}"
            + ("" if figures["complete"] else " (partial)"))
        if figures["complete"]:
            print(report.summary(results), flush=True)

    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        run_sync(opts, args.workdir, say, write)
    else:
        with tempfile.TemporaryDirectory(prefix="apikey-bench-") as tmp:
            run_sync(opts, pathlib.Path(tmp), say, write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
