"""The application factory: routes, middlewares and the CouchDB connection's life cycle."""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from dicomweb_couch import auth
from dicomweb_couch.appkeys import CATALOG, COUCH, FILES, GATEWAY, SEARCH, SETTINGS
from dicomweb_couch.dimse.gateway import Gateway
from dicomweb_couch.dimse.services import LoopBridge, Services
from dicomweb_couch.errors import error_middleware
from dicomweb_couch.search.catalog import StudyCatalog
from dicomweb_couch.search.engine import SearchEngine
from dicomweb_couch.settings import Settings
from dicomweb_couch.store import design_docs, tuning
from dicomweb_couch.store.couch import Couch, CouchUnavailable
from dicomweb_couch.store.file_store import FileStore, open_part10_store
from dicomweb_couch.web import (
    bulkdata,
    cors,
    delete,
    frames,
    health,
    landing,
    metrics,
    paths,
    qido,
    rendered,
    retrieve,
    stow,
    viewer,
    wado_rs,
    wado_uri,
)

log = logging.getLogger(__name__)


async def _couch_context(app: web.Application) -> AsyncIterator[None]:
    """Connect (waiting for CouchDB), install the design documents, log the viewer's roots."""
    settings = app[SETTINGS]
    couch = Couch(settings.couch_url, settings.database, settings.couch_user, settings.couch_password,
                  timeout=settings.couch_timeout, view_timeout=settings.couch_view_timeout)
    info = await couch.open(settings.couch_wait)
    log.info("CouchDB %s at %s, database %r", info.get("version"), couch.url, settings.database)
    for doc_id, content in design_docs.load().items():
        if await couch.install_design_doc(doc_id, content):
            log.info("installed design document %s (its indexes rebuild on the next query)", doc_id)
    app[COUCH] = couch
    try:
        await tuning.check(couch)
    except CouchUnavailable as exc:
        log.info("could not check CouchDB's settings for images: %s", exc)
    background = []
    try:
        files = await open_part10_store(couch, settings.file_store)
    except (ValueError, OSError) as exc:
        await couch.close()
        raise CouchUnavailable(f"file_store: {exc}") from exc
    app[FILES] = files
    if isinstance(files, FileStore):
        background.append(asyncio.create_task(files.sweep()))
        log.info("Part 10 files are kept in the file store %s", settings.file_store)
    app[CATALOG] = StudyCatalog(couch, settings.catalog_file)
    await app[CATALOG].open()  # in a thread; a checkpoint found means searches can start at once
    app[SEARCH] = SearchEngine(couch, app[CATALOG], default_limit=settings.qido_default_limit,
                               max_limit=settings.qido_max_limit, patience=settings.index_patience)
    warmer = asyncio.create_task(app[CATALOG].keep_warm(settings.index_refresh))
    root = f"http://{settings.host}:{settings.port}"
    log.info("DICOMweb root (OHIF qidoRoot/wadoRoot): %s%s", root, settings.prefix)
    log.info("WADO-URI root (OHIF wadoUriRoot): %s%s/wado", root, settings.prefix)
    log.info("OHIF Viewer: %s%s/ (%s)", root, viewer.MOUNT, viewer.build_problem(app[viewer.VIEWER_DIR]) or "installed")
    yield
    for task in (warmer, *background):
        task.cancel()
    await asyncio.gather(warmer, *background, return_exceptions=True)
    await app[CATALOG].close()
    await couch.close()


def _dimse_context(gateway: Gateway) -> Callable[[web.Application], AsyncIterator[None]]:
    """Start the DIMSE gateway once the database is open; stop it (in a thread: its association
    threads may be waiting for this loop) before the database closes."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        services = Services(app[COUCH], app[FILES], app[SEARCH], LoopBridge(asyncio.get_running_loop()),
                            gateway.settings.dimse_ae_title, gateway.remote_aes)
        gateway.start(services)
        yield
        await asyncio.to_thread(gateway.stop)

    return context


def create_app(settings: Settings) -> web.Application:
    if settings.log_level != "DEBUG":
        # pydicom warns about every odd value of every stored file; the STOW response already
        # says what was refused and why, so its chatter would only drown the server's own log.
        logging.getLogger("pydicom").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=r"pydicom\.")
    app = web.Application(middlewares=[error_middleware, paths.check_uids])
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_couch_context)
    if settings.dimse_port:
        app[GATEWAY] = gateway = Gateway(settings)  # checks the DIMSE settings now, not at start-up
        app.cleanup_ctx.append(_dimse_context(gateway))
    auth.install(app, settings)
    p = settings.prefix
    study, series, instance = p + "/studies/{study}", p + "/studies/{study}/series/{series}", \
        p + "/studies/{study}/series/{series}/instances/{instance}"
    app.add_routes([
        web.post(p + "/studies", stow.store),
        web.post(study, stow.store),
        web.get(p + "/studies", qido.search_studies),
        web.get(study + "/series", qido.search_series),
        web.get(series + "/instances", qido.search_instances),
        web.get(study + "/instances", qido.search_instances),
        web.get(p + "/series", qido.search_series),
        web.get(p + "/instances", qido.search_instances),
        web.get(study + "/metadata", wado_rs.metadata),
        web.get(series + "/metadata", wado_rs.metadata),
        web.get(instance + "/metadata", wado_rs.metadata),
        *[web.get(path, retrieve.retrieve) for path in (study, series, instance)],
        web.get(instance + "/frames/{frames}", frames.retrieve_frames),
        web.get(instance + "/bulkdata/{path:.+}", bulkdata.retrieve_bulkdata),
        *[web.get(path + "/rendered", rendered.resource_rendered) for path in (study, series)],
        web.get(instance + "/rendered", rendered.instance_rendered),
        web.get(instance + "/frames/{frames}/rendered", rendered.frames_rendered),
        *[web.get(path + "/thumbnail", rendered.thumbnail) for path in (study, series, instance)],
        *[web.delete(path, delete.delete) for path in (study, series, instance)],
        web.get("/", landing.index),
        web.get(p + "/wado", wado_uri.retrieve),
    ])
    if p:
        app.router.add_get("/wado", wado_uri.retrieve)
    viewer.setup(app, settings.ohif_dir)
    cors.setup(app, settings.cors_origins)
    health.setup(app)
    if settings.metrics:
        metrics.setup(app)
    return app
