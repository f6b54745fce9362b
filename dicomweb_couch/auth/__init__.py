"""Authentication and role-based access: one small interface, one module per provider.

A provider (``none``, ``keycloak``; the ``auth`` setting picks one) turns a request's credentials
into a :class:`Principal` holding the permissions its roles grant. One middleware decides from
the method and path alone which permission a request needs, so every route — today's and those
added later — is covered without touching a handler. Challenges and error codes follow RFC 6750
(Bearer tokens): 401 for missing or bad credentials, 403 for a valid token without the role.
Adding another OpenID Connect provider is a new module here with a ``create(settings)`` function.
"""

from __future__ import annotations

import enum
import importlib
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import MultiMapping

from dicomweb_couch.errors import DicomwebError
from dicomweb_couch.settings import Settings

log = logging.getLogger(__name__)


class Permission(enum.StrEnum):
    READ = "read"  # QIDO-RS, WADO-RS, WADO-URI
    WRITE = "write"  # STOW-RS
    DELETE = "delete"  # removing studies, series, instances


@dataclass(frozen=True)
class Principal:
    """Who sent the request (for the log) and what they may do."""

    subject: str
    name: str
    permissions: frozenset[Permission]


class InvalidCredentials(Exception):
    """Missing or unacceptable credentials: a 401. ``error`` is the RFC 6750 3.1 code, None when
    the request carried no credentials the server understands (then none is sent)."""

    def __init__(self, message: str, error: str | None = "invalid_token"):
        super().__init__(message)
        self.error = error


class Authenticator(Protocol):
    realm: str  # named in the WWW-Authenticate challenge (RFC 6750 3)

    async def authenticate(self, request: web.Request) -> Principal:
        """The request's principal; raises :class:`InvalidCredentials`."""

    def viewer_login(self) -> dict[str, Any] | None:
        """The entry of OHIF's ``oidc`` configuration that logs in with this provider, or None."""

    async def close(self) -> None:
        """Release connections to the identity provider."""


def role_map(settings: Settings) -> dict[Permission, str]:
    """The role each permission needs ("" = any authenticated user), from the settings."""
    return {Permission.READ: settings.auth_read_role, Permission.WRITE: settings.auth_write_role,
            Permission.DELETE: settings.auth_delete_role}


def grant(roles: Collection[str], required: Mapping[Permission, str]) -> frozenset[Permission]:
    """The permissions whose required role is among ``roles``."""
    return frozenset(p for p, role in required.items() if not role or role in roles)


OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Health checks and metrics: probes and scrapers carry no user's token, and these hold no patient data."""


def required_permission(method: str, path: str, query: MultiMapping[str]) -> Permission | None:
    """What a request needs, by method; None for what stays open.

    Open: CORS preflights (browsers send them without credentials, Fetch standard 3.2.2), the
    landing page (``/`` without a WADO-URI query; counts only for an authorized user), the
    health checks and metrics (:data:`OPEN_PATHS`) and the OHIF
    Viewer's files under ``/ohif/``, which hold no data and log the user in themselves.
    """
    if method == "OPTIONS" or path == "/ohif" or path.startswith("/ohif/"):
        return None
    if path == "/" and not query and method in ("GET", "HEAD"):
        return None
    if path in OPEN_PATHS and method in ("GET", "HEAD"):
        return None
    if method in ("GET", "HEAD"):
        return Permission.READ
    return Permission.DELETE if method == "DELETE" else Permission.WRITE


def challenge(realm: str, error: str | None, description: str = "") -> str:
    """A ``WWW-Authenticate: Bearer`` value (RFC 6750 3); quotes and non-ASCII left out of the
    description, which the RFC restricts to printable ASCII without ``"`` and ``\\``."""
    value = f'Bearer realm="{realm}"'
    if error:
        value += f', error="{error}"'
        text = "".join(c for c in description if " " <= c <= "~" and c not in '"\\')
        if text:
            value += f', error_description="{text}"'
    return value


def create(settings: Settings) -> Authenticator:
    """The provider named by the ``auth`` setting (a module of this package)."""
    name = settings.auth_provider
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        raise ValueError(f"auth={name} needs the {exc.name} package: pip install 'dicomweb_couch[{name}]'") from exc
    return module.create(settings)


def middleware(authenticator: Authenticator, settings: Settings) -> Middleware:
    """Let a request through only with the permission it needs (see :func:`required_permission`)."""
    roles = role_map(settings)

    @web.middleware
    async def authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
        needed = required_permission(request.method, request.path, request.query)
        if needed is None:
            return await handler(request)
        try:
            principal = await authenticator.authenticate(request)
        except InvalidCredentials as exc:
            raise DicomwebError(401, str(exc), {"WWW-Authenticate": challenge(authenticator.realm, exc.error, str(exc))})
        if needed not in principal.permissions:
            message = f"{principal.name!r} may not {needed} here: that needs the role {roles[needed]!r}"
            raise DicomwebError(403, message, {"WWW-Authenticate": challenge(
                authenticator.realm, "insufficient_scope", message)})
        if needed is not Permission.READ:
            log.info("%s %s by %s (%s)", request.method, request.path, principal.name, principal.subject)
        return await handler(request)

    return authorize


AUTHENTICATOR = web.AppKey("authenticator", Authenticator)


def install(app: web.Application, settings: Settings) -> None:
    """Add the provider's middleware (inside the error middleware) and close it with the app."""
    authenticator = app[AUTHENTICATOR] = create(settings)

    async def close(_: web.Application) -> None:
        await authenticator.close()

    app.middlewares.append(middleware(authenticator, settings))
    app.on_cleanup.append(close)
