"""Operator logging: JSON and text lines, and redaction of keys wherever they would appear."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import kopf
import pytest
from kopf._core.actions.loggers import ObjectLogger
from kopf._core.engines import posting

from apikey_operator import keys, redaction
from apikey_operator.logging import RedactingFilter, configure_logging, redact

pytestmark = pytest.mark.unit

BODY = {
    "apiVersion": "apikeys.dev/v1alpha1",
    "kind": "ApiKey",
    "metadata": {"namespace": "payments", "name": "billing-client", "uid": "u-1"},
}
TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (?P<level>[A-Z]+) +(?P<logger>\S+) "
    r"(?:\[(?P<ref>[^\]]+)\] )?(?P<message>.*)$"
)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """The operator's log stream; root handlers, level and kopf's filters restored after."""
    root = logging.getLogger()
    kopf_objects = logging.getLogger("kopf.objects")
    saved = (root.handlers[:], root.level, kopf_objects.filters[:])
    saved_filters = {id(h): h.filters[:] for h in root.handlers}
    yield io.StringIO()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    kopf_objects.filters[:] = saved[2]
    for handler in root.handlers:
        handler.filters[:] = saved_filters.get(id(handler), handler.filters)


def _json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _key(encoding: keys.Encoding = "base62", prefix: str = "bill_") -> str:
    return keys.generate(keys.KeyFormat(encoding=encoding, prefix=prefix))


def _masked(key: str) -> str:
    return f"<redacted {keys.fingerprint(key)}>"


# --- formats ---------------------------------------------------------------------------


def test_json_lines_parse_and_carry_the_standard_fields(stream: io.StringIO) -> None:
    configure_logging("json", stream=stream)
    logging.getLogger("apikey_operator.test").info("provisioned version %d", 3)
    logging.getLogger("apikey_operator.test").debug("below the level")
    (line,) = _json_lines(stream)
    assert line["level"] == "INFO"
    assert line["logger"] == "apikey_operator.test"
    assert line["message"] == "provisioned version 3"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(line["timestamp"]))
    assert list(line)[:4] == ["timestamp", "level", "logger", "message"]


def test_json_lines_carry_the_kopf_object_and_extras(stream: io.StringIO) -> None:
    configure_logging("json", stream=stream)
    object_logger = ObjectLogger(body=kopf.Body(BODY), settings=kopf.OperatorSettings())
    object_logger.info("rotated", extra={"event": "Rotated", "version": 4})
    (line,) = _json_lines(stream)
    assert line["namespace"] == "payments"
    assert line["name"] == "billing-client"
    assert line["kind"] == "ApiKey"
    assert line["uid"] == "u-1"
    assert line["event"] == "Rotated"
    assert line["version"] == 4
    assert line["logger"] == "kopf.objects"
    # kopf's internals stay out of the line.
    assert not {"settings", "k8s_ref", "k8s_skip"} & set(line)


def test_json_exceptions_are_one_line_with_the_traceback_as_a_field(stream: io.StringIO) -> None:
    configure_logging("json", stream=stream)
    try:
        raise RuntimeError("store down")
    except RuntimeError:
        logging.getLogger("t").exception("reconcile failed")
    (line,) = _json_lines(stream)
    assert line["message"] == "reconcile failed"
    assert "RuntimeError: store down" in str(line["exc_info"])


def test_text_lines_are_readable_single_lines(stream: io.StringIO) -> None:
    configure_logging("text", level="debug", stream=stream)
    logging.getLogger("apikey_operator.x").debug("gathered %s", "payments/billing-client")
    ObjectLogger(body=kopf.Body(BODY), settings=kopf.OperatorSettings()).warning("store slow")
    first, second = stream.getvalue().splitlines()
    match = TEXT_LINE.match(first)
    assert match is not None
    assert match["level"] == "DEBUG"
    assert match["logger"] == "apikey_operator.x"
    assert match["ref"] is None
    assert match["message"] == "gathered payments/billing-client"
    match = TEXT_LINE.match(second)
    assert match is not None
    assert (match["level"], match["logger"], match["ref"], match["message"]) == (
        "WARNING",
        "kopf.objects",
        "payments/billing-client",
        "store slow",
    )


def test_configuring_twice_replaces_the_handler(stream: io.StringIO) -> None:
    configure_logging("text", stream=io.StringIO())
    configure_logging("json", stream=stream)
    logging.getLogger("t").info("once")
    assert len(_json_lines(stream)) == 1
    kopf_filters = logging.getLogger("kopf.objects").filters
    assert sum(isinstance(f, RedactingFilter) for f in kopf_filters) == 1


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        configure_logging("yaml")  # type: ignore[arg-type]


# --- redaction -------------------------------------------------------------------------


@pytest.mark.parametrize("log_format", ["json", "text"])
@pytest.mark.parametrize("encoding", keys.ENCODINGS)
def test_prefixed_keys_are_redacted_in_message_and_args(
    stream: io.StringIO, log_format: str, encoding: keys.Encoding
) -> None:
    configure_logging(log_format, stream=stream)  # type: ignore[arg-type]
    in_message, in_args = _key(encoding), _key(encoding, "ops_")
    logging.getLogger("t").info(f"generated {in_message} then %s", in_args)
    output = stream.getvalue()
    assert in_message not in output
    assert in_args not in output
    assert _masked(in_message) in output
    assert _masked(in_args) in output


@pytest.mark.parametrize("encoding", keys.ENCODINGS)
def test_registered_unprefixed_keys_are_redacted(
    stream: io.StringIO, encoding: keys.Encoding
) -> None:
    configure_logging("json", stream=stream)
    key = keys.generate(keys.KeyFormat(encoding=encoding))
    redaction.register(key)
    logging.getLogger("t").warning("key=%s glued: api_key_%s (%r)", key, key, key)
    (line,) = _json_lines(stream)
    assert key not in stream.getvalue()
    assert line["message"] == (
        f"key={_masked(key)} glued: api_key_{_masked(key)} ('{_masked(key)}')"
    )


def test_unregistered_unprefixed_strings_are_left_alone() -> None:
    # Without a prefix or a registration nothing marks a string as a key.
    digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    assert redact(f"resourceVersion digest {digest}") == f"resourceVersion digest {digest}"


def test_keys_in_exception_messages_and_tracebacks_are_redacted(stream: io.StringIO) -> None:
    configure_logging("json", stream=stream)
    prefixed = _key()
    unprefixed = keys.generate(keys.KeyFormat(encoding="base64url"))
    redaction.register(unprefixed)
    try:
        try:
            raise KeyError(unprefixed)
        except KeyError as inner:
            raise ValueError(f"bad key {prefixed}") from inner
    except ValueError:
        logging.getLogger("t").exception("failed for %s", prefixed)
    output = stream.getvalue()
    assert prefixed not in output
    assert unprefixed not in output
    (line,) = _json_lines(stream)
    assert f"ValueError: bad key {_masked(prefixed)}" in str(line["exc_info"])
    assert f"KeyError: \"'{_masked(unprefixed)}'\"" in str(line["exc_info"]) or _masked(
        unprefixed
    ) in str(line["exc_info"])
    assert line["message"] == f"failed for {_masked(prefixed)}"


def test_keys_in_text_tracebacks_and_stack_info_are_redacted(stream: io.StringIO) -> None:
    configure_logging("text", stream=stream)
    key = _key("hex")
    try:
        raise RuntimeError(key)
    except RuntimeError:
        logging.getLogger("t").error("x", exc_info=True, stack_info=True)
    output = stream.getvalue()
    assert key not in output
    assert f"RuntimeError: {_masked(key)}" in output
    assert "Stack (most recent call last)" in output


def test_keys_in_extras_and_dict_messages_are_redacted(stream: io.StringIO) -> None:
    configure_logging("json", stream=stream)
    key = _key()

    class Opaque:
        def __str__(self) -> str:
            return f"Opaque({key})"

    logging.getLogger("t").info("x", extra={"detail": {"keys": [key]}, "obj": Opaque()})
    logging.getLogger("t").info({"event": "Provisioned", "leaked": key})
    assert key not in stream.getvalue()
    first, second = _json_lines(stream)
    assert first["detail"] == {"keys": [_masked(key)]}
    assert first["obj"] == f"Opaque({_masked(key)})"
    assert second["leaked"] == _masked(key)


def test_a_base64_encoded_key_is_masked_whole(stream: io.StringIO) -> None:
    configure_logging("json", stream=stream)
    key = _key()
    token = base64.b64encode(key.encode()).decode()
    logging.getLogger("t").info("secret data %s", {"api-key": token})
    (line,) = _json_lines(stream)
    assert token not in stream.getvalue()
    assert line["message"] == f"secret data {{'api-key': '{_masked(key)}'}}"


def test_mismatched_arguments_still_log_without_the_key(stream: io.StringIO) -> None:
    configure_logging("text", stream=stream)
    key = _key()
    logging.getLogger("t").info("two %s %s", key)
    assert key not in stream.getvalue()
    assert _masked(key) in stream.getvalue()


@pytest.mark.parametrize(
    "message",
    [
        "rotated payments/billing-client to version 4 (sha256:1f2e3d4c5b6a)",
        "ApiKey uid 28307486-6a60-4cab-9951-6af835381b0e in namespace team-a-long-namespace",
        "store vault:secret/apikeys/payments/billing-client unavailable: HTTP 503",
        "next rotation at 2026-12-28T00:00:00Z, grace 24h, policy standard-30d",
        "POST https://vendor.example/v1/keys?idempotency=abc 200 in 12ms",
        "module apikey_operator.stores.aws_secrets_manager_backend loaded",
    ],
)
def test_ordinary_messages_are_untouched(stream: io.StringIO, message: str) -> None:
    configure_logging("text", stream=stream)
    logging.getLogger("t").info(message)
    match = TEXT_LINE.match(stream.getvalue().rstrip("\n"))
    assert match is not None
    assert match["message"] == message


def test_a_mangled_prefixed_key_is_not_mistaken_for_a_key() -> None:
    key = _key()
    mangled = key[:-1] + ("0" if key[-1] != "0" else "1")
    assert redact(f"rejected presented key {mangled}") == f"rejected presented key {mangled}"


async def test_kopf_events_posted_from_logs_are_redacted(stream: io.StringIO) -> None:
    configure_logging("json", stream=stream)
    queue: asyncio.Queue[posting.K8sEvent] = asyncio.Queue()
    loop_token = posting.event_queue_loop_var.set(asyncio.get_running_loop())
    queue_token = posting.event_queue_var.set(queue)
    settings = kopf.OperatorSettings()
    settings.posting.loggers = True  # kopf 1.45 posts log records as events only when asked
    try:
        key = _key("base64url")
        ObjectLogger(body=kopf.Body(BODY), settings=settings).info("provisioned %s", key)
    finally:
        posting.event_queue_var.reset(queue_token)
        posting.event_queue_loop_var.reset(loop_token)
    event = queue.get_nowait()
    assert event.message == f"provisioned {_masked(key)}"
    assert key not in stream.getvalue()


def test_the_filter_keeps_every_record() -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "k %s", (_key(),), None)
    assert RedactingFilter().filter(record) is True
    assert record.args is None
    assert str(record.msg).startswith("k <redacted sha256:")


KOPF_PROBE = """
import sys
import kopf
from apikey_operator.logging import configure_logging

