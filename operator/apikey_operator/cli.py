"""The `apikey-operator` command: run the operator, and the client verbs (like kubectl and
cmctl) that request rotations and revokes, show status, audit keys, drill revokes and scan.

Exit status: 0 success, 1 findings (`audit --fail-on`, `scan`), 2 usage or runtime error.
Every failure is one line on stderr naming its cause; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import secrets
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from apikey_operator import audit
from apikey_operator.presentation import format_status_detail, format_status_table
from apikey_operator.spec import REVOKE_ANNOTATION, ROTATE_ANNOTATION

__all__ = ["CliError", "format_status_table", "main"]

PROG = "apikey-operator"
EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class CliError(Exception):
    """A one-line message for the user; the command exits with status 2."""


class _UsageError(Exception):
    def __init__(self, prog: str, message: str) -> None:
        super().__init__(f"{prog}: error: {message} (see {prog} --help)")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(self.prog, message)


def version() -> str:
    try:
        return metadata.version("apikey-operator")
    except metadata.PackageNotFoundError:
        return "unknown"


def _client_options() -> _Parser:
    parent = _Parser(add_help=False)
    group = parent.add_argument_group("cluster access (like kubectl)")
    group.add_argument("--kubeconfig", help="path to the kubeconfig file (default: $KUBECONFIG, "
                                            "in-cluster, ~/.kube/config)")
    group.add_argument("--context", help="the kubeconfig context to use (default: current)")
    group.add_argument("-n", "--namespace",
                       help="the namespace (default: the context's namespace)")
    return parent


def _listing_options() -> _Parser:
    parent = _Parser(add_help=False)
    parent.add_argument("-A", "--all-namespaces", action="store_true",
                        help="every namespace the caller can see")
    parent.add_argument("-l", "--selector", help="label selector, e.g. team=billing,env!=dev")
    return parent


def _store_options() -> _Parser:
    parent = _Parser(add_help=False)
    group = parent.add_argument_group("stores (read to confirm a revoke)")
    group.add_argument("--config", default=os.environ.get("APIKEY_OPERATOR_CONFIG"),
                       help="the operator's stores config (default $APIKEY_OPERATOR_CONFIG; "
                            "without it only the built-in kubernetes store is read)")
    group.add_argument("--operator-namespace",
                       default=os.environ.get("POD_NAMESPACE") or "apikey-operator",
                       help="the operator's namespace, where the kubernetes store keeps keys "
                            "(default $POD_NAMESPACE or apikey-operator)")
    group.add_argument("--timeout", type=float, default=120.0,
                       help="seconds to wait for the revoke to complete (default 120)")
    return parent


def _parser() -> _Parser:
    parser = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    client, listing, stores = _client_options(), _listing_options(), _store_options()

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

    rotate = sub.add_parser("rotate", parents=[client],
                            help="rotate now (sets the rotate annotation; the old key keeps "
                                 "its grace)")
    rotate.add_argument("target", metavar="[NAMESPACE/]NAME")
    revoke = sub.add_parser("revoke", parents=[client],
                            help="emergency: rotate and revoke every old key at once")
    revoke.add_argument("target", nargs="?", metavar="[NAMESPACE/]NAME")
    revoke.add_argument("--fingerprint", metavar="sha256:HEX12",
                        help="revoke the ApiKey whose current or previous key has this "
                             "fingerprint (searches every namespace unless -n is given)")

    status = sub.add_parser("status", parents=[client, listing],
                            help="a table of keys; with a name: conditions, versions, "
                                 "fingerprints, recent Events")
    status.add_argument("target", nargs="?", metavar="[NAMESPACE/]NAME")

    audit_cmd = sub.add_parser("audit", parents=[client, listing],
                               help="inventory of every key with compliance findings")
    audit_cmd.add_argument("-o", "--output", choices=("table", "json", "csv"), default="table")
    audit_cmd.add_argument("--fail-on", choices=("warning", "error"),
                           help="exit 1 when a finding of this severity (or worse) exists")

    drill = sub.add_parser("drill", parents=[client, stores],
                           help="a measured emergency revoke: seconds per step")
    drill.add_argument("target", metavar="[NAMESPACE/]NAME")
    drill.add_argument("-o", "--output", choices=("table", "json"), default="table")
    drill.add_argument("--verify", metavar="URL",
                       help="also check that this service (using KeyRing) accepts the new key "
                            "and refuses the old one (sent as Authorization: Bearer)")

    sub.add_parser("scan", add_help=False, parents=[],
                   help="find leaked keys in files (exit 1 if any); --revoke revokes them")

    sandbox = sub.add_parser("sandbox",
                             help="the real operator on a local real control plane (a demo)")
    sandbox.add_argument("--non-interactive", action="store_true",
                         help="exit after the examples are Ready and a rotation was shown")
    sandbox.add_argument("--workdir", default=".sandbox")
    return parser


def _scan_parser() -> _Parser:
    from apikey_operator.leakscan.cli import DEFAULT_MAX_BYTES

    parser = _Parser(prog=f"{PROG} scan", parents=[_client_options(), _store_options()],
                     description="Find leaked keys in files and revoke every live one.")
    parser.add_argument("paths", nargs="*", metavar="PATH", help="files or folders (default .)")
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    parser.add_argument("--revoke", action="store_true",
                        help="revoke every key found whose ApiKey is visible")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["scan"] and "--revoke" not in argv[1:]:
            # The scanner parses its own options (and stays usable without a cluster).
            from apikey_operator.leakscan.cli import main as scan_main

            return scan_main(argv[1:])
        if argv[:1] == ["scan"]:
            args = _scan_parser().parse_args(argv[1:])
            args.command = "scan"
        else:
            args = _parser().parse_args(argv)
        return _dispatch(args)
    except _UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return _run(args)
    if args.command == "sandbox":
        from apikey_operator.testing.sandbox import run_sandbox

        return run_sandbox(workdir=args.workdir, interactive=not args.non_interactive)
    if args.command == "revoke":
        from apikey_operator.drill import DrillError, check_fingerprint

        if bool(args.target) == bool(args.fingerprint):
            raise CliError("revoke takes either [NAMESPACE/]NAME or --fingerprint sha256:...")
        try:
            if args.fingerprint:
                check_fingerprint(args.fingerprint)
        except DrillError as exc:
            raise CliError(str(exc)) from None
    commands: dict[str, Callable[[Session, argparse.Namespace], Awaitable[int]]] = {
        "rotate": _rotate, "revoke": _revoke, "status": _status, "audit": _audit,
        "drill": _drill, "scan": _scan_revoke,
    }
    return _with_session(args, commands[args.command])


# --- connecting ------------------------------------------------------------------------------


class Session:
    """One client command's view of the cluster: the resolved target and a client."""

    def __init__(self, args: argparse.Namespace) -> None:
        from apikey_operator.kube import client_for, load_target

        self.target = load_target(args.kubeconfig, args.context)
        self.kube = client_for(self.target)
        self.namespace_given: str | None = args.namespace
        self.namespace: str = args.namespace or self.target.namespace

    def name(self, text: str) -> tuple[str, str]:
        """`[NAMESPACE/]NAME` as (namespace, name); a bare name is in -n's namespace."""
        namespace, sep, name = text.rpartition("/")
        if not sep:
            return self.namespace, text
        if not namespace or not name or "/" in namespace:
            raise CliError(f"expected [NAMESPACE/]NAME, got {text!r}")
        if self.namespace_given and self.namespace_given != namespace:
            raise CliError(f"{text!r} names namespace {namespace!r} but -n says "
                           f"{self.namespace_given!r}")
        return namespace, name


