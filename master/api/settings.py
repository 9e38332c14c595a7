"""Settings of a master's HTTP API: named tokens, the auth mode, body size limit, forwarding,
this master's id.

Part of the master's settings (the core nests it, e.g. `MasterSettings.api`); loaded like every
settings object from YAML, `EXPORTD_*` variables and flags (tasks.settings).

Tokens carry a name, which the audit line of every write names (never the secret). Each of
`read_tokens` / `admin_tokens` is given in any of these forms:

    admin_tokens: {ci: "s3cr3t...", ops: "..."}    # name -> token (EXPORTD_API__ADMIN_TOKENS__CI)
    admin_tokens: [{name: ci, token: "s3cr3t..."}]
    admin_tokens: ["s3cr3t..."]  or  "s3cr3t..."    # unnamed: admin-1, admin-2, ... by position
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from tasks.settings import Duration, SettingsModel

TOKEN_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ApiToken(SettingsModel):
    """One bearer token and the name the audit log knows it by."""

    name: str = Field(pattern=TOKEN_NAME)
    token: str = Field(min_length=1, repr=False)


def named_tokens(role: str, value: Any) -> Any:
    """Any accepted form of a token list as [{name, token}]: a mapping is name -> token; a
    string, or a string item of a list, is named `<role>-<position>` (1-based)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if isinstance(value, Mapping):
        return [{"name": str(name), "token": token} for name, token in value.items()]
    if isinstance(value, list):
        return [{"name": f"{role}-{i}", "token": item} if isinstance(item, str) else item
                for i, item in enumerate(value, start=1)]
    return value


class ApiSettings(SettingsModel):
    # `tokens` (the default): every route but health, readiness, metrics and the API document
    # needs a token, and a master without any refuses to start. `none`: no auth at all, which
    # the master allows only on a loopback listen address (master/api/auth.py, check_auth_mode).
    auth: Literal["tokens", "none"] = "tokens"
    # A read token may call GET routes; an admin token may call every route.
    read_tokens: list[ApiToken] = Field(default_factory=list)
    admin_tokens: list[ApiToken] = Field(default_factory=list)
    # Request bodies above this are refused with 413 before they are parsed.
    max_body_bytes: int = Field(default=256 * 1024, gt=0)
    # A client must send a request's head (request line and headers) within this after it
    # connects (the TLS handshake, first, has the same bound) or after its previous answer,
    # else the connection is answered 408 and closed: also how long an idle kept-alive
    # connection stays open (master/api/listener.py). A body must arrive within `body_timeout`
    # once the handler reads it (408).
    header_timeout: Duration = Field(default=5.0, gt=0)
    body_timeout: Duration = Field(default=10.0, gt=0)
    # The id of the master serving this API (answers /healthz, guards against forward loops).
    master_id: str = ""
    # How long a standby waits for the leader when it forwards a write.
    forward_timeout: Duration = 15.0
    # How long it waits for the leader's answer to a read before answering from its own
    # ZooKeeper view instead (master/api/forward.py).
    read_forward_timeout: Duration = 3.0

    @model_validator(mode="before")
    @classmethod
    def _name_tokens(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        out = dict(data)
        for role in ("read", "admin"):
            key = f"{role}_tokens"
            if key in out:
                out[key] = named_tokens(role, out[key])
        return out

    @model_validator(mode="after")
    def _check(self) -> ApiSettings:
        tokens = self.tokens()
        names = [token.name for token, _ in tokens]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"token names must be unique: {', '.join(twice)} used twice")
        secrets = [token.token for token, _ in tokens]
        if len(set(secrets)) != len(secrets):
            raise ValueError("the same token is configured twice (give each its own)")
        if self.auth == "none" and tokens:
            raise ValueError("api.auth is 'none' but tokens are configured: remove the tokens "
                             "or set api.auth: tokens")
        return self

    def tokens(self) -> list[tuple[ApiToken, str]]:
        """Every configured token with its role ("read" or "admin")."""
        return ([(token, "admin") for token in self.admin_tokens]
                + [(token, "read") for token in self.read_tokens])

    @property
    def open_mode(self) -> bool:
        """No auth at all (`auth: none`)."""
        return self.auth == "none"
