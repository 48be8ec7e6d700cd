"""The operator's logs: one JSON object or one readable line per record, with keys redacted.

`configure_logging` installs one stderr handler on the root logger (kopf's
loggers propagate to it; `kopf.run` does not configure logging itself) and a
`RedactingFilter` on every root handler and on kopf's `kopf.objects` logger,
whose records kopf also posts as Kubernetes events.

Redaction masks, in the message, its arguments, string extras, exception
tracebacks and stack traces:
- prefixed keys whose CRC32 checksum verifies (see `leakscan.detector`), also
  inside a base64 token (a Secret's `data`), which is masked whole;
- any key registered with `apikey_operator.redaction.register`, which covers
  unprefixed base62 / base64url / hex keys: tokens of 16+ characters of
  [A-Za-z0-9_-] are checked against the registered digests.
Each becomes `<redacted sha256:xxxxxxxxxxxx>` (the key's fingerprint). Both
formatters redact their final line once more, so extras that are arbitrary
objects cannot carry a key out either.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _PjlJsonFormatter

from apikey_operator import redaction
from apikey_operator.keys import fingerprint
from apikey_operator.leakscan.detector import MAX_KEY_LENGTH, find_keys

LogFormat = Literal["json", "text"]

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s %(objectref)s%(message)s"
# Record attributes kopf's ObjectLogger adds: `k8s_ref` is mapped to fields below,
# `settings` and `k8s_skip` are kopf internals that have no place in a log line.
_KOPF_ATTRS = ("k8s_ref", "k8s_skip", "settings")
# Fields of k8s_ref (the object a kopf handler runs for) copied into JSON lines.
_REF_FIELDS = ("namespace", "name", "kind", "uid")

# The shortest key: 16 bytes of hex is 32 characters, base62 22, base64url 22; 16
# leaves a margin and still skips the short words most log lines are made of.
MIN_REGISTERED_LENGTH = 16
_CANDIDATE = re.compile(f"[A-Za-z0-9_-]{{{MIN_REGISTERED_LENGTH},}}", re.ASCII)
_ALNUM_PIECE = re.compile(f"[A-Za-z0-9]{{{MIN_REGISTERED_LENGTH},}}", re.ASCII)


def _registered_candidates(token: str) -> Iterator[tuple[int, int]]:
    """Spans of a run of key characters that could be a whole registered key.

    Besides the run itself: the parts before and after each `_` / `-` (a key glued
    to a name on one side, `api_key_<key>`, even when the key itself contains `_`
    or `-` as base64url keys do), and alphanumeric pieces (a base62 or hex key glued
    on both sides). Lengths beyond any key's are skipped, which bounds the cost.
    """
    yield 0, len(token)
    size = len(token)
    for index, char in enumerate(token):
        if char in "_-":
            if MIN_REGISTERED_LENGTH <= size - index - 1 <= MAX_KEY_LENGTH:
                yield index + 1, size
            if MIN_REGISTERED_LENGTH <= index <= MAX_KEY_LENGTH:
                yield 0, index
    if "_" in token or "-" in token:
        for piece in _ALNUM_PIECE.finditer(token):
            yield piece.span()


def _key_spans(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, fingerprint) of every verified prefixed key and registered key in `text`.

    A base64 token holding a key spans the whole token, with the key's fingerprint.
    Spans may overlap; `redact` masks the outermost.
    """
    for finding in find_keys(text):
        yield finding.start, finding.end, finding.fingerprint
    for run in _CANDIDATE.finditer(text):
        token, offset = run.group(), run.start()
        for start, end in _registered_candidates(token):
            if redaction.is_registered(token[start:end]):
                yield offset + start, offset + end, fingerprint(token[start:end])


def redact(text: str) -> str:
    """`text` with every verified prefixed key and every registered key masked by fingerprint."""
    spans = sorted(set(_key_spans(text)), key=lambda span: (span[0], -span[1]))
    if not spans:
        return text
    parts: list[str] = []
    position = 0
    for start, end, key_fingerprint in spans:
        if start < position:  # inside a longer span already masked
            continue
        parts.append(text[position:start])
        parts.append(f"<redacted {key_fingerprint}>")
        position = end
    parts.append(text[position:])
    return "".join(parts)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    if type(value) in (list, tuple):  # not subclasses: a namedtuple takes other arguments
        return type(value)(_redact_value(item) for item in value)
    return value


