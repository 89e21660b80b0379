"""Optional API keys: `Authorization: Bearer <key>`, checked before any route runs (by `FrontMiddleware`).

Keys come from AE_API_KEYS and AE_API_KEYS_FILE (re-read on every reload, so keys rotate without a restart).
With no key configured every endpoint is open. With keys, every path needs one except the public ones: the
liveness and readiness probes (also the v2 ones), the UI page and the API docs, and /metrics when
AE_PUBLIC_METRICS is set. A request without a key is answered 401 with `WWW-Authenticate: Bearer`, one with a
wrong key 403. The key is compared with every configured key in constant time, and is never logged.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

from starlette.types import Scope, Send

from service.errors import send_error
from service.settings import Settings

__all__ = ["PROBE_PATHS", "SECURITY_SCHEME", "ApiKeys", "check_key", "is_public_path", "refuse"]

logger = logging.getLogger(__name__)

SECURITY_SCHEME = "bearerAuth"
"""The name of the bearer scheme in the OpenAPI schema."""

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})
"""Liveness and readiness probes: never behind a key, never queued by admission."""

_PUBLIC_EXACT = PROBE_PATHS | {"/", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
_PUBLIC_PREFIXES = ("/ui/",)


def is_public_path(path: str, public_metrics: bool = False) -> bool:
    """Whether `path` is served without a key even when keys are configured."""
    if path in _PUBLIC_EXACT or path == "/ui" or path.startswith(_PUBLIC_PREFIXES):
        return True
    return public_metrics and path == "/metrics"


def _read_keys_file(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuntimeError(f"cannot read AE_API_KEYS_FILE {path}: {exc.strerror}") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


class ApiKeys:
    """The configured keys; `reload()` re-reads the keys file."""

    def __init__(self, settings: Settings) -> None:
        self._fixed = [k.get_secret_value().encode() for k in settings.api_keys]
        self._file = settings.api_keys_file
        self._keys: tuple[bytes, ...] = ()
        self.reload()

    def reload(self) -> int:
        """Re-read the keys file (a missing or unreadable file raises); returns how many keys there are."""
        from_file = [k.encode() for k in _read_keys_file(self._file)] if self._file else []
        self._keys = tuple(self._fixed + from_file)
        return len(self._keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    @property
    def possible(self) -> bool:
        """Whether keys can ever be required: some are fixed, or a keys file (re-read on reload) is set."""
        return bool(self._fixed) or self._file is not None

    def check(self, candidate: bytes) -> bool:
        """Whether `candidate` is a configured key; compares against all of them so timing says nothing."""
        found = False
        for key in self._keys:
            found |= hmac.compare_digest(candidate, key)
        return found


def _bearer_token(scope: Scope) -> bytes | None:
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() != b"bearer":
                return b""
            return token.strip()
    return None


def check_key(scope: Scope, keys: ApiKeys) -> tuple[int, str] | None:
    """Why a request to a protected path is refused (status, message), or None when its key is valid."""
    token = _bearer_token(scope)
    if token is None:
        return 401, "missing API key; send the header 'Authorization: Bearer <key>'"
    if not token:
        return 401, "the Authorization header is not 'Bearer <key>'"
    if not keys.check(token):
        return 403, "the API key is not valid"
    return None


async def refuse(scope: Scope, send: Send, status: int, message: str) -> None:
    """Answer a refused request: 401 (with WWW-Authenticate) or 403."""
    headers = [(b"www-authenticate", b'Bearer realm="autoencoder-serving"')] if status == 401 else []
    await send_error(scope, send, status, message, headers)
