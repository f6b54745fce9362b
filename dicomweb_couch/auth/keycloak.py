"""Keycloak: bearer tokens and Basic credentials, verified with python-keycloak.

A bearer token is checked here, without a call to Keycloak per request: its signature against the
realm's published keys (fetched once, again when a token names an unknown key id — at most every
``REFETCH_COOLDOWN`` s — and when ``KEYS_MAX_AGE`` has passed), its issuer, ``exp`` and ``nbf``
with ``CLOCK_SKEW``, that it is an access token, and that it is meant for this server: the
configured client in ``aud`` or as ``azp`` (OpenID Connect Core 2). Only the asymmetric JWS
algorithms are accepted, so ``alg: none`` and an HMAC keyed with the public key are refused
(RFC 8725 2.1, 3.1). With ``keycloak_introspect`` Keycloak is asked instead (RFC 7662), for opaque
tokens or immediate revocation. Basic credentials (RFC 7617), as the predecessor accepted, are
exchanged once for a token (password grant) that is kept for its lifetime; they are never logged.

Roles: realm roles count as ``realm:NAME``, client roles as ``CLIENT:NAME``, and this client's
own roles also as plain ``NAME`` (the naming of Keycloak's Node.js adapter).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import math
import os
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web
from jwcrypto import jwk, jwt
from jwcrypto.common import JWException, base64url_decode, json_decode
from keycloak import KeycloakOpenID
from keycloak.exceptions import KeycloakAuthenticationError, KeycloakConnectionError, KeycloakError

from dicomweb_couch.auth import InvalidCredentials, Permission, Principal, grant, role_map
from dicomweb_couch.errors import DicomwebError
from dicomweb_couch.settings import Settings

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
CLOCK_SKEW = 30  # seconds of clock difference tolerated on exp and nbf
REFETCH_COOLDOWN = 1.0  # seconds between key fetches caused by unknown key ids (bounds their load)
KEYS_MAX_AGE = 3600.0  # seconds: a withdrawn key stops being accepted within this time
INTROSPECTION_REUSE = 30.0  # seconds an introspection answer is reused for the same token
REMEMBERED = 1024  # principals kept for Basic credentials and introspected tokens
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

# Names in the predecessor's file ({realm, authServerUrl, clientId, clientSecret}) and in the
# keycloak.json that Keycloak's admin console exports for a client.
_FILE_KEYS = {"authServerUrl": "url", "auth-server-url": "url", "realm": "realm",
              "clientId": "client_id", "resource": "client_id", "clientSecret": "client_secret"}


@dataclass(frozen=True)
class KeycloakConfig:
    url: str
    realm: str
    client_id: str
    client_secret: str | None = None
    introspect: bool = False
    viewer_client_id: str | None = None  # OHIF's public client: its tokens are meant for this server too

    @classmethod
    def from_settings(cls, settings: Settings) -> KeycloakConfig:
        """The ``keycloak_*`` settings over the values of the ``keycloak_config`` file."""
        values = _read_file(settings.keycloak_config) if settings.keycloak_config else {}
        for name in ("url", "realm", "client_id", "client_secret"):
            if value := getattr(settings, f"keycloak_{name}"):
                values[name] = value
        missing = [f"keycloak_{name}" for name in ("url", "realm", "client_id") if not values.get(name)]
        if missing:
            raise ValueError(f"Keycloak authentication needs {', '.join(missing)}: give them in the "
                             "keycloak_config file (authServerUrl, realm, clientId) or as settings")
        if settings.keycloak_introspect and not values.get("client_secret"):
            raise ValueError("keycloak_introspect needs the client's secret (Keycloak lets only confidential clients introspect)")
        return cls(**values, introspect=settings.keycloak_introspect, viewer_client_id=settings.keycloak_viewer_client_id)


def _read_file(path: str) -> dict[str, str]:
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    values = {field: str(data[key]) for key, field in _FILE_KEYS.items() if data.get(key)}
    credentials = data.get("credentials")
    if "client_secret" not in values and isinstance(credentials, dict) and credentials.get("secret"):
        values["client_secret"] = str(credentials["secret"])
    return values


class _Remembered:
    """Principals by credential digest until they expire; past ``size`` the oldest go first."""

    def __init__(self, clock: Callable[[], float], size: int = REMEMBERED):
        self._entries: OrderedDict[bytes, tuple[float, Principal]] = OrderedDict()
        self._clock, self._size = clock, size

    def get(self, key: bytes) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: bytes, principal: Principal, expires: float) -> None:
        self._entries[key] = (expires, principal)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


class KeycloakAuthenticator:
    clock: Callable[[], float] = staticmethod(time.time)
    """Wall-clock time, for token lifetimes (``exp``, ``nbf``); replaced by tests to make expiry exact."""
    monotonic: Callable[[], float] = staticmethod(time.monotonic)
    """The clock of key fetches (cool-down, maximum age); replaced by tests likewise."""

    def __init__(self, config: KeycloakConfig, roles: Mapping[Permission, str]):
        self.realm = config.realm
        self._config, self._roles = config, dict(roles)
        # python-keycloak joins paths to the URL as a base: without the slash a path such as
        # /auth (Keycloak before 17) would be dropped.
        self._openid = KeycloakOpenID(server_url=config.url.rstrip("/") + "/", realm_name=config.realm,
                                      client_id=config.client_id, client_secret_key=config.client_secret, timeout=10)
        self._keys: jwk.JWKSet | None = None
        self._issuer = ""
        self._fetched = -math.inf
        self._lock = asyncio.Lock()
        self._remembered = _Remembered(lambda: self.clock())
        self._salt = os.urandom(32)  # digests of credentials kept in memory are useless elsewhere

    def viewer_login(self) -> dict[str, Any] | None:
        """OHIF logs in with the authorization code flow and PKCE (its default with ``code``),
        as the viewer's public client; the redirect URIs are relative to OHIF's own path."""
        if not self._config.viewer_client_id:
            return None
        return {"authority": f"{self._config.url.rstrip('/')}/realms/{self.realm}",
                "client_id": self._config.viewer_client_id, "redirect_uri": "/callback",
                "response_type": "code", "scope": "openid profile", "post_logout_redirect_uri": "/"}

    async def close(self) -> None:
        await self._openid.connection.aclose()

    async def authenticate(self, request: web.Request) -> Principal:
        scheme, _, credentials = request.headers.get(hdrs.AUTHORIZATION, "").strip().partition(" ")
        credentials = credentials.strip()
        match scheme.lower():
            case "bearer" if credentials:
                if self._config.introspect:
                    return await self._remember("bearer", credentials, INTROSPECTION_REUSE,
                                                lambda: self._introspect(credentials))
                return self._principal(await self._verify(credentials))
            case "basic" if credentials:
                return await self._remember("basic", credentials, math.inf, lambda: self._exchange(credentials))
            case "bearer" | "basic":
                raise InvalidCredentials(f"the {scheme} credentials are empty", "invalid_request")
            case "":
                raise InvalidCredentials(f"this archive needs a Keycloak access token of realm {self.realm!r}: "
                                         "send 'Authorization: Bearer TOKEN' (RFC 6750) or Basic credentials", None)
            case _:
                raise InvalidCredentials(f"the {scheme} authorization scheme is not accepted: "
                                         "send a Bearer token (RFC 6750) or Basic credentials", None)

    # -- verification ----------------------------------------------------------------------------

    async def _verify(self, token: str) -> dict[str, Any]:
        """The claims of a signed access token of this realm, checked here (see the module doc)."""
        header = _unverified_header(token)
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise InvalidCredentials(f"tokens signed with {alg!r} are not accepted, only {', '.join(ALGORITHMS)}")
        keys = await self._key_set()
        if kid is not None and keys.get_key(kid) is None:
            keys = await self._key_set(unknown_kid=True)  # the realm may have rotated its keys
            if keys.get_key(kid) is None:
                raise InvalidCredentials(f"the token is signed with key {kid!r}, which realm {self.realm!r} does not publish")
        if kid is not None and keys.get_key(kid).get("alg") not in (None, alg):
            raise InvalidCredentials(f"the token says {alg!r}, but its key {kid!r} is for {keys.get_key(kid)['alg']!r}")
        try:
            claims = await self._openid.a_decode_token(
                token, key=keys, algs=[alg], check_claims={"exp": None}, expected_type="JWS", leeway=CLOCK_SKEW)
        except jwt.JWTExpired:
            raise InvalidCredentials("the token has expired") from None
        except jwt.JWTMissingKey:
            raise InvalidCredentials("the token's signature does not verify with the realm's keys") from None
        except (JWException, ValueError, TypeError) as exc:
            raise InvalidCredentials(f"the token is not valid: {exc}") from None
        if claims.get("iss") != self._issuer:
            raise InvalidCredentials(f"the token was issued by {claims.get('iss')!r}, not by {self._issuer!r}")
        self._check(claims)
        return claims

    def _check(self, claims: Mapping[str, Any]) -> None:
        """What a signature (or Keycloak's introspection) does not say: that the token is valid
        now, is an access token (not an ID or refresh token) and is meant for this server."""
        nbf = claims.get("nbf")
        if isinstance(nbf, (int, float)) and nbf > self.clock() + CLOCK_SKEW:
            raise InvalidCredentials(f"the token is not valid before {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(nbf))}")
        typ = claims.get("typ")
        if typ is not None and str(typ).lower() != "bearer":
            raise InvalidCredentials(f"a token of type {typ!r} is not an access token")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else list(aud) if isinstance(aud, list) else []
        clients = [c for c in (self._config.client_id, self._config.viewer_client_id) if c]
        if not any(c in audiences for c in clients) and claims.get("azp") not in clients:
            raise InvalidCredentials(f"the token is not meant for this server: neither its audience {audiences} nor its "
                                     f"authorized party {claims.get('azp')!r} is {' or '.join(map(repr, clients))}")

    async def _key_set(self, unknown_kid: bool = False) -> jwk.JWKSet:
        """The realm's signing keys, fetched when missing, old, or asked for by an unknown key id."""
        async with self._lock:
            age = self.monotonic() - self._fetched
            if self._keys is None or age > KEYS_MAX_AGE or (unknown_kid and age >= REFETCH_COOLDOWN):
                await self._fetch_keys()
            assert self._keys is not None
            return self._keys

    async def _fetch_keys(self) -> None:
        self._fetched = self.monotonic()
        try:
            issuer = (await self._openid.a_well_known())["issuer"]
            keys = jwk.JWKSet()
            for key in (await self._openid.a_certs())["keys"]:
                if key.get("use", "sig") == "sig":  # Keycloak also publishes its encryption keys
                    keys.add(jwk.JWK(**key))
        except (KeycloakError, JWException, KeyError, TypeError, ValueError) as exc:
            if self._keys is None:
                raise DicomwebError(503, f"Keycloak did not give the keys of realm {self.realm!r}: {_reason(exc)}") from exc
            log.warning("Keycloak did not give the keys of realm %r, keeping the previous ones: %s", self.realm, _reason(exc))
            return
        self._issuer, self._keys = issuer, keys
        log.info("Keycloak realm %r: %d signing keys, issuer %s", self.realm, len(keys["keys"]), issuer)

    async def _introspect(self, token: str) -> dict[str, Any]:
        try:
            claims = await self._openid.a_introspect(token)
        except KeycloakError as exc:
            raise DicomwebError(503, f"Keycloak did not introspect the token: {_reason(exc)}") from exc
        if not claims.get("active"):
            raise InvalidCredentials("Keycloak says the token is not active (expired, revoked or not of this realm)")
        self._check(claims)
        return claims

    async def _exchange(self, credentials: str) -> dict[str, Any]:
        """Basic credentials for the claims of the token Keycloak gives for them (password grant)."""
        try:
            user, colon, password = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, colon = "", ""
        if not colon:
            raise InvalidCredentials("Basic credentials must be base64 of 'user:password' (RFC 7617)", "invalid_request")
        try:
            token = (await self._openid.a_token(username=user, password=password))["access_token"]
        except KeycloakAuthenticationError:
            raise InvalidCredentials(f"Keycloak refused the user name or password of {user!r}") from None
        except KeycloakConnectionError as exc:
            raise DicomwebError(503, f"Keycloak did not answer: {_reason(exc)}") from None
        except (KeycloakError, KeyError) as exc:
            raise InvalidCredentials(f"Keycloak gave no token for {user!r}: {_reason(exc)}") from None
        return await (self._introspect(token) if self._config.introspect else self._verify(token))

    async def _remember(self, kind: str, secret: str, max_age: float,
                        claims_of: Callable[[], Awaitable[dict[str, Any]]]) -> Principal:
        """The principal for these credentials, asking Keycloak only when none is remembered."""
        key = hmac.digest(self._salt, f"{kind} {secret}".encode(), "sha256")
        principal = self._remembered.get(key)
        if principal is None:
            claims = await claims_of()
            principal = self._principal(claims)
            expires = claims.get("exp")
            now = self.clock()
            expires = float(expires) if isinstance(expires, (int, float)) else now
            self._remembered.put(key, principal, min(expires, now + max_age))
        return principal

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        roles = {f"realm:{role}" for role in _roles(claims.get("realm_access"))}
        clients = claims.get("resource_access")
        for client, access in (clients.items() if isinstance(clients, dict) else ()):
            roles.update(f"{client}:{role}" for role in _roles(access))
            if client == self._config.client_id:
                roles.update(_roles(access))
        name = claims.get("preferred_username") or claims.get("sub") or "unnamed"
        return Principal(subject=str(claims.get("sub", "")), name=str(name), permissions=grant(roles, self._roles))


def _roles(access: Any) -> list[str]:
    """The ``roles`` list of a ``realm_access`` or ``resource_access`` entry."""
    roles = access.get("roles") if isinstance(access, dict) else None
    return [str(role) for role in roles] if isinstance(roles, list) else []


def _unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header of a JWS in compact serialization (the only one RFC 7519 7.2 allows), read
    only to pick the algorithm and the key."""
    header = None
    if _COMPACT_JWS.fullmatch(token):
        try:
            header = json_decode(base64url_decode(token.split(".", 1)[0]))
        except (ValueError, TypeError, UnicodeDecodeError):
            pass
    if not isinstance(header, dict):
        raise InvalidCredentials("the token is not a signed JWT (header.payload.signature)")
    return header


def _reason(exc: Exception) -> str:
    """A Keycloak error for a message: its text, never the request (which may hold a password)."""
    message = getattr(exc, "error_message", None) or str(exc) or type(exc).__name__
    return message.decode(errors="replace") if isinstance(message, bytes) else str(message)


def create(settings: Settings) -> KeycloakAuthenticator:
    config = KeycloakConfig.from_settings(settings)
    log.info("authentication: Keycloak realm %r at %s, client %r%s", config.realm, config.url,
             config.client_id, " (introspection)" if config.introspect else "")
    return KeycloakAuthenticator(config, role_map(settings))
