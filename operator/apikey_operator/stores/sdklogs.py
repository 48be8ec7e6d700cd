"""SDK loggers kept from ever writing a request or response body (a key) to a log."""

from __future__ import annotations

import logging

# SDK loggers whose DEBUG records carry request or response bodies, i.e. keys.
BODY_LOGGERS = ("botocore.endpoint", "botocore.parsers", "botocore.awsrequest")


class _DropDebug(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


_DROP_DEBUG = _DropDebug()


# SDK namespaces kept at INFO whatever the root level: several of their DEBUG loggers
# print request parameters (a SecretString is a key), and new ones appear across releases.
SDK_NAMESPACES = ("botocore", "boto3", "s3transfer", "hvac", "urllib3", "azure", "msal")


def silence_sdk_body_logging(names: tuple[str, ...] = BODY_LOGGERS) -> None:
    """Drop the DEBUG records of SDK loggers that print request/response bodies, so
    turning on DEBUG logging can never write a key to a log. Idempotent."""
    for name in names:
        logger = logging.getLogger(name)
        if _DROP_DEBUG not in logger.filters:
            logger.addFilter(_DROP_DEBUG)
    for namespace in SDK_NAMESPACES:
        sdk_logger = logging.getLogger(namespace)
        if sdk_logger.getEffectiveLevel() < logging.INFO or sdk_logger.level == logging.NOTSET:
            sdk_logger.setLevel(logging.INFO)
