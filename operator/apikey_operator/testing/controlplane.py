"""A real Kubernetes control plane on loopback for tests (envtest's role).

`ControlPlane` runs etcd, kube-apiserver and kube-controller-manager as child processes on free
loopback ports: the apiserver serves TLS with a CA made at start, authorizes with RBAC, signs
service-account tokens, and authenticates the harness with an admin bearer token; the
controller manager runs the garbage collector, the namespace controller and the service-account
controllers (no scheduler, no kubelet: no pod ever runs). The CRDs are applied and Established
before `start()` returns. `stop()` ends every process and removes the work folder.

The binaries come from `assets` or ``APIKEY_OPERATOR_ASSETS`` (a folder holding ``etcd``,
``kube-apiserver`` and ``kube-controller-manager``), else ``KUBEBUILDER_ASSETS`` (envtest's
layout), else the build cache of ``tools/build-go-tools`` for the versions pinned in a source
checkout.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import ipaddress
import os
import pathlib
import secrets
import signal
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import yaml

from apikey_operator.testing.kubeapi import KubeApi, KubernetesApiError
from apikey_operator.testing.servers import ServerError, free_port

__all__ = ["ControlPlane", "ServerError", "find_assets", "pinned_versions", "reset_cluster",
           "shared_control_plane"]

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")
ADMIN_USER = "apikey-admin"
# The controllers our behaviour depends on: owner-reference GC, namespace deletion, the
# default ServiceAccount, TokenRequest-minted tokens, and Deployments for restart targets.
CONTROLLERS = ("garbage-collector-controller", "namespace-controller",
               "serviceaccount-controller", "serviceaccount-token-controller",
               "deployment-controller", "replicaset-controller")


def _checkout_root() -> pathlib.Path | None:
    here = pathlib.Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "tools" / "go").is_dir() and (parent / "pyproject.toml").exists():
            return parent
    return None


def cache_root() -> pathlib.Path:
    """Where tools/build-go-tools puts its builds."""
    configured = os.environ.get("APIKEY_OPERATOR_CACHE")
    if configured:
        return pathlib.Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "apikey-operator"


def pinned_versions() -> dict[str, str]:
    """The versions the checkout's wrapper modules pin, by tool folder name."""
    root = _checkout_root()
    versions: dict[str, str] = {}
    if root is None:
        return versions
    for gomod in sorted((root / "tools" / "go").glob("*/go.mod")):
        for line in gomod.read_text(encoding="utf-8").splitlines():
            if line.startswith("require "):
                versions[gomod.parent.name] = line.split()[2]
                break
    return versions


def tool_dir(tool: str) -> pathlib.Path:
    """The cache folder of one pinned tool build (it may not exist yet)."""
    version = pinned_versions().get(tool)
    if version is None:
        raise ServerError(f"no pinned version for {tool!r}: not a source checkout with tools/go/")
    return cache_root() / "bin" / f"{tool}-{version}"


def find_tool(tool: str, binary: str) -> str:
    """A binary of a pinned tool build; a clear error naming the build command if absent."""
    path = tool_dir(tool) / binary
    if not path.is_file():
        raise ServerError(f"{binary} is not built: run `make tools` (tools/build-go-tools "
                          f"{tool}); looked in {path.parent}")
    return str(path)


