"""Settings of a master's HTTP API: tokens, body size limit, forwarding, this master's id.

Part of the master's settings (the core nests it, e.g. `MasterSettings.api`); loaded like every
settings object from YAML, `EXPORTD_*` variables and flags (tasks.settings).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from tasks.settings import Duration, SettingsModel


def _one_or_many(value: Any) -> Any:
    """A single token is a list of one: the Helm chart passes a Secret's token as one
    single-quoted string, which holds any character (a list in YAML would not)."""
    return [value] if isinstance(value, str) else value


Tokens = Annotated[list[str], BeforeValidator(_one_or_many)]


class ApiSettings(SettingsModel):
    # Bearer tokens. A read token may call GET routes; an admin token may call every route.
    # Both empty: open dev mode (no auth), logged loudly when the app is created.
    read_tokens: Tokens = Field(default_factory=list)
    admin_tokens: Tokens = Field(default_factory=list)
    # Request bodies above this are refused with 413 before they are parsed.
    max_body_bytes: int = Field(default=256 * 1024, gt=0)
    # The id of the master serving this API (answers /healthz, guards against forward loops).
    master_id: str = ""
    # How long a standby waits for the leader when it forwards a write.
    forward_timeout: Duration = 15.0
    # How long it waits for the leader's answer to a read before answering from its own
    # ZooKeeper view instead (master/api/forward.py).
    read_forward_timeout: Duration = 3.0

    @property
    def open_mode(self) -> bool:
        return not self.read_tokens and not self.admin_tokens
