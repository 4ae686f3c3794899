"""A journaled batch run as its own process, for the crash tests to kill with SIGKILL.

``python -m reliability.crash_child --base-url URL --jobs N --journal PATH --download-to DIR
--outcomes FILE --done FILE --log FILE --scale S --trial T`` (the key comes from
``HAILUO_API_KEY``). It uses the public API only. Each outcome is appended to ``--outcomes``
as one JSON line the moment it is yielded; once the batch is over, ``--done`` is written.
Run it again after a kill and it resumes from the journal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hailuo_async import (
    HailuoClient,
    JobOutcome,
    Limits,
    PollPolicy,
    RetryPolicy,
    Timeouts,
    VideoRequest,
)

MAX_ACTIVE_JOBS = 6


def job_key(index: int) -> str:
    """The journal key of job ``index``."""
    return f"job-{index:04d}"


def job_prompt(trial: int, index: int) -> str:
    """The prompt of job ``index`` of ``trial``: distinct per job, so the fake tells them apart."""
    return f"crash trial {trial} job {index}: a paper boat on a rainy street"


def _chain(error: BaseException | None) -> list[str]:
    texts: list[str] = []
    while error is not None and len(texts) < 20:
        texts += [type(error).__name__, str(error), repr(error)]
        error = error.__cause__ or error.__context__
    return texts


def outcome_line(outcome: JobOutcome) -> str:
    """One outcome as a JSON line, with every text it exposes (scanned for the key)."""
    data: dict[str, Any] = {
        "index": outcome.index,
        "key": outcome.key,
        "task_id": outcome.task_id,
        "ok": outcome.ok,
        "status": outcome.result.status.value if outcome.result is not None else None,
        "error_type": type(outcome.error).__name__ if outcome.error is not None else None,
        "path": outcome.path,
        "texts": [repr(outcome), repr(outcome.result), *_chain(outcome.error)],
    }
    return json.dumps(data, ensure_ascii=False) + "\n"


async def run(args: argparse.Namespace) -> None:
    """Run (or resume) the batch, appending each outcome as it comes."""
    scale = args.scale
    requests = [
        (job_key(index), VideoRequest(prompt=job_prompt(args.trial, index)))
        for index in range(args.jobs)
    ]
    client = HailuoClient(
        base_url=args.base_url,
        timeout=Timeouts(total=2.0, connect=2.0),
        max_retries=6,
        retry_policy=RetryPolicy(initial_delay=0.01, max_delay=0.1, max_retry_after=0.1),
        poll_policy=PollPolicy().scaled(scale),
        limits=Limits(rate_window=60 * scale),
    )
    async with client:
        async with client.generate_many(
            requests,
            max_active_jobs=MAX_ACTIVE_JOBS,
            journal=args.journal,
            download_to=args.download_to,
        ) as outcomes:
            with Path(args.outcomes).open("a", encoding="utf-8") as out:
                out.write(json.dumps({"client": repr(client)}) + "\n")
                async for outcome in outcomes:
                    out.write(outcome_line(outcome))
                    out.flush()
    done = Path(args.done)
    temp = done.with_name(done.name + ".tmp")
    temp.write_text("done\n")
    os.replace(temp, done)


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, log at DEBUG to ``--log``, run the batch."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--journal", required=True)
    parser.add_argument("--download-to", required=True)
    parser.add_argument("--outcomes", required=True)
    parser.add_argument("--done", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--scale", type=float, required=True)
    parser.add_argument("--trial", type=int, required=True)
    args = parser.parse_args(argv)
    handler = logging.FileHandler(args.log, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    for name in ("hailuo_async", "aiohttp"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    asyncio.run(run(args))


if __name__ == "__main__":
    main(sys.argv[1:])
