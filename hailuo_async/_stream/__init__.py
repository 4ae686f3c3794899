"""``generate_many`` and ``client.work``: a batch's jobs submitted, watched and yielded.

A batch runs in one of three modes, one module each, all on the shared core of
:mod:`._core` (places among the active jobs, submissions, the watcher, the reader):

- :mod:`._plain`: no journal; each request read is submitted, its outcome yielded.
- :mod:`._journaled`: a journal of its own; each job recorded before its POST, a rerun
  replays what ended and re-watches what runs.
- :mod:`._worker`: one worker of a shared journal; jobs claimed under leases.

:func:`job_stream` picks the mode.
"""

from __future__ import annotations

import os
from pathlib import Path

from .._retry import UnknownSubmissionPolicy
from .._worker import WorkerSettings
from ..journal._batch import BatchJournal
from ..journal._store import JobStore, SharedJobStore
from ._core import BatchWiring, JobStream
from ._journaled import JournaledStream
from ._plain import PlainStream
from ._source import BatchItem, RequestSource
from ._worker import WorkerStream

__all__ = ["BatchItem", "BatchWiring", "JobStream", "RequestSource", "job_stream"]


def job_stream(
    requests: RequestSource,
    wiring: BatchWiring,
    *,
    journal: JobStore | str | os.PathLike[str] | None,
    download_to: str | os.PathLike[str] | None,
    retry_failed: bool,
    on_unknown_submission: UnknownSubmissionPolicy,
    batch: str,
    worker: WorkerSettings | None,
) -> JobStream:
    """The batch in the mode its journal asks for: a worker's settings mean a shared one."""
    folder = Path(download_to) if download_to is not None else None
    if worker is not None:
        assert isinstance(journal, (SharedJobStore, str))
        return WorkerStream(
            requests,
            wiring,
            store=journal,
            batch=batch,
            worker=worker,
            download_to=folder,
            retry_failed=retry_failed,
            on_unknown_submission=on_unknown_submission,
        )
    if journal is not None:
        resumed = BatchJournal(
            journal,
            batch=batch,
            retry_failed=retry_failed,
            on_unknown_submission=on_unknown_submission,
        )
        return JournaledStream(requests, wiring, journal=resumed, download_to=folder)
    return PlainStream(requests, wiring, journal=BatchJournal(None), download_to=folder)
