"""``python -m dicomweb_couch [serve] [options]``: run the server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from aiohttp import web

from dicomweb_couch import __version__
from dicomweb_couch.app import create_app
from dicomweb_couch.commands import COMMANDS
from dicomweb_couch.commands.workers import supervise
from dicomweb_couch.settings import ENV_PREFIX, Settings
from dicomweb_couch.store.couch import CouchUnavailable
from dicomweb_couch.web.health import DRAINING
from dicomweb_couch.web.metrics import JsonLogFormatter

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m dicomweb_couch",
        description="DICOMweb server (STOW-RS, QIDO-RS, WADO-RS, WADO-URI) storing DICOM in CouchDB. "
        f"Every option can also be set by an environment variable {ENV_PREFIX}<NAME> "
        f"(e.g. {ENV_PREFIX}COUCH_URL) or in a JSON config file (see config/). Other commands: "
        + (", ".join(f"{name} ({text})" for name, (_, text) in COMMANDS.items()) or "none"),
    )
    p.add_argument("--config", help="JSON settings file (env: DICOMWEB_COUCH_CONFIG); see config/example.json")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all interfaces)")
    p.add_argument("--port", type=int, help="port to listen on (default 5985)")
    p.add_argument("--couch-url", help="CouchDB server URL (default http://127.0.0.1:5984)")
    p.add_argument("--couch-user", help="CouchDB user; Apache CouchDB 3 needs an admin to create the database")
    p.add_argument("--couch-password", help="CouchDB password (prefer the environment variable DICOMWEB_COUCH_COUCH_PASSWORD)")
    p.add_argument("--database", help="CouchDB database name (default 'chronicle', as dcmjs-org/dicomweb-server)")
    p.add_argument("--prefix", help="URL prefix of the DICOMweb routes, e.g. /dicom-web (default: at the root)")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level (default INFO)")
    p.add_argument("--cors-origins", help="origins whose pages may call the API, comma-separated "
                   "(default * = any; '' = none), e.g. https://viewer.example.org")
    p.add_argument("--ohif-dir", help="the OHIF Viewer build served at /ohif/ (default var/ohif; "
                   "python scripts/ohif.py install puts the pinned one there)")
    p.add_argument("--ohif-config", help="an OHIF app-config.js to serve instead of the generated one")
    p.add_argument("--workers", type=int, help="server processes sharing the port (default 1); see README")
    p.add_argument("--version", action="version", version=f"dicomweb_couch {__version__}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = vars(parse_args(argv))
    config = args.pop("config")
    try:
        settings = Settings.load(cli=args, config_file=config)
    except (ValueError, OSError) as exc:
        sys.exit(f"dicomweb_couch: bad settings: {exc}")
    _configure_logging(settings)
    if settings.workers > 1:
        sys.exit(supervise(settings, run))
    run(settings)


def run(settings: Settings, reuse_port: bool = False) -> None:
    """One server process; ``reuse_port`` when it shares its port with other workers."""
    if reuse_port:  # a worker process (spawned): set up its logging like the supervisor's
        _configure_logging(settings)
    try:
        app = create_app(settings)
    except (ValueError, OSError) as exc:  # settings only checked when used, e.g. the Keycloak ones
        sys.exit(f"dicomweb_couch: bad settings: {exc}")
    try:
        asyncio.run(serve_until_signalled(app, settings, reuse_port))
    except CouchUnavailable as exc:  # already explained: a traceback would only bury the reason
        sys.exit(f"dicomweb_couch: {exc}")


async def serve_until_signalled(app: web.Application, settings: Settings, reuse_port: bool) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully (see ``web/health.py``): stop listening,
    let the requests in flight finish within ``shutdown_timeout``, then close everything."""
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port or None)
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await site.stop()  # no new connections; the open ones stay
        draining = app[DRAINING]
        log.info("shutting down: %d request(s) in flight get %.0f s", draining.in_flight, settings.shutdown_timeout)
        if not await draining.finish(settings.shutdown_timeout):
            log.warning("shutdown: %d request(s) still running after %.0f s are cut off",
                        draining.in_flight, settings.shutdown_timeout)
    finally:
        await runner.cleanup()


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
    if settings.log_json:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonLogFormatter())