def _with_session(args: argparse.Namespace,
                  command: Callable[[Session, argparse.Namespace], Awaitable[int]]) -> int:
    from apikey_operator.kube import KubeError, KubeTransient

    try:
        session = Session(args)
    except KubeError as exc:
        raise CliError(str(exc)) from None

    async def run() -> int:
        try:
            return await command(session, args)
        finally:
            await session.kube.close()

    try:
        return asyncio.run(run())
    except KubeTransient as exc:
        if exc.status == 0:
            raise CliError(_unreachable(session.target.server, exc)) from None
        raise CliError(f"the Kubernetes API server at {session.target.server} answered "
                       f"{exc}") from None
    except KubeError as exc:
        if exc.status == 401:
            raise CliError(f"the Kubernetes API server at {session.target.server} refused the "
                           f"credentials of context {session.target.context!r} ({exc})") from None
        raise CliError(str(exc)) from None
    except OSError as exc:  # e.g. the kubeconfig names a CA file that does not exist
        raise CliError(f"cannot connect to {session.target.server}: {exc}") from None
    except CliError:
        raise
    except Exception as exc:
        if os.environ.get("APIKEY_OPERATOR_DEBUG"):
            raise
        # A bug, or a failure no branch above names: still one line, and the way to see more.
        raise CliError(f"unexpected {type(exc).__name__}: {exc} (set APIKEY_OPERATOR_DEBUG=1 "
                       "for the traceback)") from None


