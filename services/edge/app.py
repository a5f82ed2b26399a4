"""The edge: an ASGI app turning HTTP requests into pipeline events and events into HTTP.

``create_app(settings)`` builds the app; its lifespan starts one ``EdgeClient`` (a
``GatewayClient``, one reply partition) per worker process, and one ``S3FileStorage`` on the
media bucket (``media.bucket`` of the configuration, at ``settings.s3_url``) for uploads, file
contents and media answers held by key. Each request: route,
request id (``x-request-id`` or a new one, echoed), API key, body (size-limited), the
route's handler; any ``GatewayError`` becomes that route's error body with the code's
HTTP status. Nothing is logged per request below WARNING; the edge's own refusals (401, 413,
400 before the pipeline) each get an audit record and a request-log line (``rejections.py``).
"""

from __future__ import annotations

import gc
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from services.contracts.errors import GatewayError, InternalError
from services.contracts.events import new_id
from services.runtime.config import GatewayConfig, load_config
from services.runtime.logs import configure
from services.runtime.request_log import RequestLog
from services.runtime.service import mark_ready
from services.runtime.settings import Settings

from .asgi import (
    ClientGone,
    ErrorFormat,
    Receive,
    Request,
    Response,
    Route,
    Router,
    Scope,
    Send,
    checked_request_id,
    read_body,
)
from .auth import KeyIndex
from .context import Edge
from .errors import HTTPError
from .handlers import ROUTES, openai_errors
from .pipeline import EdgeClient, Pipeline
from .realtime import PATH as REALTIME_PATH
from .realtime import serve_realtime
from .rejections import Audit, Rejections
from .settings import EdgeSettings

if TYPE_CHECKING:
    from services.runtime.media.storage import FileStorage

log = logging.getLogger(__name__)


class EdgeApp:
    """Raw ASGI (``http`` and ``lifespan``)."""

    def __init__(
        self,
        settings: EdgeSettings,
        config: GatewayConfig,
        *,
        pipeline: Pipeline | None = None,
        routes: list[Route] | None = None,
        created: int = 0,
        audit: Audit | None = None,
        storage: FileStorage | None = None,
    ):
        self.settings = settings
        self.edge = Edge(settings, config, KeyIndex(config), created=created)
        self._pipeline = pipeline
        self._storage = storage
        self.rejections = Rejections(RequestLog.of(settings.runtime, "edge"), audit)
        self._router = Router(routes if routes is not None else ROUTES)
        self._limit = settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            if scope["path"] == REALTIME_PATH:
                await serve_realtime(self.edge, scope, receive, send)
            else:  # no other WebSocket route: refuse the handshake
                await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        req = Request(scope, receive, time.perf_counter(), {})
        errors: ErrorFormat = openai_errors
        route = None
        try:
            route, req.params = self._router.match(scope["method"], scope["path"])
            errors = route.errors
            raw_id = req.request_id_header
            req.request_id = new_id() if raw_id is None else checked_request_id(raw_id)
            if route.auth:
                req.caller = self.edge.keys.authenticate(req.authorization)
            if route.body:
                req.body = await read_body(req, self._limit)
            resp = await route.handler(self.edge, req)
        except (GatewayError, HTTPError) as err:
            req.request_id = req.request_id or new_id()
            status, body = errors(err, req)
            if isinstance(err, GatewayError) and Rejections.own(req, err):
                await self.rejections.record(req, err, status, route.operation if route else None)
            # (after a 413 the server reads and discards the rest of the body, keeping the
            # connection: closing it under an unread upload makes clients see a reset, not the 413)
            resp = Response(status, body, err.headers if isinstance(err, HTTPError) else None)
        except ClientGone:
            return
        except Exception:
            log.exception("%s %s failed", scope["method"], scope["path"])
            req.request_id = req.request_id or new_id()
            status, body = errors(InternalError("internal error in the gateway edge"), req)
            resp = Response(status, body)
        resp.headers.append((b"x-request-id", req.request_id.encode("latin-1")))
        await resp(send, receive)

    # --- lifespan -----------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("edge start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
                    return
                gc.freeze()  # start-up's objects out of the collector's scans: shorter pauses per frame
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """Connect to the pipeline (unless one was given) and, along with it, to the media bucket
        (unless a storage was given: an app given a pipeline and no storage has none, and its
        media routes answer 500); from here ``/readyz`` answers 200."""
        if self._pipeline is None:
            if self._storage is None:
                from services.runtime.media.storage import S3FileStorage  # (aioboto3: only when serving)

                storage = S3FileStorage(
                    self.edge.config.media.bucket, endpoint_url=self.settings.runtime.s3_url
                )
                await storage.start()
                self._storage = storage
            client = EdgeClient(self.settings.runtime)
            client.storage = self._storage  # a job's large result is read back by key
            client.job_retention_s = self.edge.config.jobs.retention_s  # past it: job_expired (410)
            await client.start()
            self._pipeline = client
            self.rejections.audit = self.rejections.audit or client.audit
        self.edge.storage = self._storage
        self.edge.pipeline = self._pipeline
        mark_ready("edge", self.settings.runtime)

    async def shutdown(self) -> None:
        """After the server stopped taking requests and let streams in flight finish."""
        pipeline, self.edge.pipeline = self.edge.pipeline, None
        if pipeline is not None:
            await pipeline.aclose()
        storage, self.edge.storage = self.edge.storage, None
        if storage is not None:
            await storage.aclose()


def create_app(
    settings: Settings | EdgeSettings | None = None,
    *,
    config: GatewayConfig | None = None,
    pipeline: Pipeline | None = None,
    audit: Audit | None = None,
    storage: FileStorage | None = None,
) -> EdgeApp:
    """The edge's ASGI app. ``config`` defaults to the file named by the settings; ``pipeline``
    (tests) replaces the per-process ``EdgeClient`` started at lifespan start-up, ``audit`` (tests)
    what the edge's own rejections are published with (default: that client's ``audit``),
    ``storage`` (tests) the ``S3FileStorage`` on the media bucket."""
    s = EdgeSettings.of(settings if settings is not None else EdgeSettings.from_env())
    path = Path(s.runtime.config_path)
    created = int(path.stat().st_mtime) if config is None and path.exists() else 0
    config = config or load_config(path, s.runtime.env)
    return EdgeApp(s, config, pipeline=pipeline, created=created, audit=audit, storage=storage)


def app_factory() -> EdgeApp:
    """uvicorn's factory (``services.edge.app:app_factory``): runs in every worker process."""
    settings = EdgeSettings.from_env()
    configure(settings.runtime.log_level, "edge")
    return create_app(settings)