_TRACEBACK_FORMATTER = logging.Formatter()
# Set on a record once redacted, to the message it then had: code that replaces
# `record.msg` afterwards gets it redacted again. Underscored: formatters skip it.
_DONE = "_apikey_redacted"
_RECORD_ATTRS = frozenset(RESERVED_ATTRS) | {"message", "asctime", *_KOPF_ATTRS}


class RedactingFilter(logging.Filter):
    """Masks keys in a record before any handler formats it; never drops a record.

    The message is rendered once (msg % args), redacted, and stored back with no
    args; an exception is rendered to `exc_text` and `exc_info` cleared, so no
    formatter can render the raw exception (and the key in its message) again.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        # The same record passes kopf's logger filter, then each root handler's filter.
        if record.__dict__.get(_DONE) is record.msg:
            return True
        if isinstance(record.msg, dict):
            record.msg = _redact_value(record.msg)
        else:
            try:
                message = record.getMessage()
            except (TypeError, ValueError, KeyError):
                # Mismatched args: keep what can be shown rather than lose the record.
                message = f"{record.msg} {record.args!r}"
            record.msg = redact(message)
            record.args = None
        if record.exc_info:
            record.exc_text = _TRACEBACK_FORMATTER.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for attr, value in list(record.__dict__.items()):
            if attr not in _RECORD_ATTRS and not attr.startswith("_"):
                setattr(record, attr, _redact_value(value))
        record.__dict__[_DONE] = record.msg
        return True


def _object_ref(record: logging.LogRecord) -> dict[str, Any]:
    ref = getattr(record, "k8s_ref", None)
    return ref if isinstance(ref, dict) else {}


class JsonFormatter(_PjlJsonFormatter):
    """One JSON object per record: timestamp, level, logger, message, the object, extras."""

    def __init__(self) -> None:
        super().__init__(reserved_attrs=[*RESERVED_ATTRS, *_KOPF_ATTRS])

    def add_fields(
        self,
        log_data: dict[str, Any],
        record: logging.LogRecord,
        message_dict: dict[str, Any],
    ) -> None:
        created = datetime.fromtimestamp(record.created, tz=UTC)
        log_data["timestamp"] = created.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["message"] = record.message
        ref = _object_ref(record)
        for field in _REF_FIELDS:
            if ref.get(field):
                log_data[field] = ref[field]
        # Extras (`extra={"event": "Rotated"}`), a dict message, exc_info / stack_info.
        super().add_fields(log_data, record, message_dict)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class TextFormatter(logging.Formatter):
    """`<UTC time> <LEVEL> <logger> [namespace/name] <message>`, one line per record."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        created = datetime.fromtimestamp(record.created, tz=UTC)
        return created.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def format(self, record: logging.LogRecord) -> str:
        ref = _object_ref(record)
        namespace, name = ref.get("namespace"), ref.get("name")
        # Through __dict__: the format string reads it like any record attribute.
        record.__dict__["objectref"] = (
            f"[{namespace}/{name}] " if namespace else f"[{name}] " if name else ""
        )
        try:
            return redact(super().format(record))
        finally:
            record.__dict__.pop("objectref", None)


class _OperatorHandler(logging.StreamHandler[TextIO]):
    """Marks the handler `configure_logging` owns, so a second call replaces it."""


def configure_logging(
    log_format: LogFormat, level: str = "INFO", *, stream: TextIO | None = None
) -> None:
    """Log to `stream` (default stderr) in `log_format` at `level`, with redaction everywhere.

    Idempotent: a repeated call replaces this module's handler and keeps other handlers
    (each root handler gets the redacting filter, once).
    """
    if log_format not in ("json", "text"):
        raise ValueError(f"log format must be 'json' or 'text', not {log_format!r}")
    handler = _OperatorHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _OperatorHandler)]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for existing in root.handlers:
        install_redaction(existing)
    # kopf posts the records of this logger as Kubernetes events through its own handler.
    install_redaction(logging.getLogger("kopf.objects"))


def install_redaction(target: logging.Handler | logging.Logger) -> None:
    """Add a RedactingFilter to a handler or logger unless it already has one."""
    if not any(isinstance(f, RedactingFilter) for f in target.filters):
        target.addFilter(RedactingFilter())
