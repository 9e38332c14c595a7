"""Which names hold secrets, and hiding their values: one rule for printed settings and logs.

A value is secret when its name — a settings key, a librdkafka property, a log field, or any key
above it — matches `SECRET_NAME`: passwords and passphrases, secrets and tokens, private keys
(`ssl.key.pem`, `...private.key.pem`, `ssl.keystore.key`), JAAS and OAuth configurations
(`sasl.jaas.config`, `sasl.oauthbearer.config`), credentials, S3 keys, ZooKeeper digests. Paths
to such material (`ssl.key.location`, `tls.key_file`) are not secrets and stay visible.

`redacted` serves `--print-settings` (tasks/entrypoint.py); `redact_processor` is a structlog
processor (tasks/logs.py) so a secret passed to a log call by mistake never reaches the log.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

SECRET_NAME = re.compile(
    r"password|passwd|passphrase|secret|token|credential|jaas|oauthbearer\.config"
    r"|key\.pem|private\.key|[._-]key$|access_key_id|digest|authorization|cookie|api[-_.]?key",
    re.IGNORECASE)

MASK = "***"


def is_secret_name(name: object) -> bool:
    return bool(SECRET_NAME.search(str(name)))


def redacted(tree: Any, secret: bool = False) -> Any:
    """Plain data with every secret's value replaced by "***" (an empty one stays empty, so
    "not set" still shows); everything below a secret name is secret."""
    if isinstance(tree, dict):
        return {key: redacted(value, secret or is_secret_name(key))
                for key, value in tree.items()}
    if isinstance(tree, list | tuple):
        return [redacted(item, secret) for item in tree]
    return MASK if secret and tree not in (None, "") else tree


def redact_processor(_logger: Any, _method: str,
                     event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog: fields with a secret name are masked (their structure kept)."""
    for key in list(event):
        if key == "event" or isinstance(event[key], int | float):   # a count stays a count
            continue
        if is_secret_name(key):
            event[key] = redacted(event[key], True)
        elif isinstance(event[key], dict):
            event[key] = redacted(event[key])
    return event