def find_assets(assets: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The path of each control-plane binary; ServerError naming where it looked."""
    candidates: list[pathlib.Path] = []
    for configured in (assets, os.environ.get("APIKEY_OPERATOR_ASSETS"),
                       os.environ.get("KUBEBUILDER_ASSETS")):
        if configured:
            candidates.append(pathlib.Path(configured))
    if not candidates and _checkout_root() is not None:
        found = {}
        for component, tool in (("etcd", "etcd"), ("kube-apiserver", "kubernetes"),
                                ("kube-controller-manager", "kubernetes")):
            found[component] = find_tool(tool, component)
        return found
    for folder in candidates:
        paths = {c: folder / c for c in COMPONENTS}
        if all(p.is_file() for p in paths.values()):
            return {c: str(p) for c, p in paths.items()}
    raise ServerError("the control-plane binaries (etcd, kube-apiserver, kube-controller-manager) "
                      f"were not found in {', '.join(map(str, candidates)) or 'any folder'}")


def _write_pki(folder: pathlib.Path) -> dict[str, pathlib.Path]:
    """A CA, a serving certificate for 127.0.0.1/localhost and a service-account key pair."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=7))

    def pem_key(key: Any) -> bytes:
        return bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apikey-test-ca")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(validity[0]).not_valid_after(validity[1])
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                            crl_sign=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    serving_key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(n) for n in ("localhost", "kubernetes", "kubernetes.default",
                                        "kubernetes.default.svc")]
    serving_cert = (x509.CertificateBuilder()
                    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                                "kube-apiserver")]))
                    .issuer_name(ca_name).public_key(serving_key.public_key())
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(validity[0]).not_valid_after(validity[1])
                    .add_extension(x509.SubjectAlternativeName(
                        [*names, x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                        critical=False)
                    .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
                    .sign(ca_key, hashes.SHA256()))
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files = {
        "ca.crt": ca_cert.public_bytes(serialization.Encoding.PEM),
        "ca.key": pem_key(ca_key),
        "serving.crt": serving_cert.public_bytes(serialization.Encoding.PEM),
        "serving.key": pem_key(serving_key),
        "sa.key": pem_key(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    }
    paths = {}
    for name, content in files.items():
        path = folder / name
        path.write_bytes(content)
        path.chmod(0o600)
        paths[name] = path
    return paths


class _Child:
    """One control-plane process with its output in a log file."""

    def __init__(self, name: str, log_path: pathlib.Path) -> None:
        self.name = name
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self, argv: list[str]) -> None:
        with open(self.log_path, "ab") as log:
            # A process group of its own: a Ctrl-C in the sandbox reaches us, and we stop it.
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ServerError(f"{self.name} exited with {self.proc.returncode}; log:\n"
                              f"{self.tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def tail(self, size: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on loopback, with our CRDs installed.

    After `start()`: `url` (https), `ca_file`, `admin_token`, `kubeconfig` (a file for the
    admin, written into the work folder), `api` (a :class:`KubeApi` as admin) and `version`.
    ``namespaces`` are created at start. Use as a context manager or call `start()`/`stop()`.
    """

    def __init__(self, *, crd_paths: Iterable[str | os.PathLike[str]] | None = None,
                 namespaces: Sequence[str] = ("apikey-operator",),
                 assets: str | os.PathLike[str] | None = None,
                 workdir: str | os.PathLike[str] | None = None,
                 controller_manager: bool = True, startup_timeout: float = 90.0,
                 apiserver_args: Sequence[str] = ()) -> None:
        self.crd_paths = [pathlib.Path(p) for p in (
            crd_paths if crd_paths is not None else _default_crd_paths())]
        self.namespaces = tuple(namespaces)
        self._assets = assets
        self._workdir_arg = pathlib.Path(workdir) if workdir is not None else None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.workdir = pathlib.Path()
        self.controller_manager = controller_manager
        # Extra kube-apiserver flags (e.g. an admission plugin), after ours so they win.
        self.apiserver_args = tuple(apiserver_args)
        self.startup_timeout = startup_timeout
        self.admin_token = secrets.token_urlsafe(32)
        self.children: list[_Child] = []
        self.url = ""
        self.ca_file = pathlib.Path()
        self.kubeconfig = pathlib.Path()
        self.version: dict[str, Any] = {}
        self._api: KubeApi | None = None
        self.pki: dict[str, pathlib.Path] = {}

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        paths = find_assets(self._assets)
        if self._workdir_arg is not None:
            self.workdir = self._workdir_arg
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="apikey-controlplane-")
            self.workdir = pathlib.Path(self._tmp.name)
        try:
            self._start(paths)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, paths: dict[str, str]) -> None:
        deadline = time.monotonic() + self.startup_timeout
        pki_dir = self.workdir / "pki"
        pki_dir.mkdir(exist_ok=True)
        self.pki = _write_pki(pki_dir)
        self.ca_file = self.pki["ca.crt"]
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        etcd = self._spawn("etcd", [
            paths["etcd"], "--name=apikey-test", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=apikey-test=http://127.0.0.1:{peer_port}",
            # A throwaway data dir: durability on disk buys nothing and costs every write.
            "--unsafe-no-fsync", "--quota-backend-bytes=8589934592",
            "--listen-metrics-urls=", "--log-level=warn",
        ])
        self._wait_http(etcd, f"{etcd_url}/health", deadline, None)

        token_file = pki_dir / "tokens.csv"
        token_file.write_text(f"{self.admin_token},{ADMIN_USER},{ADMIN_USER},system:masters\n")
        token_file.chmod(0o600)
        self.url = f"https://127.0.0.1:{api_port}"
        apiserver = self._spawn("kube-apiserver", [
            paths["kube-apiserver"], f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}", f"--cert-dir={pki_dir}",
            f"--tls-cert-file={self.pki['serving.crt']}",
            f"--tls-private-key-file={self.pki['serving.key']}",
            f"--client-ca-file={self.pki['ca.crt']}",
            f"--token-auth-file={token_file}",
            f"--service-account-key-file={self.pki['sa.pub']}",
            f"--service-account-signing-key-file={self.pki['sa.key']}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--api-audiences=https://kubernetes.default.svc.cluster.local",
            "--authorization-mode=RBAC", "--service-cluster-ip-range=10.96.0.0/16",
            "--allow-privileged=true", "--enable-priority-and-fairness=false",
            "--endpoint-reconciler-type=none", "--profiling=false", "--v=0",
            *self.apiserver_args,
        ])
        ssl_context = ssl.create_default_context(cafile=str(self.ca_file))
        self._wait_http(apiserver, f"{self.url}/readyz", deadline, ssl_context)
        self.kubeconfig = self.write_kubeconfig(self.workdir / "kubeconfig")
        self._api = KubeApi(self.url, token=self.admin_token, ca_file=self.ca_file)
        self.version = self.api.request("GET", "/version")
        if self.controller_manager:
            self._spawn("kube-controller-manager", [
                paths["kube-controller-manager"], f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                f"--controllers={','.join(CONTROLLERS)}",
                f"--service-account-private-key-file={self.pki['sa.key']}",
                f"--root-ca-file={self.pki['ca.crt']}",
                "--leader-elect=false", "--use-service-account-credentials=false",
                "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
                f"--cert-dir={pki_dir / 'kcm'}", "--concurrent-gc-syncs=5",
                # A test module (the corpus) can leave a hundred namespaces to delete at once.
                "--concurrent-namespace-syncs=20", "--v=0",
            ])
        for namespace in self.namespaces:
            self.api.ensure_namespace(namespace)
        self.install_crds(self.crd_paths, deadline=deadline)

    def stop(self) -> None:
        """Stop every process (controller manager, apiserver, then etcd) and remove the work
        folder we made (idempotent)."""
        for child in reversed(self.children):
            child.stop()
        self.children = []
        if self._api is not None:
            self._api.close()
            self._api = None
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _spawn(self, name: str, argv: list[str]) -> _Child:
        child = _Child(name, self.workdir / f"{name}.log")
        child.spawn(argv)
        self.children.append(child)
        return child

    def _wait_http(self, child: _Child, url: str, deadline: float,
                   context: ssl.SSLContext | None) -> None:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(url)  # noqa: S310 (loopback)
        if context is not None:
            request.add_header("Authorization", f"Bearer {self.admin_token}")
        while True:
            child.check_alive()
            try:
                with urllib.request.urlopen(request, timeout=2,  # noqa: S310
                                            context=context) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise ServerError(f"{child.name} not ready at {url} within "
                                  f"{self.startup_timeout:g}s; log:\n{child.tail()}")
            time.sleep(0.1)

    # --- access ------------------------------------------------------------------------------

    @property
    def api(self) -> KubeApi:
        """The admin client (raises before `start()`)."""
        if self._api is None:
            raise RuntimeError("the control plane is not started")
        return self._api

    @property
    def git_version(self) -> str:
        return str(self.version.get("gitVersion", "unknown"))

    def logs(self, component: str = "kube-apiserver") -> str:
        return next((c.tail(200_000) for c in self.children if c.name == component), "")

    def write_kubeconfig(self, path: str | os.PathLike[str], *, token: str | None = None,
                         server: str | None = None, namespace: str = "default",
                         user: str = ADMIN_USER) -> pathlib.Path:
        """A kubeconfig for this server (or `server`, e.g. a proxy with the same certificate)
        authenticated with `token` (the admin's by default)."""
        target = pathlib.Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        import base64
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "apikey-test", "cluster": {
                "server": server or self.url,
                "certificate-authority-data": base64.b64encode(
                    self.ca_file.read_bytes()).decode()}}],
            "users": [{"name": user, "user": {"token": token or self.admin_token}}],
            "contexts": [{"name": "apikey-test", "context": {
                "cluster": "apikey-test", "user": user, "namespace": namespace}}],
            "current-context": "apikey-test",
        }
        target.write_text(yaml.safe_dump(config), encoding="utf-8")
        target.chmod(0o600)
        return target

    def install_crds(self, paths: Iterable[pathlib.Path], *, deadline: float | None = None,
                     ) -> list[str]:
        """Apply every CRD found in `paths` (files or folders) and wait until each is
        Established and served; returns their names."""
        names: list[str] = []
        for doc in _crd_documents(paths):
            name = doc["metadata"]["name"]
            try:
                self.api.apply(doc, field_manager="apikey-test")
            except KubernetesApiError as exc:
                raise ServerError(f"CRD {name} was refused: {exc}") from exc
            names.append(name)
        end = deadline if deadline is not None else time.monotonic() + 60
        for name in names:
            self.api.wait_crd_established(name, end)
        return names


