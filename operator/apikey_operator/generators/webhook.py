"""Keys minted by an outside vendor, through an HTTPS adapter the platform team runs.

The protocol (docs/webhook-generator.md): `POST {url}/keys` mints a key for one
ApiKey version and answers `{"id", "key"}`; `DELETE {url}/keys/{id}` revokes it.
Every call carries `Authorization: Bearer <token>`; a mint also carries
`Idempotency-Key: <uid>-<version>`, so a mint retried after a lost answer (or
after an operator restart) returns the key minted the first time instead of a
second one.

Error mapping: 4xx other than 408/429 is the vendor refusing (`GeneratorError`,
no retry here); 408, 429, 5xx, timeouts and broken connections are retried
with capped, jittered exponential backoff (Retry-After honoured) and, once the
retries are spent, become `GeneratorUnavailable`. A 401 first re-reads the
token once (it may have been rotated) and retries at once. Messages carry the
method, path template and status only: never the key, the token or a response
body (an adapter may echo what it was sent).
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import json
import logging
import random
import re
import ssl
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import aiohttp

from apikey_operator import redaction
from apikey_operator.generators import register
from apikey_operator.generators.base import (
    GeneratorConfigError,
    GeneratorError,
    GeneratorUnavailable,
    MintedKey,
)
from apikey_operator.keys import KeyFormat
from apikey_operator.stores.base import KeyRef
from apikey_operator.stores.settings import ConfigReader

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_RETRIES = 3
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 8.0
# A Retry-After longer than this is not slept through inside one reconcile: the error
# goes back to the reconciler with the hint, which reschedules the key instead.
MAX_INLINE_RETRY_AFTER = 10.0
MAX_ANSWER_BYTES = 64 * 1024
MAX_KEY_LENGTH = 1024
# Starts with an alphanumeric so that no id can be "." or ".." inside the DELETE path.
EXTERNAL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,255}")
# Printable ASCII without spaces: a key ends up in HTTP headers and env vars.
_KEY_CHARS = re.compile(r"[\x21-\x7e]+")
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")
_SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")
USER_AGENT = "apikey-operator-webhook-generator"


@dataclass(frozen=True)
class WebhookSettings:
    """One validated `generators.<name>` block of type webhook."""

    url: str  # no trailing slash
    token_secret_name: str | None = None
    token_secret_key: str = "token"
    token_file: str | None = None
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    max_retries: int = DEFAULT_MAX_RETRIES
    ca_file: str | None = None


def parse_settings(name: str, raw: Mapping[str, Any]) -> WebhookSettings:
    """Validate a config block; raise GeneratorConfigError listing every bad field."""
    reader = ConfigReader(name, raw)
    url = reader.string("url")
    insecure = reader.boolean("allowInsecureHttp", False)
    timeout = reader.number("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS, minimum=0.1, maximum=300)
    max_retries = reader.integer("maxRetries", DEFAULT_MAX_RETRIES, minimum=0, maximum=10)
    ca_file = reader.readable_file("caFile") if raw.get("caFile") is not None else None
    token_file = reader.readable_file("tokenFile") if raw.get("tokenFile") is not None else None
    secret_name: str | None = None
    secret_key = "token"
    if raw.get("tokenSecret") is not None:
        section = reader.section("tokenSecret")
        secret_name = section.string("name", pattern=_SECRET_NAME, hint="not a Secret name")
        secret_key = section.string("key", "token", pattern=_SECRET_KEY, hint="not a Secret key")
        section.no_unknown_fields()
    else:
        reader.section("tokenSecret")  # mark as known
    reader.no_unknown_fields()

    if url:
        _check_url(url, insecure, ca_file, reader)
    if (secret_name is None) == (token_file is None):
        reader.problem("tokenSecret", "exactly one of tokenSecret and tokenFile is required")
    if token_file and not reader.problems:
        try:
            _token_from_text(_read_text(token_file), token_file)
        except GeneratorError as exc:
            reader.problem("tokenFile", str(exc))
    if ca_file and not reader.problems:
        try:
            ssl.create_default_context(cafile=ca_file)
        except (ssl.SSLError, ValueError):
            reader.problem("caFile", f"{ca_file} holds no PEM certificate")
    if reader.problems:
        raise GeneratorConfigError(
            f"generator {name!r} is misconfigured: " + "; ".join(reader.problems)
        )
    return WebhookSettings(
        url=url.rstrip("/"),
        token_secret_name=secret_name,
        token_secret_key=secret_key,
        token_file=token_file,
        timeout=timeout,
        max_retries=max_retries,
        ca_file=ca_file,
    )


def _check_url(url: str, insecure: bool, ca_file: str | None, reader: ConfigReader) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        reader.problem("url", "must be an absolute https:// URL")
    elif parts.scheme == "http" and not insecure:
        reader.problem("url", "must use https (allowInsecureHttp: true is for tests only)")
    elif parts.scheme == "http" and ca_file:
        reader.problem("caFile", "has no effect on an http:// URL")
    if parts.username or parts.password:
        reader.problem("url", "must not carry credentials (use tokenSecret or tokenFile)")
    if parts.query or parts.fragment:
        reader.problem("url", "must not have a query or a fragment")


# --- the bearer token --------------------------------------------------------------------------


class SecretReader(Protocol):
    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise GeneratorError(f"cannot read the token file {path} ({type(exc).__name__})") from None


def _token_from_text(text: str, where: str) -> str:
    token = text.strip()
    if not token:
        raise GeneratorError(f"{where} is empty")
    if not _TOKEN_CHARS.fullmatch(token):
        raise GeneratorError(f"{where} holds characters not allowed in an HTTP header")
    return token


class TokenSource:
    """The bearer token, read once and cached; `refresh` re-reads it (after a 401)."""

    def __init__(
        self, settings: WebhookSettings, namespace: str, secrets: Callable[[], SecretReader]
    ) -> None:
        self._settings = settings
        self._namespace = namespace
        self._secrets = secrets
        self._cached: str | None = None

    async def get(self) -> str:
        if self._cached is None:
            self._cached = await self._read()
        return self._cached

    async def refresh(self, stale: str) -> str:
        """A fresh read, unless another call already replaced `stale`."""
        if self._cached is not None and self._cached != stale:
            return self._cached
        self._cached = await self._read()
        return self._cached

    async def _read(self) -> str:
        s = self._settings
        if s.token_file is not None:
            text = await asyncio.to_thread(_read_text, s.token_file)
            return _token_from_text(text, f"token file {s.token_file}")
        assert s.token_secret_name is not None
        where = f"token Secret {self._namespace}/{s.token_secret_name}"
        # Imported here: the Kubernetes client is only needed with tokenSecret.
        from apikey_operator.kube import KubeError, KubeTransient, decode_data

        try:
            obj = await self._secrets().get_secret(self._namespace, s.token_secret_name)
        except KubeTransient as exc:
            raise GeneratorUnavailable(f"reading the {where}: {exc}", exc.retry_after) from None
        except KubeError as exc:
            raise GeneratorError(f"reading the {where}: {exc}") from None
        if obj is None:
            raise GeneratorError(f"{where} does not exist")
        data = decode_data(obj.get("data"))
        if s.token_secret_key not in data:
            raise GeneratorError(f"{where} has no key {s.token_secret_key!r}")
        return _token_from_text(data[s.token_secret_key], f"{where} key {s.token_secret_key!r}")


# --- pure helpers: retry timing, status mapping, answer validation ----------------------------


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def backoff_delay(
    attempt: int,
    rng: Callable[[], float],
    base: float = BACKOFF_BASE_SECONDS,
    cap: float = BACKOFF_CAP_SECONDS,
) -> float:
    """Delay before retry number `attempt` (0-based): capped exponential, equal jitter."""
    ceiling = min(cap, base * 2.0**attempt)
    return ceiling / 2 + rng() * ceiling / 2


def is_transient_status(status: int) -> bool:
    """408, 429 and 5xx are worth retrying; every other non-success is an answer."""
    return status in (408, 429) or status >= 500


def status_text(status: int) -> str:
    """`503 Service Unavailable`: the standard phrase, never the server's own reason text."""
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


