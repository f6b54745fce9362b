"""No authentication, the default: anyone may read, store and delete, as with the predecessor.

Fit for a laptop or a closed network only; a deployment holding patient data beyond that
should use an identity provider (see ``keycloak``).
"""

from __future__ import annotations

from aiohttp import web

from dicomweb_couch.auth import Permission, Principal
from dicomweb_couch.settings import Settings

ANYONE = Principal(subject="anonymous", name="anonymous", permissions=frozenset(Permission))


class NoAuthentication:
    realm = "dicomweb_couch"

    async def authenticate(self, request: web.Request) -> Principal:
        return ANYONE

    def viewer_login(self) -> None:
        return None

    async def close(self) -> None:
        return None


def create(settings: Settings) -> NoAuthentication:
    return NoAuthentication()