# Namespaced resources a test may leave behind, emptied by `ControlPlane.reset()`.
_RESETTABLE = ("apikeys.dev/v1alpha1/apikeys", "v1/secrets", "v1/events", "v1/configmaps",
               "apps/v1/deployments", "apps/v1/statefulsets", "apps/v1/daemonsets",
               "apps/v1/replicasets", "v1/pods", "v1/serviceaccounts",
               "rbac.authorization.k8s.io/v1/roles", "rbac.authorization.k8s.io/v1/rolebindings",
               "coordination.k8s.io/v1/leases", "kopf.dev/v1/kopfpeerings")
_CLUSTER_RESETTABLE = ("apikeys.dev/v1alpha1/rotationpolicies", "kopf.dev/v1/clusterkopfpeerings")
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
# The apiserver refuses to delete these.
_UNDELETABLE = frozenset({"default"})
_KEEP = {"v1/configmaps": {"kube-root-ca.crt"}, "v1/serviceaccounts": {"default"}}


def reset_cluster(api: KubeApi, namespaces: Iterable[str], *, timeout: float = 60.0) -> None:
    """Bring a shared control plane back to a clean state between tests: every namespace but
    the system ones and `namespaces` deleted (and waited for), `namespaces` present, unlabelled
    and empty of what tests create, and no RotationPolicy. Finalizers are removed first: the
    operator that would have released them is gone."""
    keep = set(namespaces) | SYSTEM_NAMESPACES | _UNDELETABLE
    started = time.monotonic()
    for resource in _CLUSTER_RESETTABLE:
        try:
            objects = api.list_objects(resource)
        except (KubernetesApiError, KeyError):
            continue
        for obj in objects:
            _release(api, resource, obj)
        if objects:
            with contextlib.suppress(KubernetesApiError):
                api.delete_collection(resource)
    present = {ns["metadata"]["name"]: ns for ns in api.list_objects("v1/namespaces")}
    for name, ns in present.items():
        if name in SYSTEM_NAMESPACES:
            continue
        for resource in _RESETTABLE:
            _empty(api, resource, name, deletion=name not in keep)
        if name not in keep and not (ns.get("metadata") or {}).get("deletionTimestamp"):
            api.delete_object("v1/namespaces", None, name, missing_ok=True)
    # The namespace controller deletes a namespace in about a second, a few at a time: the
    # allowance grows with how many there are, `timeout` being the floor.
    deadline = started + max(timeout, 2.0 * len(set(present) - keep))
    while True:
        names = {ns["metadata"]["name"] for ns in api.list_objects("v1/namespaces")}
        leftover = names - keep
        if not leftover:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"namespaces still terminating after {timeout:g}s: {leftover}")
        for name in leftover:  # objects made while it was terminating may hold finalizers
            _empty(api, "apikeys.dev/v1alpha1/apikeys", name, deletion=True)
        time.sleep(0.1)
    for name in namespaces:
        api.ensure_namespace(name, labels={})


