"""The ports: what the services need from the outside world, as small ``Protocol``s.

Services and jobs depend only on these interfaces (and the exceptions and value types they
speak); the adapters under ``ucs_lambda.adapters`` implement them for DynamoDB, PostgreSQL,
S3 and SQS, and ``ucs_lambda.bootstrap`` is the one place that picks and builds them.
tests/server/test_layers.py checks that no service imports an adapter.
"""

from .jobs import DeadJob, DeadLetters, JobCounts, JobQueue, JobQueueError, QueuedJob
from .state import (
    AttemptsSpent,
    ConditionLost,
    FileStore,
    StagingClaims,
    State,
    StoreError,
    UploadStore,
    VerificationLeases,
)
from .storage import (
    CopyItem,
    ListedObject,
    ObjectChanged,
    ObjectInfo,
    ObjectMissing,
    ObjectRef,
    ObjectStorage,
    Part,
    StorageError,
)

__all__ = [
    "AttemptsSpent",
    "ConditionLost",
    "CopyItem",
    "DeadJob",
    "DeadLetters",
    "FileStore",
    "JobCounts",
    "JobQueue",
    "JobQueueError",
    "ListedObject",
    "ObjectChanged",
    "ObjectInfo",
    "ObjectMissing",
    "ObjectRef",
    "ObjectStorage",
    "Part",
    "QueuedJob",
    "StagingClaims",
    "State",
    "StorageError",
    "StoreError",
    "UploadStore",
    "VerificationLeases",
]