def _unreachable(server: str, exc: Exception) -> str:
    """The one line for a connection failure: the server, what was tried, and the socket's
    own reason (refused, no route, timed out) when a plain TCP connect shows it."""
    reason = ""
    url = urlsplit(server)
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
        with socket.create_connection((url.hostname or "", port), timeout=3):
            pass
    except OSError as error:
        reason = f": {(error.strerror or type(error).__name__).lower()}"
    except ValueError:
        pass
    return f"cannot connect to the Kubernetes API server at {server} ({exc}{reason})"


# --- verbs -----------------------------------------------------------------------------------


def clock() -> datetime:
    """The CLI's one clock (the operator's is `Runtime.clock`); tests may replace it."""
    return datetime.now(UTC)


def _stamp() -> str:
    return clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _annotate(session: Session, action: str, namespace: str, name: str,
                    why: str = "") -> None:
    annotation = ROTATE_ANNOTATION if action == "rotate" else REVOKE_ANNOTATION
    if await session.kube.get_apikey(namespace, name) is None:
        raise CliError(f"ApiKey {namespace}/{name} not found")
    value = _stamp()
    await session.kube.patch_apikey_annotations(namespace, name, {annotation: value})
    print(f"apikey {namespace}/{name}: {action} requested ({annotation}={value}){why}")


async def _rotate(session: Session, args: argparse.Namespace) -> int:
    await _annotate(session, "rotate", *session.name(args.target))
    return EXIT_OK


async def _revoke(session: Session, args: argparse.Namespace) -> int:
    from apikey_operator.drill import holders_of

    if args.target:
        await _annotate(session, "revoke", *session.name(args.target))
        return EXIT_OK
    wanted = str(args.fingerprint)
    items = await session.kube.list_apikeys(session.namespace_given)
    holders = holders_of(items, wanted)
    if not holders:
        where = f"namespace {session.namespace_given}" if session.namespace_given \
            else "any namespace"
        raise CliError(f"no ApiKey in {where} has a current or previous key with fingerprint "
                       f"{wanted} (not one of ours, or already revoked)")
    for namespace, name, role in holders:
        await _annotate(session, "revoke", namespace, name,
                        f"; its {role} key has fingerprint {wanted}")
    return EXIT_OK


async def _listed(session: Session, args: argparse.Namespace) -> list[dict[str, Any]]:
    namespace = None if args.all_namespaces else session.namespace
    return await session.kube.list_apikeys(namespace, args.selector)


def _nothing_found(session: Session, args: argparse.Namespace) -> None:
    where = "" if args.all_namespaces else f" in {session.namespace} namespace"
    print(f"No ApiKeys found{where}.", file=sys.stderr)


async def _status(session: Session, args: argparse.Namespace) -> int:
    now = clock()
    if args.target:
        if args.all_namespaces or args.selector:
            raise CliError("status NAME takes neither -A nor -l")
        namespace, name = session.name(args.target)
        item = await session.kube.get_apikey(namespace, name)
        if item is None:
            raise CliError(f"ApiKey {namespace}/{name} not found")
        uid = item["metadata"].get("uid")
        # Not the Events of an earlier ApiKey that had the same name.
        events = [e for e in await session.kube.list_events(namespace, "ApiKey", name)
                  if (e.get("involvedObject") or {}).get("uid") in (None, "", uid)]
        print(format_status_detail(item, events, now))
        return EXIT_OK
    items = await _listed(session, args)
    if not items:
        _nothing_found(session, args)
        return EXIT_OK
    print(format_status_table(items, now, all_namespaces=args.all_namespaces))
    return EXIT_OK


