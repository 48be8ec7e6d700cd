"""The `apikey-operator` command: run the operator, request rotations, show status, scan."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from apikey_operator.conditions import condition_of
from apikey_operator.spec import REVOKE_ANNOTATION, ROTATE_ANNOTATION
from apikey_operator.stores.base import parse_time


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="apikey-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator")
    run.add_argument("--config", help="stores config YAML (or $APIKEY_OPERATOR_CONFIG)")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("--all-namespaces", "-A", action="store_true",
                       help="watch every namespace (the default)")
    scope.add_argument("--namespace", "-n", action="append", default=[],
                       help="watch only this namespace (repeatable)")
    run.add_argument("--standalone", action="store_true",
                     help="no peering: do not coordinate with other replicas")
    run.add_argument("--peering-name", default="apikey-operator")
    run.add_argument("--priority", type=int, default=None,
                     help="peering priority; default: random, so that exactly one replica "
                          "is active (kopf pauses every replica when priorities tie)")
    run.add_argument("--metrics-port", type=int, default=None)
    run.add_argument("--health-port", type=int, default=None,
                     help="serve kopf's liveness endpoint on /healthz")
    run.add_argument("--log-format", choices=("text", "json"), default="text")
    run.add_argument("--verbose", "-v", action="store_true")

    for action in ("rotate", "revoke"):
        cmd = sub.add_parser(action, help=f"set the {action} annotation on an ApiKey")
        cmd.add_argument("target", metavar="NAMESPACE/NAME")

    status = sub.add_parser("status", help="keys, versions, next rotation, conditions")
    status.add_argument("target", nargs="?", metavar="NAMESPACE/NAME")

    scan = sub.add_parser("scan", help="find leaked prefixed keys in files (exit 1 if any)",
                          add_help=False)
    scan.add_argument("args", nargs=argparse.REMAINDER,
                      help="paths and options, passed to the scanner (try: scan --help)")

    sandbox = sub.add_parser("sandbox",
                             help="the real operator on a local real control plane (a demo)")
    sandbox.add_argument("--non-interactive", action="store_true",
                         help="exit after the examples are Ready and a rotation was shown")
    sandbox.add_argument("--workdir", default=".sandbox")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["scan"]:
        # The scanner parses its own options (argparse cannot pass `--flag` through).
        from apikey_operator.leakscan.cli import main as scan_main

        return scan_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command in ("rotate", "revoke"):
            return asyncio.run(_annotate(args.command, args.target))
        if args.command == "status":
            return asyncio.run(_status(args.target))
        if args.command == "sandbox":
            from apikey_operator.testing.sandbox import run_sandbox

            return run_sandbox(workdir=args.workdir, interactive=not args.non_interactive)
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"apikey-operator: {exc}", file=sys.stderr)
        return 1
    return 2


class CliError(Exception):
    """A one-line message for the user; the command exits with status 1."""


def _run(args: argparse.Namespace) -> int:
    import kopf

    from apikey_operator import handlers, metrics
    from apikey_operator.config import (
        ConfigError,
        build_generators,
        build_stores,
        settings_from_args,
    )

    try:
        settings = settings_from_args(args.config, args.namespace, args.standalone,
                                      args.metrics_port, args.health_port, args.log_format)
        # Validate every store and generator now: refuse to start on a bad config.
        build_stores(settings)
        build_generators(settings)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"apikey-operator: config: {line}", file=sys.stderr)
        return 2
    from apikey_operator.logging import configure_logging

    configure_logging(args.log_format, "DEBUG" if args.verbose else "INFO")
    if not args.verbose:
        # One line per HTTP request and per watch event is noise at INFO.
        for noisy in ("httpx2", "httpx", "httpcore2"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        logging.getLogger("kopf.objects").addFilter(handlers.QuietEventHandlers())
    handlers.configure(settings)
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
    liveness = (f"http://0.0.0.0:{settings.health_port}/healthz"
                if settings.health_port else None)
    priority = args.priority
    if priority is None and not settings.standalone:
        priority = secrets.randbelow(1_000_000) + 1
    kopf.run(
        priority=priority,
        standalone=settings.standalone,
        peering_name=None if settings.standalone else args.peering_name,
        namespaces=list(settings.namespaces),
        clusterwide=not settings.namespaces,
        liveness_endpoint=liveness,
    )
    return 0


def _split(target: str) -> tuple[str, str]:
    namespace, sep, name = target.partition("/")
    if not sep or not namespace or not name:
        raise CliError(f"expected NAMESPACE/NAME, got {target!r}")
    return namespace, name


async def _annotate(action: str, target: str) -> int:
    from apikey_operator.kube import KubeClient, KubeError

    namespace, name = _split(target)
    annotation = ROTATE_ANNOTATION if action == "rotate" else REVOKE_ANNOTATION
    value = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    kube = KubeClient()
    try:
        if await kube.get_apikey(namespace, name) is None:
            raise CliError(f"ApiKey {namespace}/{name} not found")
        await kube.patch_apikey_annotations(namespace, name, {annotation: value})
    except KubeError as exc:
        raise CliError(str(exc)) from None
    finally:
        await kube.close()
    print(f"apikey {namespace}/{name}: {action} requested ({annotation}={value})")
    return 0


async def _status(target: str | None) -> int:
    from apikey_operator.kube import KubeClient, KubeError

    kube = KubeClient()
    try:
        if target:
            namespace, name = _split(target)
            one = await kube.get_apikey(namespace, name)
            if one is None:
                raise CliError(f"ApiKey {namespace}/{name} not found")
            items = [one]
        else:
            items = await kube.list_apikeys()
    except KubeError as exc:
        raise CliError(str(exc)) from None
    finally:
        await kube.close()
    print(format_status_table(items, datetime.now(UTC)))
    return 0


def format_status_table(items: Sequence[Mapping[str, Any]], now: datetime) -> str:
    """The `status` table: one row per ApiKey, columns like `kubectl get`."""
    header = ("NAMESPACE", "NAME", "STORE", "VERSION", "AGE", "NEXT ROTATION", "GRACE ENDS",
              "READY")
    rows = [header]
    for item in sorted(items, key=lambda i: (i["metadata"].get("namespace", ""),
                                             i["metadata"].get("name", ""))):
        meta, spec, status = item["metadata"], item.get("spec") or {}, item.get("status") or {}
        current = status.get("currentKey") or {}
        previous = status.get("previousKey") or {}
        ready = condition_of(status.get("conditions"), "Ready")
        rows.append((
            str(meta.get("namespace", "")),
            str(meta.get("name", "")),
            str(spec.get("store", "kubernetes")),
            str(current.get("version", "-")),
            _age(current.get("createdAt"), now),
            str(status.get("nextRotationTime") or "-"),
            str(previous.get("validUntil") or "-"),
            f"{ready.get('status', 'Unknown')}/{ready.get('reason', '-')}",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def _age(created: object, now: datetime) -> str:
    if not isinstance(created, str):
        return "-"
    try:
        seconds = int((now - parse_time(created)).total_seconds())
    except ValueError:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


if __name__ == "__main__":
    sys.exit(main())
