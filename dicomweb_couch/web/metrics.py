"""Prometheus metrics at ``GET /metrics`` (the official ``prometheus_client``), and request ids.

One registry per application (not the library's global one), so several servers in one process
(tests, a two-site setup) keep their own counts. What is measured:

- every request, by route *template* (``/studies/{study}/series/{series}``, never a UID: labels stay
  few and carry no patient data), method and status; its latency; bytes received and sent;
- instances stored and refused, the refusals by FailureReason (PS3.18 10.5.3), read from the
  store response every STOW-RS answers (``00081199`` ReferencedSOPSequence, ``00081198``
  FailedSOPSequence / ``00081197`` FailureReason), so the store path itself is not touched;
- every JSON request to CouchDB: latency by method, failures by kind (``Couch.observer``);
- how many changes each search view's index is behind the database, measured at scrape time.

The request-id middleware gives every request an id (the client's ``X-Request-ID`` if it sent a
sane one), returns it in ``X-Request-ID``, passes it on to CouchDB (``store.couch.REQUEST_ID``)
and, with ``log_json``, puts it on every log line as a JSON field.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from dicomweb_couch.appkeys import COUCH
from dicomweb_couch.store.couch import REQUEST_ID, CouchUnavailable
from dicomweb_couch.web.health import index_lag

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_STOW_PATH = re.compile(r"(^|/)studies(/\{study\})?$")


class Metrics:
    """The application's registry and the metrics in it."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("dicomweb_requests", "HTTP requests answered", ["route", "method", "status"],
                                registry=registry)
        self.latency = Histogram("dicomweb_request_duration_seconds", "Time to answer a request, body included",
                                 ["route", "method"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.in_flight = Gauge("dicomweb_requests_in_flight", "Requests being answered", registry=registry)
        self.bytes_in = Counter("dicomweb_request_bytes", "Request body bytes received", ["route"], registry=registry)
        self.bytes_out = Counter("dicomweb_response_bytes", "Response body bytes sent", ["route"], registry=registry)
        self.stored = Counter("dicomweb_instances_stored", "Instances STOW-RS stored (or already had)",
                              registry=registry)
        self.refused = Counter("dicomweb_instances_refused", "Instances STOW-RS refused, by FailureReason",
                               ["reason"], registry=registry)
        self.store_latency = Histogram("dicomweb_store_request_duration_seconds", "Time of a CouchDB request",
                                       ["method"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.store_errors = Counter("dicomweb_store_errors", "CouchDB requests that failed, by kind",
                                    ["method", "kind"], registry=registry)
        self.index_lag = Gauge("dicomweb_search_index_lag_changes",
                               "Changes a search view's index is behind the database", ["view"], registry=registry)

    def observe_store(self, method: str, seconds: float, error: str | None) -> None:
        self.store_latency.labels(method).observe(seconds)
        if error is not None:
            self.store_errors.labels(method, error).inc()

    def count_stow(self, response: web.StreamResponse) -> None:
        """Stored and refused instances, from a STOW-RS store response (PS3.18 10.5.3)."""
        body = getattr(response, "body", None)
        if not isinstance(body, bytes) or not body.startswith(b"{"):
            return
        try:
            answer = json.loads(body)
        except ValueError:
            return
        self.stored.inc(len((answer.get("00081199") or {}).get("Value") or []))
        for item in (answer.get("00081198") or {}).get("Value") or []:
            reason = ((item.get("00081197") or {}).get("Value") or [None])[0]
            self.refused.labels(f"0x{reason:04X}" if isinstance(reason, int) else "unknown").inc()


METRICS = web.AppKey("metrics", Metrics)


def route_of(request: web.Request) -> str:
    """The route template the request matched, or ``unmatched``."""
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return "unmatched"
    return info.route.resource.canonical


@web.middleware
async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time every request, with a request id in the context (outermost middleware)."""
    metrics = request.app[METRICS]
    sent = request.headers.get("X-Request-ID", "")
    request_id = sent if _SANE_ID.fullmatch(sent) else uuid.uuid4().hex
    token = REQUEST_ID.set(request_id)
    started = time.monotonic()
    route, status, response = route_of(request), 500, None
    metrics.in_flight.inc()
    try:
        response = await handler(request)
        status = response.status
        if not response.prepared:
            response.headers["X-Request-ID"] = request_id
        return response
    except web.HTTPException as exc:
        status, response = exc.status, exc
        exc.headers["X-Request-ID"] = request_id
        raise
    finally:
        metrics.in_flight.dec()
        REQUEST_ID.reset(token)
        metrics.requests.labels(route, request.method, str(status)).inc()
        metrics.latency.labels(route, request.method).observe(time.monotonic() - started)
        metrics.bytes_in.labels(route).inc(request.content.total_bytes)
        if response is not None:
            metrics.bytes_out.labels(route).inc(_body_size(response))
            if request.method == "POST" and _STOW_PATH.search(route):
                metrics.count_stow(response)


def _body_size(response: web.StreamResponse) -> int:
    """Bytes of the body: as written for a streamed response, as held for one not sent yet."""
    if response.prepared:
        return response.body_length
    body = getattr(response, "body", None)
    return len(body) if isinstance(body, (bytes, bytearray)) else int(getattr(body, "size", None) or 0)


async def scrape(request: web.Request) -> web.Response:
    """The metrics in Prometheus' text format; the index lag is measured now."""
    metrics = request.app[METRICS]
    try:
        for view, lag in (await index_lag(request.app[COUCH])).items():
            metrics.index_lag.labels(view).set(lag)
    except CouchUnavailable:
        pass  # the store errors already count it; the last lag stays
    return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST,
                                                                         "Cache-Control": "no-store"})


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the id of the request being served.

    Formatting happens in ``Handler.emit``, in the context of the code that logged, which is where
    the request id lives.
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                                "message": record.getMessage()}
        if request_id := REQUEST_ID.get():
            line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def setup(app: web.Application) -> None:
    """Measure every request (outermost middleware), serve ``/metrics``, observe the CouchDB requests."""
    metrics = app[METRICS] = Metrics()
    app.middlewares.insert(0, measure)
    app.router.add_get("/metrics", scrape)

    async def observe_store(app: web.Application) -> None:
        app[COUCH].observer = metrics.observe_store

    app.on_startup.append(observe_store)
