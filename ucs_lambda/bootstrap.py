"""The composition root: the one place that picks and builds the adapters behind the ports.

The Chalice app (and through it the WSGI app), the Lambda job handler, the worker and
``admin`` ask :func:`services` for what they need; nothing else constructs an adapter. Which
adapters: ``UCS_STATE_BACKEND`` chooses DynamoDB + SQS (the serverless default) or
PostgreSQL (state and jobs in one database, ``UCS_DATABASE_URL``); object storage is always S3
(AWS, Ceph RGW, moto).

Settings are read per request (``config.py`` says why), so the graph is cached per settings
snapshot: a request under the same configuration reuses it, and the adapters' expensive parts
(boto3 clients, bound tables, the database pool) are cached per endpoint below them anyway.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict

from .config import Settings, get_settings
from .ports import DeadLetters, JobQueue, ObjectStorage, State
from .services.downloads import DownloadService
from .services.uploads import UploadService
from .services.validation import ValidationService

#: Settings snapshots whose graphs are kept (tests switch configurations often).
_CACHE_SIZE = 16


class Services:
    """The adapters and services of one configuration, built on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @functools.cached_property
    def state(self) -> State:
        if self.settings.state_backend == "postgres":
            from .adapters.postgres import postgres_state  # deferred: no psycopg in Lambda

            return postgres_state(self.settings)
        from .adapters.dynamo import dynamo_state

        return dynamo_state(self.settings)

    @functools.cached_property
    def storage(self) -> ObjectStorage:
        from .adapters.s3 import S3Storage

        return S3Storage(self.settings)

    @functools.cached_property
    def queue(self) -> JobQueue:
        if self.settings.state_backend == "postgres":
            from .adapters.postgres import PostgresJobQueue

            return PostgresJobQueue(self.settings)
        from .adapters.sqs import SqsJobQueue

        return SqsJobQueue(self.settings)

    @functools.cached_property
    def dead_letters(self) -> DeadLetters | None:
        """The operator's view of the job queue (PostgreSQL; None for SQS, whose dead-letter
        queue is handled with AWS's tools)."""
        if self.settings.state_backend == "postgres":
            from .adapters.postgres import PostgresJobQueue

            return PostgresJobQueue(self.settings)
        return None

    @functools.cached_property
    def uploads(self) -> UploadService:
        return UploadService(self.settings, self.state, self.storage, self.queue)

    @functools.cached_property
    def downloads(self) -> DownloadService:
        return DownloadService(self.settings, self.state, self.storage, self.queue)

    @functools.cached_property
    def validation(self) -> ValidationService:
        return ValidationService(self.settings, self.state, self.storage, self.queue)


_lock = threading.Lock()
_built: OrderedDict[Settings, Services] = OrderedDict()


def services(settings: Settings | None = None) -> Services:
    """The services for ``settings`` (default: the environment's now)."""
    settings = settings or get_settings()
    with _lock:
        found = _built.get(settings)
        if found is None:
            found = _built[settings] = Services(settings)
            while len(_built) > _CACHE_SIZE:
                _built.popitem(last=False)
        else:
            _built.move_to_end(settings)
        return found
