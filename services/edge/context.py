"""What every route handler gets: settings, configuration, keys, the pipeline, file storage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.contracts.errors import InternalError
from services.runtime.config import GatewayConfig

from .auth import KeyIndex
from .pipeline import Pipeline
from .settings import EdgeSettings

if TYPE_CHECKING:
    from services.runtime.media.storage import FileStorage


@dataclass
class Edge:
    settings: EdgeSettings
    config: GatewayConfig
    keys: KeyIndex
    pipeline: Pipeline | None = None
    #: ``created`` of the model objects of ``/v1/models`` (the configuration file's mtime)
    created: int = 0
    #: The media bucket (``media.bucket``): uploads, file contents, media answers held by key
    storage: FileStorage | None = None

    @property
    def gw(self) -> Pipeline:
        if self.pipeline is None:
            raise InternalError("the edge is not connected to the pipeline yet")
        return self.pipeline

    @property
    def files(self) -> FileStorage:
        if self.storage is None:
            raise InternalError("the edge has no file storage yet")
        return self.storage

    def timeout_for(self, total_ms: int | None) -> float:
        """How long to wait for an answer: the request's ``total_ms`` (or the configured
        default) plus a margin, so the pipeline's own timeout answers first."""
        ms = total_ms or self.config.defaults.total_ms
        return ms / 1000 + self.settings.timeout_margin_s
