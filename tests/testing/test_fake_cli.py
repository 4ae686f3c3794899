"""`python -m hailuo_async.testing`: flags, and a real run as a subprocess."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import aiohttp
import anyio
import pytest

from hailuo_async.testing import FakeHailuoConfig, Faults, Fixed, StorageFaults, Uniform
from hailuo_async.testing.__main__ import build_parser, config_from_args


def _config(*argv: str) -> FakeHailuoConfig:
    return config_from_args(build_parser().parse_args(list(argv)))


def test_defaults_match_the_config_class() -> None:
    """With no flags the CLI builds the library's default config."""
    assert _config() == FakeHailuoConfig()


def test_every_knob_has_a_flag() -> None:
    """Each knob of FakeHailuoConfig can be set from the command line."""
    config = _config(
        "--api-key=k",
        "--time-scale=0.05",
        "--seed=9",
        "--job-duration=fixed:60",
        "--queued-fraction=0.5",
        "--failure-rate=0.1",
        "--eta-error=0.3",
        "--no-forecasts",
        "--video-url-ttl=120",
        "--max-body-bytes=1000",
        "--max-image-bytes=500",
        "--requests-per-minute=30",
        "--max-active-tasks=4",
        "--retry-after",
        "--fault-server-error=0.1",
        "--fault-rate-limit=0.1",
        "--fault-reset=0.1",
        "--fault-slow=0.1",
        "--fault-malformed-json=0.1",
        "--fault-accepted-but-lost=0.1",
        "--slow-seconds=2",
        "--storage-truncate=0.2",
        "--storage-wrong-content-length=0.3",
        "--storage-reject-authorization",
    )
    assert config == FakeHailuoConfig(
        api_key="k",
        time_scale=0.05,
        seed=9,
        job_duration=Fixed(60),
        queued_fraction=0.5,
        failure_rate=0.1,
        eta_error=0.3,
        forecasts=False,
        video_url_ttl=120,
        max_body_bytes=1000,
        max_image_bytes=500,
        requests_per_minute=30,
        max_active_tasks=4,
        retry_after=True,
        faults=Faults(
            server_error=0.1,
            rate_limit=0.1,
            reset=0.1,
            slow=0.1,
            malformed_json=0.1,
            accepted_but_lost=0.1,
            slow_seconds=2,
        ),
        storage_faults=StorageFaults(
            truncate=0.2, wrong_content_length=0.3, reject_authorization=True
        ),
    )
    assert _config("--job-duration", "uniform:1,2").job_duration == Uniform(1, 2)


@pytest.mark.parametrize(
    "argv",
    [
        ["--job-duration=gamma:1"],
        ["--failure-rate=2"],
        ["--requests-per-minute=0"],
        ["--port=notaport"],
    ],
)
def test_bad_flags_exit_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Malformed flag values stop argparse with exit status 2, in one line naming the flag."""
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    flag = argv[0].split("=")[0]
    assert lines[0].startswith(f"error: argument {flag}")
    assert "--help" in lines[0]


def test_inconsistent_knobs_exit_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    """Fault fractions adding past 1 are reported as a usage error."""
    from hailuo_async.testing.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--fault-reset=0.7", "--fault-slow=0.7"])
    assert exit_info.value.code == 2
    assert "more than 1" in capsys.readouterr().err


@pytest.mark.anyio
async def test_module_runs_as_a_server_until_interrupted() -> None:
    """`python -m hailuo_async.testing` prints its URL, serves, and exits 0 on SIGINT."""
    argv = [
        sys.executable,
        "-m",
        "hailuo_async.testing",
        "--port=0",
        "--api-key=cli-key",
        "--time-scale=0.001",
        "--seed=5",
        "--stats-on-exit",
    ]
    # Our own interpreter with fixed arguments; the test reads its pipes from threads.
    process = subprocess.Popen(  # noqa: ASYNC220, S603
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        first_line = await anyio.to_thread.run_sync(process.stdout.readline)
        match = re.search(r"on (http://127\.0\.0\.1:\d+) \(storage host (http://\S+)\)", first_line)
        assert match, first_line
        url = match.group(1)
        headers = {"Authorization": "Bearer cli-key"}
        async with aiohttp.ClientSession() as session:
            async with session.post(
                url + "/v3/async/minimax-hailuo-02", json={"prompt": "cli"}, headers=headers
            ) as response:
                assert response.status == 200
                task_id = (await response.json())["task_id"]
            deadline = time.monotonic() + 5
            while True:
                async with session.get(
                    url + "/v3/async/task-result", params={"task_id": task_id}, headers=headers
                ) as response:
                    data = await response.json()
                if data["task"]["status"] == "TASK_STATUS_SUCCEED":
                    break
                assert time.monotonic() < deadline
                await anyio.sleep(0.02)
            assert data["videos"][0]["video_url"].startswith(match.group(2))
        process.send_signal(signal.SIGINT)
        out, err = await anyio.to_thread.run_sync(lambda: process.communicate(timeout=10))
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    stats = json.loads(out[out.index("{") :])
    assert stats["submissions_accepted"] == 1
