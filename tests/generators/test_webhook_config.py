"""Config validation of the webhook generator: one message per bad field, nothing insecure."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from apikey_operator.config import ConfigError, Settings, build_generators
from apikey_operator.generators import GeneratorConfigError, factory_for
from apikey_operator.generators.webhook import WebhookGenerator, parse_settings

pytestmark = pytest.mark.unit


@pytest.fixture
def token(tmp_path: pathlib.Path) -> str:
    path = tmp_path / "token"
    path.write_text("s3cret-token\n", encoding="utf-8")
    return str(path)


@pytest.fixture
def ca_file(tmp_path: pathlib.Path) -> str:
    from apikey_operator.testing.vendor import _write_tls_files

    return str(_write_tls_files(tmp_path)[2])


def test_a_minimal_https_block_gets_the_defaults(token: str) -> None:
    settings = parse_settings("vendor", {"type": "webhook", "url": "https://adapter.example/v1/",
                                         "tokenFile": token})
    assert settings.url == "https://adapter.example/v1"
    assert (settings.timeout, settings.max_retries, settings.ca_file) == (10.0, 3, None)
    assert settings.token_file == token and settings.token_secret_name is None


def test_a_token_secret_defaults_its_key_to_token() -> None:
    settings = parse_settings("vendor", {"type": "webhook", "url": "https://a.example",
                                         "tokenSecret": {"name": "vendor-token"}})
    assert (settings.token_secret_name, settings.token_secret_key) == ("vendor-token", "token")


def test_every_field_is_read(token: str, ca_file: str) -> None:
    settings = parse_settings("vendor", {
        "type": "webhook", "url": "https://127.0.0.1:8443", "tokenFile": token,
        "timeoutSeconds": 2.5, "maxRetries": 0, "caFile": ca_file})
    assert (settings.timeout, settings.max_retries, settings.ca_file) == (2.5, 0, ca_file)


def test_http_is_allowed_only_when_asked_for_and_then_warned_about(
    token: str, caplog: pytest.LogCaptureFixture
) -> None:
    block = {"type": "webhook", "url": "http://127.0.0.1:8080", "tokenFile": token}
    with pytest.raises(GeneratorConfigError, match="must use https"):
        parse_settings("vendor", block)
    generator = factory_for("webhook")("vendor", {**block, "allowInsecureHttp": True},
                                       "apikey-operator")
    assert isinstance(generator, WebhookGenerator)
    assert generator.settings.url == "http://127.0.0.1:8080"
    assert "over plain http (allowInsecureHttp): for tests only" in caplog.text


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("no url", {"url": None}, "url: is required"),
    ("a relative url", {"url": "adapter/keys"}, "url: must be an absolute https:// URL"),
    ("an ftp url", {"url": "ftp://adapter.example"}, "url: must be an absolute https:// URL"),
    ("credentials in the url", {"url": "https://user:pw@adapter.example"},
     "url: must not carry credentials"),
    ("a query", {"url": "https://adapter.example/?x=1"}, "must not have a query"),
    ("no token", {"url": "https://a.example", "tokenFile": None},
     "exactly one of tokenSecret and tokenFile"),
    ("two tokens", {"tokenSecret": {"name": "t"}}, "exactly one of tokenSecret and tokenFile"),
    ("an unreadable token file", {"tokenFile": "/nonexistent/token"}, "tokenFile: cannot read"),
    ("a bad Secret name", {"tokenFile": None, "tokenSecret": {"name": "Not_A_Name"}},
     "tokenSecret.name: 'Not_A_Name' is not valid"),
    ("a Secret in another namespace", {"tokenFile": None,
                                      "tokenSecret": {"name": "t", "namespace": "other"}},
     "tokenSecret.namespace: is not a known field"),
    ("a timeout of zero", {"timeoutSeconds": 0}, "timeoutSeconds: must be between"),
    ("a string timeout", {"timeoutSeconds": "10s"}, "timeoutSeconds: must be a number"),
    ("too many retries", {"maxRetries": 50}, "maxRetries: must be between 0 and 10"),
    ("a missing CA file", {"caFile": "/nonexistent/ca.pem"}, "caFile: cannot read"),
    ("a switch to skip TLS checks", {"insecureSkipVerify": True},
     "insecureSkipVerify: is not a known field"),
    ("a CA file over http", {"url": "http://a.example", "allowInsecureHttp": True,
                             "caFile": "CA"}, "caFile: has no effect on an http:// URL"),
]


@pytest.mark.parametrize(("change", "message"), [(c, m) for _, c, m in BAD],
                         ids=[i for i, _, _ in BAD])
def test_a_bad_block_is_refused_with_a_message_naming_the_field(
    token: str, ca_file: str, change: dict[str, Any], message: str
) -> None:
    block: dict[str, Any] = {"type": "webhook", "url": "https://adapter.example",
                             "tokenFile": token}
    block.update({k: (ca_file if v == "CA" else v) for k, v in change.items()})
    block = {k: v for k, v in block.items() if v is not None}
    with pytest.raises(GeneratorConfigError, match="generator 'vendor' is misconfigured") as info:
        parse_settings("vendor", block)
    assert message in str(info.value)


def test_an_empty_token_file_is_refused_at_start_up(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "token"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(GeneratorConfigError, match="is empty"):
        parse_settings("vendor", {"type": "webhook", "url": "https://a.example",
                                  "tokenFile": str(path)})


def test_a_ca_file_without_a_certificate_is_refused(token: str, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "ca.pem"
    path.write_text("not a certificate\n", encoding="utf-8")
    with pytest.raises(GeneratorConfigError, match=r"caFile: .* holds no PEM certificate"):
        parse_settings("vendor", {"type": "webhook", "url": "https://a.example",
                                  "tokenFile": token, "caFile": str(path)})


def test_the_token_never_appears_in_a_config_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "token"
    path.write_text("tok en with spaces\n", encoding="utf-8")
    with pytest.raises(GeneratorConfigError) as info:
        parse_settings("vendor", {"type": "webhook", "url": "https://a.example",
                                  "tokenFile": str(path)})
    assert "not allowed in an HTTP header" in str(info.value)
    assert "tok en" not in str(info.value)


def test_the_registry_builds_a_webhook_generator(token: str) -> None:
    generator = factory_for("webhook")("vendor", {"type": "webhook",
                                                  "url": "https://a.example",
                                                  "tokenFile": token}, "apikey-operator")
    assert isinstance(generator, WebhookGenerator)
    assert (generator.name, generator.type_name) == ("vendor", "webhook")


def test_the_operator_refuses_to_start_with_a_bad_generator_block() -> None:
    settings = Settings(generator_configs={"vendor": {"type": "webhook",
                                                      "url": "http://a.example"}})
    with pytest.raises(ConfigError, match=r"generators\.vendor: .*url: must use https"):
        build_generators(settings)
