"""Typed keys for what the application holds, shared by the factory and the handlers."""

from aiohttp import web

from dicomweb_couch.dimse.gateway import Gateway
from dicomweb_couch.search.catalog import StudyCatalog
from dicomweb_couch.search.engine import SearchEngine
from dicomweb_couch.settings import Settings
from dicomweb_couch.store.couch import Couch
from dicomweb_couch.store.files import Part10Store

SETTINGS = web.AppKey("settings", Settings)
COUCH = web.AppKey("couch", Couch)
CATALOG = web.AppKey("catalog", StudyCatalog)
SEARCH = web.AppKey("search", SearchEngine)
GATEWAY = web.AppKey("gateway", Gateway)  # only when dimse_port is set
FILES = web.AppKey("files", Part10Store)