# An id that long found inside the key is key material (short ones, like a shared prefix, are not).
MIN_KEYLIKE_ID = 12


def minted_from_answer(payload: object) -> MintedKey:
    """The key and id from a mint answer; GeneratorError naming the bad field (not its value)."""
    if not isinstance(payload, Mapping):
        raise GeneratorError("the mint answer is not a JSON object")
    key, key_id = payload.get("key"), payload.get("id")
    if not isinstance(key_id, str) or not EXTERNAL_ID.fullmatch(key_id):
        raise GeneratorError(
            "the mint answer has no valid 'id' (1..256 characters of "
            "A-Z a-z 0-9 . _ : -, starting with a letter or digit)"
        )
    if not isinstance(key, str) or not key:
        raise GeneratorError("the mint answer has no 'key'")
    if len(key) > MAX_KEY_LENGTH or not _KEY_CHARS.fullmatch(key):
        raise GeneratorError(
            f"the mint answer's 'key' is not 1..{MAX_KEY_LENGTH} printable "
            "ASCII characters without spaces"
        )
    # The id is logged, stored in metadata and put in DELETE paths: it must not be (or hold a
    # long run of) the key itself. Registered first, so even this refusal's log line is masked.
    redaction.register(key)
    if key in key_id or (len(key_id) >= MIN_KEYLIKE_ID and key_id in key):
        raise GeneratorError(
            "the mint answer's 'id' is (or is part of) the key itself; a vendor must identify "
            "keys by an id that is not key material"
        )
    return MintedKey(key=key, external_id=key_id)