def _release(api: KubeApi, resource: str, body: Mapping[str, Any]) -> None:
    meta = body.get("metadata") or {}
    if meta.get("finalizers"):
        with contextlib.suppress(KubernetesApiError):
            api.patch_object(resource, meta.get("namespace"), meta["name"],
                             {"metadata": {"finalizers": None}})


def _empty(api: KubeApi, resource: str, namespace: str, *, deletion: bool) -> None:
    """Delete what a test left in one namespace (a namespace being deleted only needs its
    finalizers released; the namespace controller deletes the rest)."""
    try:
        items = api.list_objects(resource, namespace)
    except (KubernetesApiError, KeyError):
        return
    keep = _KEEP.get(resource, set())
    doomed = [i for i in items if i["metadata"]["name"] not in keep]
    for item in doomed:
        _release(api, resource, item)
    if deletion or not doomed:
        return
    if keep:
        for item in doomed:
            api.delete_object(resource, namespace, item["metadata"]["name"], missing_ok=True)
    else:
        with contextlib.suppress(KubernetesApiError):
            api.delete_collection(resource, namespace)


_shared: ControlPlane | None = None
_shared_lock = threading.Lock()


def shared_control_plane() -> ControlPlane:
    """One control plane per process (per pytest-xdist worker), started on first use and
    stopped at exit; tests isolate themselves with `reset_cluster`."""
    global _shared
    with _shared_lock:
        if _shared is None:
            plane = ControlPlane()
            plane.start()
            atexit.register(plane.stop)
            _shared = plane
        return _shared


def _default_crd_paths() -> list[pathlib.Path]:
    root = _checkout_root()
    if root is None:
        return []
    # The project's CRDs, and kopf's peering CRDs from the chart (for HA replicas).
    return [root / "crds", root / "charts" / "apikey-operator" / "crds" / "kopf-peering.yaml"]


def _crd_documents(paths: Iterable[pathlib.Path]) -> list[dict[str, Any]]:
    files: list[pathlib.Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")))
        elif path.exists():
            files.append(path)
    docs = []
    for file in files:
        for doc in yaml.safe_load_all(file.read_text(encoding="utf-8")):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                docs.append(doc)
    return docs

