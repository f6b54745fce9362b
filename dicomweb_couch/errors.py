"""Error responses: every failure a client can cause becomes a 4xx with a reason it can read.

Handlers raise :class:`DicomwebError` (or let :class:`~dicomweb_couch.matching.QueryError` and
:class:`~dicomweb_couch.couch.CouchUnavailable` through); the middleware turns them, and
aiohttp's own 404/405, into a small JSON body ``{"status", "error", "message"}``. Anything else
is a bug: logged with its traceback and answered 500 without internals. Every 503, whoever
answers it, leaves with a ``Retry-After``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web

from dicomweb_couch.search.matching import QueryError
from dicomweb_couch.store.couch import CouchRefused, CouchUnavailable, IndexNotReady

log = logging.getLogger(__name__)

RETRY_AFTER = "10"
"""Seconds a client should wait after a 503 (RFC 9110 10.2.3); every 503 carries it."""


STORE_UNAVAILABLE = "the archive's database is unavailable; try again in a few moments"
"""What a client learns of a store failure: never the store's address, database or credentials."""


def quoted(value: str, limit: int = 64) -> str:
    """A client's value as a message quotes it: repr, cut after ``limit`` characters (a hostile
    request can send kilobytes, which the answer need not echo)."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


class DicomwebError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def problem(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"status": status, "error": HTTPStatus(status).phrase, "message": message}
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    response = await _answer(request, handler)
    if response.status == 503 and "Retry-After" not in response.headers and not response.prepared:
        response.headers["Retry-After"] = RETRY_AFTER
    return response


async def _answer(request: web.Request,
                  handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        return await handler(request)
    except DicomwebError as exc:
        return problem(exc.status, exc.message, exc.headers)
    except QueryError as exc:
        return problem(400, str(exc))
    except IndexNotReady as exc:  # not an outage: CouchDB is indexing (a large import, a new design document)
        log.info("index not ready: %s", exc)
        return problem(503, "the database is still indexing; try again in a few seconds")
    except CouchUnavailable as exc:
        log.error("CouchDB unavailable: %s", exc)  # the details are for the operator, not the client
        return problem(503, STORE_UNAVAILABLE)
    except CouchRefused as exc:  # a request CouchDB cannot take, e.g. a key longer than it accepts
        log.warning("CouchDB refused %s %s: %s", request.method, request.path, exc)
        status = 413 if exc.status == 413 else 400
        return problem(status, "the database cannot take this request (a value or the request is too large "
                               "or malformed for it)")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return problem(exc.status, message, {k: v for k, v in exc.headers.items() if k == "Allow"})
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path_qs)
        return problem(500, "internal server error (logged on the server)")