async def _audit(session: Session, args: argparse.Namespace) -> int:
    from apikey_operator.kube import KubeError

    now = clock()
    items = sorted(await _listed(session, args),
                   key=lambda i: (i["metadata"]["namespace"], i["metadata"]["name"]))
    policies = {str(p["metadata"]["name"]): p
                for p in await session.kube.list_rotationpolicies()}
    namespaces = sorted({str(i["metadata"]["namespace"]) for i in items})
    labels: dict[str, Mapping[str, str]] = {}
    for namespace in namespaces:
        try:
            body = await session.kube.get_namespace(namespace)
        except KubeError:
            body = None  # namespace labels only supply a default owner
        labels[namespace] = ((body or {}).get("metadata") or {}).get("labels") or {}
    try:
        copies = await _key_copies(session, items, None if args.all_namespaces else namespaces)
    except KubeError as exc:
        print(f"{PROG}: audit: sharing not checked ({exc})", file=sys.stderr)
        copies = {}
    report = []
    for item in items:
        ref = ((item.get("spec") or {}).get("rotationPolicyRef") or {}).get("name")
        policy: Mapping[str, Any] | audit.PolicyMissing | None = None
        if ref:
            policy = policies.get(str(ref), audit.POLICY_MISSING)
        key = (str(item["metadata"]["namespace"]), str(item["metadata"]["name"]))
        report.append(audit.inventory_item(item, policy, labels.get(key[0]), now,
                                           copies.get(key, ())))
    if args.output == "json":
        print(audit.format_json(report))
    elif args.output == "csv":
        print(audit.format_csv(report))
    elif report:
        print(audit.format_table(report))
    else:
        _nothing_found(session, args)
    return EXIT_FINDINGS if audit.fails(report, args.fail_on) else EXIT_OK


async def _key_copies(session: Session, items: Sequence[Mapping[str, Any]],
                      namespaces: Sequence[str] | None) -> dict[tuple[str, str], list[str]]:
    """For each ApiKey, the other Secrets (`namespace/name`) that hold one of its keys,
    found by fingerprint: a value equal to the key, or a checksum-verified key inside it."""
    from apikey_operator.keys import fingerprint
    from apikey_operator.kube import decode_data
    from apikey_operator.leakscan.detector import find_keys

    owners: dict[str, tuple[str, str]] = {}
    own_secret: dict[tuple[str, str], tuple[str, str]] = {}
    for item in items:
        meta, status = item["metadata"], item.get("status") or {}
        key = (str(meta["namespace"]), str(meta["name"]))
        own_secret[key] = (key[0], str(((item.get("spec") or {}).get("secret") or {})
                                       .get("name") or key[1]))
        for role in ("currentKey", "previousKey"):
            printed = (status.get(role) or {}).get("fingerprint")
            if printed:
                owners[str(printed)] = key
    if not owners:
        return {}
    secrets_: list[dict[str, Any]] = []
    for namespace in (namespaces if namespaces is not None else [None]):
        secrets_ += await session.kube.list_secrets(namespace)
    copies: dict[tuple[str, str], list[str]] = {}
    for secret in secrets_:
        meta = secret.get("metadata") or {}
        where = (str(meta.get("namespace")), str(meta.get("name")))
        labels = meta.get("labels") or {}
        if labels.get("app.kubernetes.io/managed-by") == "apikey-operator" and \
                labels.get("apikeys.dev/store"):
            continue  # the built-in store's own entries, where every key version lives
        for value in decode_data(secret.get("data")).values():
            # Exact matches only: the whole value, each run of key characters, and every
            # checksum-verified key inside a longer run.
            found = {fingerprint(t) for t in {value.strip(), *_KEY_RUN.findall(value)} if t}
            found |= {f.fingerprint for f in find_keys(value)}
            for printed in found & owners.keys():
                key = owners[printed]
                if own_secret[key] != where and f"{where[0]}/{where[1]}" not in \
                        copies.get(key, []):
                    copies.setdefault(key, []).append(f"{where[0]}/{where[1]}")
    return copies


