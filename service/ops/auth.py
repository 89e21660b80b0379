"""API keys: `Authorization: Bearer <key>`, checked before any route runs, failing closed.

Keys come from AE_API_KEYS and AE_API_KEYS_FILE (re-read on every reload, so keys rotate without a restart).
With neither set every endpoint is open, except the admin routes (unless AE_ADMIN_OPEN). Once either is set,
every path needs a key except the public ones (the probes, the UI, the API docs; /metrics with
AE_PUBLIC_METRICS), and a key source that yields no usable key (set but empty, a file that is empty or cannot
be read on reload) refuses every such request with 503 saying why: a broken secret never opens the service.
A missing key is answered 401 with `WWW-Authenticate: Bearer`, a wrong one 403. A candidate key is compared
with every configured key in constant time, and no key is ever logged.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

from service.errors import (
    ForbiddenError,
    KeysUnavailableError,
    ServiceError,
    UnauthorizedError,
)
from service.settings import Settings

__all__ = ["ADMIN_PREFIX", "PROBE_PATHS", "SECURITY_SCHEME", "ApiKeys", "bearer_token", "is_public_path"]

logger = logging.getLogger(__name__)

SECURITY_SCHEME = "bearerAuth"
"""The name of the bearer scheme in the OpenAPI schema."""

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})
"""Liveness and readiness probes: never behind a key, never queued by admission."""

ADMIN_PREFIX = "/admin/"

_PUBLIC_EXACT = PROBE_PATHS | {"/", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
_PUBLIC_PREFIXES = ("/ui/", "/docs/assets/")


def is_public_path(path: str, public_metrics: bool = False) -> bool:
    """Whether `path` is served without a key even when keys are configured."""
    if path in _PUBLIC_EXACT or path == "/ui" or path.startswith(_PUBLIC_PREFIXES):
        return True
    return public_metrics and path == "/metrics"


def _read_keys_file(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise RuntimeError(f"cannot read AE_API_KEYS_FILE {path}: {reason}") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def bearer_token(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The token of `Authorization: Bearer <token>`; b"" for another scheme, None without the header."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() != b"bearer":
                return b""
            return token.strip()
    return None


class ApiKeys:
    """The configured keys and whether they can be trusted; `reload()` re-reads the keys file."""

    def __init__(self, settings: Settings) -> None:
        self.configured = settings.keys_configured
        """Whether any key source is set: then every protected request needs a key."""
        self.admin_open = settings.admin_open
        self._fixed = [k.get_secret_value().encode() for k in settings.api_keys or []]
        self._sources = [
            name
            for name, given in (
                ("AE_API_KEYS", settings.api_keys is not None),
                ("AE_API_KEYS_FILE", settings.api_keys_file),
            )
            if given
        ]
        self._file = settings.api_keys_file
        self._keys: tuple[bytes, ...] = ()
        self.problem: str | None = None
        """Why no request can be accepted (a configured source with no usable key); None when keys work."""
        if self._file is not None:
            _read_keys_file(self._file)  # an unreadable file at start-up is a configuration error: fail
        self.reload()

    def reload(self) -> str | None:
        """Re-read the keys file; returns (and logs) why every request is now refused, or None."""
        if not self.configured:
            return None
        problem = None
        from_file: list[bytes] = []
        if self._file is not None:
            try:
                from_file = [k.encode() for k in _read_keys_file(self._file)]
            except RuntimeError as exc:
                problem = str(exc)
        keys = tuple(self._fixed + from_file)
        if problem is None and not keys:
            problem = f"API keys are configured ({' and '.join(self._sources)}) but hold no key"
        self._keys = () if problem else keys
        self.problem = problem
        if problem:
            logger.error("%s: every request but the probes is refused until a reload finds keys", problem)
        return problem

    @property
    def count(self) -> int:
        return len(self._keys)

    def check(self, candidate: bytes) -> bool:
        """Whether `candidate` is a configured key; compares against all of them so timing says nothing."""
        found = False
        for key in self._keys:
            found |= hmac.compare_digest(candidate, key)
        return found

    def refusal(self, path: str, headers: list[tuple[bytes, bytes]]) -> ServiceError | None:
        """Why a request to a protected `path` is refused, or None when it may go on."""
        if not self.configured:
            if path.startswith(ADMIN_PREFIX) and not self.admin_open:
                return ForbiddenError(
                    "the admin routes are off while no API keys are configured; set AE_API_KEYS or "
                    "AE_API_KEYS_FILE (or AE_ADMIN_OPEN=1 on a trusted network)"
                )
            return None
        if self.problem is not None:
            return KeysUnavailableError(f"{self.problem}; the service refuses requests until it is fixed")
        token = bearer_token(headers)
        if token is None:
            return UnauthorizedError("missing API key; send the header 'Authorization: Bearer <key>'")
        if not token:
            return UnauthorizedError("the Authorization header is not 'Bearer <key>'")
        if not self.check(token):
            return ForbiddenError("the API key is not valid")
        return None