KEY = sys.argv[1]

@kopf.on.login()
def no_credentials(**_):
    return None  # no cluster: kopf gives up after its startup activities

@kopf.on.startup()
async def startup(logger, **_):
    logger.info("startup generated %s", KEY)
    raise kopf.PermanentError(f"failing with {KEY}")

configure_logging("json")
kopf.run(standalone=True, clusterwide=True)
"""


def test_kopf_run_logs_json_lines_through_the_redacting_filter(tmp_path: Path) -> None:
    """kopf.run does not reconfigure logging: its own records come out as redacted JSON."""
    key = _key()
    probe = tmp_path / "probe.py"
    probe.write_text(KOPF_PROBE, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(probe), key],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "KUBECONFIG": str(tmp_path / "none")},
    )
    assert result.returncode != 0
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    messages = [str(line["message"]) for line in lines]
    assert f"startup generated {_masked(key)}" in messages
    # kopf reports the failed activity with the exception's message: masked as well.
    assert any(
        f"failing with {_masked(key)}" in str(line["message"]) + str(line.get("exc_info", ""))
        for line in lines
    )
    assert any(line["logger"].startswith("kopf.") for line in lines)
    for line in lines:
        assert {"timestamp", "level", "logger", "message"} <= set(line)
    logged = "\n".join(json.dumps(line) for line in lines)
    assert key not in logged
