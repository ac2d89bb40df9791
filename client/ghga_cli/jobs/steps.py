"""The vocabulary between a file's conversation and the transfer manager.

A job (``upload.UploadJob``, ``download.DownloadJob``) is a state machine: the manager calls
``job.step(event)`` on one of its API threads, and the job answers with the next
:class:`Action` -- it never calls the manager, never waits for bytes and never sleeps:

- :class:`NeedSlot`: admit me among the ``--parallel-files`` files that move bytes now;
- :class:`Move`: hand this transfer to the engine; I hear :class:`Moved` when it has ended;
- :class:`Sleep`: wake me (:class:`Woke`) at this time (a poll for the server's verdict);
- :class:`AwaitStaging`: ask the DRS for this object with the others that wait (bulk), and
  tell me (:class:`Staged`) once it is staged;
- :class:`Finished`: the file is done, with this status.

A failure is raised as a :class:`~ghga_cli.errors.CliError` from ``step``.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from ghga_cli.jobs.api import DrsObject
    from ghga_cli.jobs.staging import StagingWait
    from ghga_cli.report import FileReport
    from ghga_cli.transfer.engine import EngineStats, Transfer


# -- events (what happened) -----------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """The manager took the file."""


@dataclass(frozen=True)
class SlotGranted:
    """The file may now prepare and move its bytes."""


@dataclass(frozen=True)
class Moved:
    """The transfer ended: ``outcome`` holds its stats or raises its failure."""

    outcome: Future[EngineStats]


@dataclass(frozen=True)
class Woke:
    """The time a :class:`Sleep` named has come."""


@dataclass(frozen=True)
class Staged:
    """The DRS object is staged: its URL can be used now."""

    obj: DrsObject


Event = Union[Started, SlotGranted, Moved, Woke, Staged]


# -- actions (what to do next) --------------------------------------------------------------


@dataclass(frozen=True)
class NeedSlot:
    pass


@dataclass(frozen=True)
class Move:
    transfer: Transfer[Any]


@dataclass(frozen=True)
class Sleep:
    until: float  # on the manager's clock (time.monotonic)


@dataclass(frozen=True)
class AwaitStaging:
    wait: StagingWait


@dataclass(frozen=True)
class Finished:
    status: str


Action = Union[NeedSlot, Move, Sleep, AwaitStaging, Finished]


class FileJob:
    """One file's conversation with the API (see the module docstring)."""

    file_id: str
    report: FileReport

    def step(self, event: Event) -> Action:
        raise NotImplementedError

    def abandon(self) -> None:
        """The file ended early (failed, interrupted): release what the job holds
        (locks, threads, state to resume from). Called once, never concurrently with step."""
