"""Typed keys for what the application holds, shared by the factory and the handlers."""

from aiohttp import web

from .catalog import StudyCatalog
from .couch import Couch
from .settings import Settings

SETTINGS = web.AppKey("settings", Settings)
COUCH = web.AppKey("couch", Couch)
CATALOG = web.AppKey("catalog", StudyCatalog)