_KEY_RUN = re.compile(r"[A-Za-z0-9_-]{16,}")


class _Stores(Mapping[str, Any]):
    """The operator's stores, built on first use from its config, reading what it writes."""

    def __init__(self, session: Session, config: str | None, operator_namespace: str) -> None:
        from apikey_operator.config import ConfigError, load_config

        try:
            self.blocks, _ = load_config(config)
        except ConfigError as exc:
            raise CliError(f"config: {str(exc).splitlines()[0]}") from None
        self.session = session
        self.operator_namespace = operator_namespace
        self.built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self.built:
            from apikey_operator.kube import client_for
            from apikey_operator.stores import StoreConfigError, factory_for
            from apikey_operator.stores.kubernetes import KubernetesStore

            block = self.blocks[name]
            if block.get("type") == "kubernetes":
                self.built[name] = KubernetesStore(name, self.operator_namespace,
                                                   client_for(self.session.target))
            else:
                try:
                    self.built[name] = factory_for(str(block["type"]))(
                        name, block, self.operator_namespace)
                except StoreConfigError as exc:
                    raise CliError(f"config: stores.{name}: {exc}") from None
        return self.built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.blocks)

    def __len__(self) -> int:
        return len(self.blocks)

    async def close(self) -> None:
        for store in self.built.values():
            await store.close()