# --- the generator -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    status: int
    payload: object


class WebhookGenerator:
    """Mints and revokes keys through one configured adapter endpoint."""

    type_name: ClassVar[str] = "webhook"

    def __init__(
        self,
        name: str,
        settings: WebhookSettings,
        operator_namespace: str,
        *,
        secrets: SecretReader | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.settings = settings
        self._secret_reader = secrets
        self._own_kube: Any = None
        self._tokens = TokenSource(settings, operator_namespace, self._secrets)
        self._sleep = sleep
        self._rng = rng
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._ssl: ssl.SSLContext | None = None
        if settings.url.startswith("https://"):
            # Verification stays on: the system CAs, or only the configured CA bundle.
            self._ssl = ssl.create_default_context(cafile=settings.ca_file)

    def _secrets(self) -> SecretReader:
        if self._secret_reader is None:
            from apikey_operator.kube import KubeClient

            self._own_kube = KubeClient()
            self._secret_reader = self._own_kube
        return self._secret_reader

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                # Proxies from the environment are not used: the adapter is the platform's own.
                trust_env=False,
            )
            self._session_loop = loop
        return self._session

    async def mint(
        self, ref: KeyRef, version: int, key_format: KeyFormat, scopes: Sequence[str]
    ) -> MintedKey:
        if not ref.uid:
            raise GeneratorError("the ApiKey has no uid to build an idempotency key from")
        body = {
            "namespace": ref.namespace,
            "name": ref.name,
            "uid": ref.uid,
            "version": version,
            "scopes": list(scopes),
            "format": {
                "length": key_format.length,
                "encoding": key_format.encoding,
                "prefix": key_format.prefix,
            },
        }
        answer = await self._call(
            "POST", "/keys", "/keys", body, {"Idempotency-Key": f"{ref.uid}-{version}"}
        )
        if answer.status not in (200, 201):
            raise GeneratorError(
                f"POST /keys answered {status_text(answer.status)}, expected 201 or 200"
            )
        minted = minted_from_answer(answer.payload)
        logger.info(
            "generator %s minted version %d of %s/%s (vendor id %s)",
            self.name,
            version,
            ref.namespace,
            ref.name,
            minted.external_id,
        )
        return minted

    async def revoke(self, ref: KeyRef, external_id: str) -> None:
        if not EXTERNAL_ID.fullmatch(external_id):
            raise GeneratorError("the stored vendor id is not a valid key id")
        path = "/keys/" + urllib.parse.quote(external_id, safe="._:-")
        answer = await self._call("DELETE", path, "/keys/{id}", None, {})
        if answer.status == 404:
            logger.info(
                "generator %s: vendor id %s of %s/%s was already revoked",
                self.name,
                external_id,
                ref.namespace,
                ref.name,
            )
            return
        if answer.status not in (200, 202, 204):
            raise GeneratorError(f"DELETE /keys/{{id}} answered {status_text(answer.status)}")
        logger.info(
            "generator %s revoked vendor id %s of %s/%s",
            self.name,
            external_id,
            ref.namespace,
            ref.name,
        )

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
        if self._own_kube is not None:
            await self._own_kube.close()
            self._own_kube = None
            self._secret_reader = None

    async def _call(
        self, method: str, path: str, what_path: str, body: object, headers: Mapping[str, str]
    ) -> _Answer:
        """One logical call with retries; returns the first non-transient answer.

        4xx answers other than 401 are returned for the caller to judge (a 404 on DELETE
        is success); a 401 re-reads the token once. Transient failures are retried and
        finally raised as GeneratorUnavailable.
        """
        what = f"{method} {what_path}"
        token = await self._tokens.get()
        refreshed = False
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                answer, retry_after = await self._send(method, path, body, headers, token)
                failure = status_text(answer.status)
            except TimeoutError:
                answer, failure = None, f"timed out after {self.settings.timeout:g}s"
            except aiohttp.ClientConnectorCertificateError:
                raise GeneratorError(
                    f"{what}: TLS verification of the adapter failed; check "
                    "caFile (or the url's host name)"
                ) from None
            except aiohttp.ClientSSLError:
                raise GeneratorError(f"{what}: TLS handshake with the adapter failed") from None
            except aiohttp.ClientError as exc:
                answer, failure = None, f"connection failed ({type(exc).__name__})"
            if answer is not None and answer.status == 401:
                if refreshed:
                    raise GeneratorError(
                        f"{what} answered {status_text(401)}: the adapter refused the token"
                    )
                refreshed = True
                token = await self._tokens.refresh(token)
                continue
            if answer is not None and not is_transient_status(answer.status):
                if 300 <= answer.status < 400:
                    raise GeneratorError(f"{what} answered {failure}; redirects are not followed")
                if answer.status >= 400 and not (method == "DELETE" and answer.status == 404):
                    raise GeneratorError(f"{what} answered {failure}")
                return answer
            if attempt >= self.settings.max_retries:
                raise GeneratorUnavailable(
                    f"{what}: {failure} (after {attempt + 1} attempts)", retry_after
                )
            if retry_after is not None and retry_after > MAX_INLINE_RETRY_AFTER:
                raise GeneratorUnavailable(f"{what}: {failure}", retry_after)
            delay = retry_after if retry_after is not None else backoff_delay(attempt, self._rng)
            attempt += 1
            logger.warning(
                "generator %s: %s: %s; retry %d/%d in %.1fs",
                self.name,
                what,
                failure,
                attempt,
                self.settings.max_retries,
                delay,
            )
            await self._sleep(delay)

    async def _send(
        self, method: str, path: str, body: object, headers: Mapping[str, str], token: str
    ) -> tuple[_Answer, float | None]:
        all_headers = {"Authorization": f"Bearer {token}", **headers}
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            all_headers["Content-Type"] = "application/json"
        async with self._client().request(
            method,
            self.settings.url + path,
            data=data,
            headers=all_headers,
            ssl=self._ssl if self._ssl is not None else True,
            allow_redirects=False,
        ) as response:
            raw = await response.content.read(MAX_ANSWER_BYTES + 1)
            retry_after = parse_retry_after(response.headers.get("Retry-After"), self._clock())
            status = response.status
        payload: object = None
        if 200 <= status < 300 and raw:
            if len(raw) > MAX_ANSWER_BYTES:
                raise GeneratorError(f"{method} answer is larger than {MAX_ANSWER_BYTES} bytes")
            try:
                payload = json.loads(raw)
            except ValueError:
                raise GeneratorError(f"{method} answer is not JSON") from None
        return _Answer(status, payload), retry_after


@register("webhook")
def webhook_generator(
    name: str, config: Mapping[str, Any], operator_namespace: str,
    kube: SecretReader | None = None,
) -> WebhookGenerator:
    """The registry's factory: validates the block and builds the generator (no I/O yet)."""
    settings = parse_settings(name, config)
    if settings.url.startswith("http://"):
        logger.warning("generator %s sends its bearer token and keys over plain http "
                       "(allowInsecureHttp): for tests only", name)
    return WebhookGenerator(name, settings, operator_namespace, secrets=kube)
