"""examples/webhook-adapter: the adapter and the pretend vendor as processes, driven by the
webhook generator directly and by the real operator on the emulated API."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from apikey_operator.generators import GeneratorError
from apikey_operator.generators.webhook import webhook_generator
from apikey_operator.keys import KeyFormat
from apikey_operator.stores.base import KeyRef
from apikey_operator.testing.harness import POLICIES, LocalCluster
from apikey_operator.testing.servers import free_port

pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "webhook-adapter"
REF = KeyRef("payments", "checkout", "5e1f-uid")


@dataclass
class Acme:
    vendor_url: str
    adapter_url: str  # the generator's `url`
    token_file: pathlib.Path
    logs: list[pathlib.Path]

    def whoami(self, key: str) -> tuple[int, Any]:
        """Acme's answer to a request made with `key`: (status, body)."""
        request = urllib.request.Request(f"{self.vendor_url}/v1/whoami",
                                         headers={"Authorization": f"Bearer {key}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, None

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _process(argv: list[str], env: dict[str, str], log: pathlib.Path,
             probe: str) -> Iterator[None]:
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, *argv], env={**os.environ, **env},
                                   stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)
        try:
            deadline = time.monotonic() + 30
            while not _answers(probe):
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"{argv[0]} did not start"
                time.sleep(0.05)
            yield
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture
def acme(tmp_path: pathlib.Path) -> Iterator[Acme]:
    token = tmp_path / "operator-token"
    token.write_text("operator-to-adapter-token\n", encoding="utf-8")
    admin = tmp_path / "acme-admin-secret"
    admin.write_text("acme-admin-secret-value\n", encoding="utf-8")
    vendor_port, adapter_port = free_port(), free_port()
    vendor_url = f"http://127.0.0.1:{vendor_port}"
    adapter_base = f"http://127.0.0.1:{adapter_port}"
    logs = [tmp_path / "vendor.log", tmp_path / "adapter.log"]
    with _process([str(EXAMPLE / "pretend_vendor.py"), "--port", str(vendor_port)],
                  {"VENDOR_SECRET_FILE": str(admin)}, logs[0], f"{vendor_url}/v1/whoami"), \
         _process([str(EXAMPLE / "adapter.py"), "--host", "127.0.0.1",
                   "--port", str(adapter_port)],
                  {"ADAPTER_TOKEN_FILE": str(token), "VENDOR_URL": vendor_url,
                   "VENDOR_SECRET_FILE": str(admin),
                   "IDEMPOTENCY_DB": str(tmp_path / "idempotency.sqlite3"),
                   "ALLOWED_SCOPES": "charges:read,charges:write,refunds:write"},
                  logs[1], f"{adapter_base}/healthz"):
        yield Acme(vendor_url, f"{adapter_base}/v1", token, logs)


def _config(acme: Acme) -> dict[str, Any]:
    return {"type": "webhook", "url": acme.adapter_url, "allowInsecureHttp": True,
            "tokenFile": str(acme.token_file), "maxRetries": 1}


async def test_the_adapter_mints_idempotently_and_revokes_at_acme(acme: Acme) -> None:
    generator = webhook_generator("acme-pay", _config(acme), "apikey-operator")
    try:
        minted = await generator.mint(REF, 1, KeyFormat(), ["charges:write", "refunds:write"])
        assert minted.external_id.startswith("rk_") and minted.key.startswith("acme_rk_")
        assert acme.whoami(minted.key) == (200, {"id": minted.external_id,
                                                 "permissions": ["charges.write",
                                                                 "refunds.write"]})
        again = await generator.mint(REF, 1, KeyFormat(), ["charges:write", "refunds:write"])
        assert again == minted and again.key == minted.key
        await generator.revoke(REF, minted.external_id)
        assert acme.whoami(minted.key)[0] == 401
        await generator.revoke(REF, minted.external_id)  # already expired: still success
        await generator.revoke(REF, "rk_00")  # unknown at Acme: 404, success
        with pytest.raises(GeneratorError, match="403 Forbidden"):
            await generator.mint(REF, 2, KeyFormat(), ["admin:everything"])
    finally:
        await generator.close()
    wrong_token = acme.token_file.with_name("wrong-token")
    wrong_token.write_text("not-the-token\n", encoding="utf-8")
    wrong = webhook_generator("acme-pay", {**_config(acme), "tokenFile": str(wrong_token)},
                              "apikey-operator")
    try:
        with pytest.raises(GeneratorError, match="401 Unauthorized"):
            await wrong.mint(REF, 3, KeyFormat(), [])
    finally:
        await wrong.close()


def test_the_operator_rotates_and_revokes_an_acme_key_through_the_adapter(acme: Acme) -> None:
    apikey = yaml.safe_load((EXAMPLE / "apikey.yaml").read_text(encoding="utf-8"))
    policies = [p for p in yaml.safe_load_all((ROOT / "examples" / "10-rotationpolicy.yaml")
                                              .read_text(encoding="utf-8")) if p]
    with LocalCluster(generators={"acme-pay": _config(acme)}) as cluster:
        cluster.api.ensure_namespace("payments", {"env": "prod"})  # examples/00-namespace.yaml
        for body in policies:
            cluster.api.create_object(body, keep_status=False)
        assert cluster.api.get_object(POLICIES, None, "standard-30d") is not None
        cluster.apply(apikey)
        try:
            cluster.wait_ready("payments", "checkout-acme-pay")
        except TimeoutError:
            raise AssertionError(cluster.condition("payments", "checkout-acme-pay")) from None
        first = cluster.secret_data("payments", "checkout-acme-pay")["api-key"]
        status, who = acme.whoami(first)
        assert status == 200 and who["permissions"] == ["charges.write", "refunds.write"]
        cluster.annotate("payments", "checkout-acme-pay", {"apikeys.dev/revoke": "leaked"})
        cluster.wait_for(lambda: acme.whoami(first)[0] == 401, what="Acme to expire the key")
        second = cluster.wait_for(
            lambda: (k := cluster.secret_data("payments", "checkout-acme-pay")["api-key"])
            != first and k, what="the new key")
        assert acme.whoami(second)[0] == 200
        cluster.stop_operator_thread()
        seen = cluster.visible_text()
        assert not cluster.recorder.leaks_in(seen + acme.log_text())
        assert "operator-to-adapter-token" not in seen + acme.log_text()
