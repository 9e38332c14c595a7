"""The HTTP client of exportctl: tries each master in turn until one answers.

Standard library only (urllib): a CLI call is a handful of requests, and the API forwards writes
to the leader itself, so any master that answers will do. A master that cannot be reached, or
answers 503 (no leader yet, not ready), is skipped for the next; the first other answer is the
result. The master that answered is tried first on the next request (drain --wait polls).

TLS: masters serve https; `--ca FILE` / `EXPORTD_CA` names the cluster CA to verify them with
(else the system's trust store). A certificate that does not verify is one clear line naming
the fix, not a skip to the next master. The token goes only to the masters named: a redirect to
another origin (scheme, host, port) is not followed but reported, so the Authorization header
never reaches a host the operator did not name.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

DEFAULT_MASTER = "https://127.0.0.1:8080"


class CliError(Exception):
    """An error to print as one line; `exit_code` 1 for API/connection errors, 2 for usage."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class ApiError(CliError):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(describe_error(status, body), 1)
        self.status = status
        self.body = body


def describe_error(status: int, body: Any) -> str:
    """From an API error body {error, message, details?}: one line, or, when the details list
    several problems (a job spec), a line for each, so a bad job file is fixed in one go."""
    if not isinstance(body, dict) or "message" not in body:
        text = body if isinstance(body, str) and body.strip() else "no details"
        return f"HTTP {status}: {' '.join(str(text).split())[:200]}"
    code = body.get("error", "error")
    details = body.get("details")
    problems = details.get("problems") if isinstance(details, dict) else None
    if isinstance(problems, list) and len(problems) > 1:
        lines = [f"{code}: {len(problems)} problems (HTTP {status}):"]
        for problem in problems:
            if isinstance(problem, dict):
                lines.append(f"  {problem.get('field') or '(spec)'}: "
                             f"{problem.get('reason') or 'invalid'}")
        return "\n".join(lines)
    return f"{code}: {body['message']} (HTTP {status})"


NO_TOKEN = ("no API token given: set EXPORTD_TOKEN to a read token (to look) or an admin "
            "token (to change things)")


def master_urls(flags: Sequence[str] | None, environ: Mapping[str, str]) -> list[str]:
    """--master flags, else EXPORTD_MASTERS (comma-separated), else the local default; each
    with a scheme (https unless given) and without a trailing slash."""
    raw = list(flags or []) or [u for u in environ.get("EXPORTD_MASTERS", "").split(",")]
    urls = [u.strip().rstrip("/") for u in raw if u.strip()] or [DEFAULT_MASTER]
    return [u if "://" in u else f"https://{u}" for u in urls]


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """How masters' certificates are verified: against `ca_file` (the cluster CA, PEM), else
    the system's trust store. CliError (one line) for a file that is missing or not a CA."""
    if not ca_file:
        return ssl.create_default_context()
    if not Path(ca_file).is_file():
        raise CliError(f"the CA file {ca_file} (--ca / EXPORTD_CA) does not exist", 2)
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (ssl.SSLError, ValueError) as exc:
        raise CliError(f"the CA file {ca_file} (--ca / EXPORTD_CA) holds no usable PEM "
                       f"certificate: {' '.join(str(exc).split())}", 2) from exc


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only within the origin asked (headers, the token included, go with
    it); a redirect elsewhere is an error, so the token never goes to another host."""

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int,
                         msg: str, headers: Any, newurl: str) -> urllib.request.Request | None:
        if origin(newurl) != origin(req.full_url):
            raise CliError(f"{req.full_url} redirected to {newurl}, another origin: not "
                           "following it (the token is sent only to the masters named)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


VIEW = "X-Exportd-View"   # master/api/forward.py (exportctl imports nothing of the master)


class Client:
    def __init__(self, masters: Sequence[str], token: str | None, timeout: float,
                 ca_file: str | None = None) -> None:
        self.masters = list(masters)
        self.token = token
        self.timeout = timeout
        self.ca_file = ca_file
        self._opener: urllib.request.OpenerDirector | None = None
        # A standby answered from its own ZooKeeper view (no leader answered it): no task
        # states, loads or histories in that answer (master/api/forward.py).
        self.standby_view = False

    def request(self, method: str, path: str, *, query: Mapping[str, str | None] | None = None,
                body: bytes | None = None, content_type: str | None = None) -> Any:
        """The decoded JSON answer (None for an empty one), or ApiError / CliError."""
        params = {k: v for k, v in (query or {}).items() if v}
        target = path + ("?" + urllib.parse.urlencode(params) if params else "")
        failures: list[str] = []
        unavailable: ApiError | None = None
        for base in list(self.masters):
            try:
                status, answer, view = self._once(base, method, target, body, content_type)
            except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
                untrusted = _certificate_problem(exc)
                if untrusted:
                    hint = ("check --ca / EXPORTD_CA" if self.ca_file else
                            "pass the cluster CA with --ca FILE or EXPORTD_CA")
                    raise CliError(f"{base}: the master's certificate is not trusted "
                                   f"({untrusted}): {hint}") from exc
                failures.append(f"{base} ({_reason(exc)})")
                continue
            if status == 503:
                unavailable = ApiError(status, answer)
                failures.append(f"{base} (503: {unavailable.message})")
                continue
            # Ask this master first next time.
            self.masters.remove(base)
            self.masters.insert(0, base)
            if status == 401 and not self.token:
                raise ApiError(status, {"error": "unauthorized", "message": NO_TOKEN})
            if status >= 400:
                raise ApiError(status, answer)
            self.standby_view = self.standby_view or view == "zookeeper"
            return answer
        if unavailable is not None and len(failures) == 1:
            raise unavailable
        raise CliError("no master answered: " + "; ".join(failures))

    def _once(self, base: str, method: str, target: str, body: bytes | None,
              content_type: str | None) -> tuple[int, Any, str | None]:
        request = urllib.request.Request(base + target, data=body, method=method)
        request.add_header("Accept", "application/json")
        if content_type:
            request.add_header("Content-Type", content_type)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if self._opener is None:
            self._opener = urllib.request.build_opener(
                urllib.request.HTTPSHandler(context=tls_context(self.ca_file)),
                _SameOriginRedirects())
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.status, _decode(response.read()), response.headers.get(VIEW)
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, _decode(exc.read()), None


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _certificate_problem(exc: BaseException) -> str | None:
    """The verification failure behind a connection error, if that is what it is."""
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, ssl.SSLCertVerificationError):
        return reason.verify_message or "certificate verify failed"
    return None


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    return " ".join(str(reason).split()) or type(reason).__name__