async def _drill(session: Session, args: argparse.Namespace) -> int:
    from apikey_operator.drill import DrillError, Revoker, outcome_json, outcome_table
    from apikey_operator.stores.base import KeyRef, StoreError

    namespace, name = session.name(args.target)
    stores = _Stores(session, args.config, args.operator_namespace)
    try:
        revoker = Revoker(session.kube, stores)
        try:
            target = await revoker.target(namespace, name, with_keys=bool(args.verify))
        except DrillError as exc:
            raise CliError(str(exc)) from None
        if target.store_name not in stores:
            raise CliError(f"store {target.store_name!r} of ApiKey {namespace}/{name} is not in "
                           "the operator config: pass --config FILE (or set "
                           "APIKEY_OPERATOR_CONFIG) to read it")
        try:
            await stores[target.store_name].read(KeyRef(namespace, name, target.uid))
        except StoreError as exc:
            raise CliError(f"nothing requested: cannot read store {target.store_name!r} "
                           f"({exc})") from None
        started, requested_at = await revoker.request(target)
        outcome = await revoker.measure(target, started, requested_at, within=args.timeout,
                                        verify_url=args.verify)
    finally:
        await stores.close()
    if args.output == "json":
        print(json.dumps(outcome_json(outcome), indent=2))
    else:
        print(outcome_table(outcome))
    if not outcome.ok:
        print(f"{PROG}: drill of {namespace}/{name} failed at step {outcome.failed_step}: "
              f"{outcome.failure}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


async def _scan_revoke(session: Session, args: argparse.Namespace) -> int:
    from apikey_operator.drill import DrillError, Revoker, holders_of
    from apikey_operator.leakscan.cli import iter_files, read_text, scan_text

    if args.max_bytes < 1:
        raise CliError("--max-bytes must be positive")
    roots = [Path(p) for p in args.paths or ["."]]
    for root in roots:
        if not root.exists():
            raise CliError(f"no such file or directory: {root}")
    leaked: list[str] = []
    seen: set[Path] = set()
    for root in roots:
        for path in iter_files(root):
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                text = read_text(path, args.max_bytes)
            except OSError as error:
                print(f"{path}: skipped: {error.strerror or error}", file=sys.stderr)
                continue
            for line, printed in scan_text(text or ""):
                print(f"{path}:{line}: apikey leak ({printed})")
                if printed not in leaked:
                    leaked.append(printed)
    if not leaked:
        return EXIT_OK
    items = await session.kube.list_apikeys(session.namespace_given)
    stores = _Stores(session, args.config, args.operator_namespace)
    failed = False
    try:
        revoker = Revoker(session.kube, {n: stores[n] for n in stores})
        done: set[tuple[str, str]] = set()
        for printed in leaked:
            holders = holders_of(items, printed)
            if not holders:
                print(f"not ours {printed}: no visible ApiKey has a current or previous key "
                      "with this fingerprint (another system's key, or already revoked)")
                continue
            for namespace, name, role in holders:
                if (namespace, name) in done:
                    print(f"revoked {printed}: the {role} key of ApiKey {namespace}/{name}, "
                          "with the revoke above")
                    continue
                done.add((namespace, name))
                try:
                    target = await revoker.target(namespace, name)
                except DrillError as exc:
                    print(f"not revoked {printed}: {exc}")
                    failed = True
                    continue
                started, requested_at = await revoker.request(target)
                outcome = await revoker.measure(target, started, requested_at,
                                                within=args.timeout)
                versions = ", ".join(str(v) for v in outcome.revoked_versions)
                if outcome.ok:
                    took = max(outcome.seconds.values())
                    unread = "" if outcome.store_checked else " (store not read: pass --config)"
                    print(f"revoked {printed}: the {role} key of ApiKey {namespace}/{name} "
                          f"(versions {versions} revoked, new version {outcome.new_version}) "
                          f"in {took:.3f}s{unread}")
                else:
                    failed = True
                    print(f"FAILED {printed}: ApiKey {namespace}/{name}: step "
                          f"{outcome.failed_step}: {outcome.failure}")
    finally:
        await stores.close()
    print(f"{PROG} scan: {len(leaked)} leaked key(s); remove them from the files and their "
          "history", file=sys.stderr)
    return EXIT_ERROR if failed else EXIT_FINDINGS


# --- the operator ----------------------------------------------------------------------------


def _preflight() -> str | None:
    """Why the operator cannot reach its API server, in one line; None when it can.

    kopf would otherwise print a long traceback ending in "Ran out of valid credentials".
    Only a missing configuration, a connection failure or refused credentials stop the
    start: any other answer (even 403 or 404) proves the server and the login work.
    """
    from apikey_operator.kube import KubeError, client_for, load_target

    try:
        target = load_target()
    except KubeError as exc:
        return str(exc)

    async def probe() -> str | None:
        kube = client_for(target, timeout=10.0)
        try:
            await kube.get_rotationpolicy("apikey-operator-preflight")
        except KubeError as exc:
            if exc.status == 0:
                return _unreachable(target.server, exc)
            if exc.status == 401:
                return (f"the Kubernetes API server at {target.server} refused the credentials "
                        f"from {target.source} ({exc})")
        except OSError as exc:
            return f"cannot connect to the Kubernetes API server at {target.server}: {exc}"
        finally:
            await kube.close()
        return None

    return asyncio.run(probe())


def _run(args: argparse.Namespace) -> int:
    import kopf

    from apikey_operator import handlers, metrics
    from apikey_operator.config import ConfigError, settings_from_args

    try:
        settings = settings_from_args(args.config, args.namespace, args.standalone,
                                      args.metrics_port, args.health_port, args.log_format)
        # Building every store and generator is their validation: a bad config never starts,
        # and what is built here is what kopf runs (handed over as the operator's memo).
        operator = handlers.build_operator(settings)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"{PROG}: config: {line}", file=sys.stderr)
        return EXIT_ERROR
    problem = _preflight()
    if problem is not None:
        print(f"{PROG}: {problem}", file=sys.stderr)
        return EXIT_ERROR
    from apikey_operator.logging import configure_logging

    configure_logging(args.log_format, "DEBUG" if args.verbose else "INFO")
    if not args.verbose:
        # aiohttp logs nothing per request at INFO (and no bodies at any level: no tracing);
        # its client and its internals stay at WARNING all the same.
        for noisy in ("aiohttp.client", "aiohttp.internal"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        logging.getLogger("kopf.objects").addFilter(handlers.QuietEventHandlers())
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
        memo=operator.memo(),
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
