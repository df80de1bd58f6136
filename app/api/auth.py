"""API keys: ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``; each key is one tenant."""

import hmac
from collections.abc import Mapping

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp

PUBLIC_PATHS = ("/healthz", "/readyz", "/schema", "/metrics")


class ApiKeyAuthentication(AbstractAuthenticationMiddleware):
    """Sets ``request.user`` to the tenant of the key."""

    def __init__(self, app: ASGIApp, keys: Mapping[str, str]) -> None:
        super().__init__(app, exclude=[rf"^{path}" for path in PUBLIC_PATHS])
        self._keys = [(key.encode(), tenant) for key, tenant in keys.items()]

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:  # type: ignore[type-arg]
        given = _presented_key(connection)
        if given is None:
            raise NotAuthorizedException(
                "Missing API key: send X-API-Key or Authorization: Bearer."
            )
        tenant = self.tenant_for(given.encode())
        if tenant is None:
            raise NotAuthorizedException("Unknown API key.")
        return AuthenticationResult(user=tenant, auth=None)

    def tenant_for(self, given: bytes) -> str | None:
        # Every key is compared, in constant time, so timing tells nothing about any of them.
        found = None
        for key, tenant in self._keys:
            if hmac.compare_digest(key, given):
                found = tenant
        return found


def _presented_key(connection: ASGIConnection) -> str | None:  # type: ignore[type-arg]
    key = connection.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None
