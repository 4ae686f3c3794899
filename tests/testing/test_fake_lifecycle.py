"""Task lifecycle, timing, eta and the time scale, over real HTTP."""

from __future__ import annotations

import random
import time

import anyio
import pytest
from fakeutil import VALID_BODY, running

from hailuo_async.testing import FakeHailuoConfig, FakeHailuoServer, Fixed, LogNormal, Uniform
from hailuo_async.testing._config import parse_duration_model
from hailuo_async.testing._tasks import eta_factor, report_seconds

pytestmark = pytest.mark.anyio


async def test_task_goes_queued_processing_succeed() -> None:
    """Polling sees QUEUED, then PROCESSING with rising progress, then SUCCEED at 100."""
    async with running(time_scale=0.005, job_duration=Fixed(100), queued_fraction=0.3) as api:
        task_id = await api.create()
        seen: list[tuple[str, int]] = []
        while True:
            data = await api.poll(task_id)
            task = data["task"]
            seen.append((task["status"], task["progress_percent"]))
            if task["status"] == "TASK_STATUS_SUCCEED":
                break
            assert data["videos"] == []
            await anyio.sleep(0.01)
    statuses = [status for status, _ in seen]
    assert statuses[0] == "TASK_STATUS_QUEUED"
    assert "TASK_STATUS_PROCESSING" in statuses
    # Statuses never go backwards.
    order = ["TASK_STATUS_QUEUED", "TASK_STATUS_PROCESSING", "TASK_STATUS_SUCCEED"]
    assert [order.index(s) for s in statuses] == sorted(order.index(s) for s in statuses)
    progress = [p for _, p in seen]
    assert progress == sorted(progress)
    assert all(p == 0 for s, p in seen if s == "TASK_STATUS_QUEUED")
    assert all(0 <= p < 100 for s, p in seen if s == "TASK_STATUS_PROCESSING")
    assert len({p for s, p in seen if s == "TASK_STATUS_PROCESSING"}) > 2
    assert seen[-1] == ("TASK_STATUS_SUCCEED", 100)


async def test_succeeded_result_has_the_documented_shape() -> None:
    """A finished task's answer has every field of API.md, numbers-as-strings included."""
    async with running(time_scale=0.001, job_duration=Fixed(20)) as api:
        task_id = await api.create()
        data = await api.wait_terminal(task_id)
    assert set(data) == {"task", "videos", "images", "audios", "extra"}
    task = data["task"]
    assert task == {
        "task_id": task_id,
        "task_type": "MINIMAX_HAILUO_02_T2V",
        "status": "TASK_STATUS_SUCCEED",
        "reason": "",
        "eta": 0,
        "progress_percent": 100,
    }
    (video,) = data["videos"]
    assert set(video) == {"video_url", "video_url_ttl", "video_type"}
    assert video["video_type"] == "mp4"
    assert data["images"] == []
    assert data["audios"] == []
    extra = data["extra"]
    assert extra["seed"].isdigit()
    debug = extra["debug_info"]
    assert debug["request_info"] == ""
    submit, execute, complete = (
        int(debug[k]) for k in ("submit_time_ms", "execute_time_ms", "complete_time_ms")
    )
    assert submit <= execute <= complete
    # 20 service seconds at scale 0.001 are 20 real milliseconds.
    assert complete - submit == pytest.approx(20, abs=2)
    assert abs(submit / 1000 - time.time()) < 60


async def test_image_tasks_have_their_own_task_type() -> None:
    """Image-to-video tasks report a different task_type from text-to-video ones."""
    async with running() as api:
        task_id = await api.create({**VALID_BODY, "image": "https://example.com/a.png"})
        data = await api.poll(task_id)
    assert data["task"]["task_type"] == "MINIMAX_HAILUO_02_I2V"


async def test_failure_rate_one_fails_every_task_with_a_reason() -> None:
    """At failure_rate=1 each task ends FAILED, with a reason and no video."""
    async with running(failure_rate=1.0, job_duration=Fixed(50)) as api:
        task_ids = [await api.create() for _ in range(5)]
        results = [await api.wait_terminal(task_id) for task_id in task_ids]
    for data in results:
        task = data["task"]
        assert task["status"] == "TASK_STATUS_FAILED"
        assert task["reason"]
        assert task["eta"] == 0
        assert 0 <= task["progress_percent"] < 100
        assert data["videos"] == []
        assert data["extra"]["debug_info"]["complete_time_ms"] != "0"


async def test_failure_rate_is_a_fraction_of_tasks() -> None:
    """About failure_rate of the tasks fail (seeded, so the count is stable)."""
    async with running(failure_rate=0.3, seed=7) as api:
        for _ in range(200):
            await api.create()
        failing = sum(task.fails for task in api.server.tasks.values())
    assert 40 <= failing <= 80


async def test_unknown_task_is_404_and_missing_id_is_400() -> None:
    """task-result answers 404 for an unknown id and 400 without one."""
    async with running() as api:
        unknown = await api.result("00000000-0000-4000-8000-000000000000")
        assert unknown.status == 404
        assert unknown.json()["code"] == 404
        missing = await api.request(
            "GET", api.server.url + "/v3/async/task-result", headers=api.auth()
        )
        assert missing.status == 400
        assert missing.json()["metadata"] == {"field": "task_id"}
        empty = await api.result("")
        assert empty.status == 400


async def test_eta_noise_stays_within_the_error_bound() -> None:
    """Each eta is the true remaining time off by at most the eta_error factor."""
    error = 0.2
    async with running(time_scale=0.01, job_duration=Fixed(100), eta_error=error) as api:
        task_id = await api.create()
        finish = api.server.tasks[task_id].finished_at
        ratios = []
        for _ in range(30):
            before = finish - time.monotonic()
            if before < 0.1:
                break  # a slow machine: keep clear of the task's end
            eta = (await api.poll(task_id))["task"]["eta"]
            after = finish - time.monotonic()
            assert after / (1 + error) - 0.002 <= eta <= before * (1 + error) + 0.002
            ratios.append(eta / ((before + after) / 2))
            await anyio.sleep(0.005)
    # The noise is noise: not one constant factor.
    assert len(ratios) >= 5
    assert max(ratios) - min(ratios) > 0.05


async def test_eta_without_error_is_the_remaining_time() -> None:
    """With eta_error=0 the eta is the true remaining time in real seconds."""
    async with running(time_scale=0.01, job_duration=Fixed(100), eta_error=0.0) as api:
        task_id = await api.create()
        finish = api.server.tasks[task_id].finished_at
        before = finish - time.monotonic()
        eta = (await api.poll(task_id))["task"]["eta"]
        after = finish - time.monotonic()
    assert after - 0.002 <= eta <= before + 0.002
    assert 0.5 < eta <= 1.0


async def test_without_forecasts_a_running_task_reports_no_eta_and_no_progress() -> None:
    """forecasts=False: a processing task answers eta 0 and progress 0 (debug_info keeps its
    times); once ended it reports 100 and when it completed.
    """
    async with running(
        time_scale=0.01, job_duration=Fixed(100), queued_fraction=0.0, forecasts=False
    ) as api:
        task_id = await api.create()
        task = (await api.poll(task_id))["task"]
        data = await api.wait_terminal(task_id)
    assert task["status"] == "TASK_STATUS_PROCESSING"
    assert (task["eta"], task["progress_percent"]) == (0, 0)
    assert data["task"]["progress_percent"] == 100
    assert data["extra"]["debug_info"]["complete_time_ms"] != "0"


def test_eta_factor_bounds() -> None:
    """The eta noise factor never leaves [1/(1+e), 1+e]."""
    rng = random.Random(3)
    factors = [eta_factor(rng, 0.5) for _ in range(5000)]
    assert min(factors) >= 1 / 1.5
    assert max(factors) <= 1.5
    assert eta_factor(rng, 0.0) == 1.0


def test_reported_seconds_are_whole_at_scale_one() -> None:
    """Unscaled waits are rounded up to whole seconds, scaled ones to milliseconds."""
    assert report_seconds(3600.0, 1.0) == 3600
    assert isinstance(report_seconds(3600.0, 1.0), int)
    assert report_seconds(0.2, 1.0) == 1
    assert report_seconds(0.0, 1.0) == 0
    assert report_seconds(0.00001, 0.01) == 0.001
    assert report_seconds(36.0, 0.01) == 36.0


async def test_time_scale_stretches_service_time_into_real_time() -> None:
    """A D-second job lasts D*time_scale real seconds, and eta and TTL are reported in real time."""
    async with running(
        time_scale=0.01, job_duration=Fixed(50), queued_fraction=0.2, eta_error=0.0
    ) as api:
        task_id = await api.create()
        task = api.server.tasks[task_id]
        assert task.finished_at - task.created_at == pytest.approx(0.5)
        assert task.started_at - task.created_at == pytest.approx(0.1)
        eta = (await api.poll(task_id))["task"]["eta"]
        assert 0.2 < eta <= 0.5
        started = time.monotonic()
        data = await api.wait_terminal(task_id)
        assert time.monotonic() - started < 1.0
    assert data["videos"][0]["video_url_ttl"] == pytest.approx(36.0)


async def test_unscaled_numbers_are_integers() -> None:
    """At time_scale 1 the eta and the TTL are whole seconds, as the real API sends."""
    async with running(time_scale=1.0, job_duration=Fixed(100)) as api:
        queued_id = await api.create()
        eta = (await api.poll(queued_id))["task"]["eta"]
    assert isinstance(eta, int)
    assert 80 <= eta <= 120
    async with running(time_scale=1.0, job_duration=Fixed(0.02)) as api:
        done = await api.wait_terminal(await api.create())
    ttl = done["videos"][0]["video_url_ttl"]
    assert ttl == 3600
    assert isinstance(ttl, int)


async def test_finished_at_is_the_scheduled_terminal_instant() -> None:
    """finished_at is None before the end, then the schedule's instant, whenever polled."""
    async with running(time_scale=0.01, job_duration=Fixed(20)) as api:
        task_id = await api.create()
        assert api.server.finished_at(task_id) is None
        assert api.server.task_status(task_id) == "TASK_STATUS_QUEUED"
        await anyio.sleep(0.35)
        finished = api.server.finished_at(task_id)
        assert finished is not None
        assert finished == api.server.tasks[task_id].finished_at
        assert finished < time.monotonic() - 0.1
        assert api.server.task_status(task_id) == "TASK_STATUS_SUCCEED"
        assert api.server.stats.tasks_terminal == 1
        with pytest.raises(KeyError):
            api.server.finished_at("nope")


async def test_job_durations_follow_the_configured_model() -> None:
    """Uniform durations stay within their bounds (in real seconds after scaling)."""
    async with running(time_scale=0.001, job_duration=Uniform(30, 180)) as api:
        for _ in range(50):
            await api.create()
        spans = [t.finished_at - t.created_at for t in api.server.tasks.values()]
    assert all(0.030 - 1e-9 <= span <= 0.180 + 1e-9 for span in spans)
    assert max(spans) - min(spans) > 0.05


async def test_same_seed_same_run() -> None:
    """Two fakes with one seed give the same ids, timings and outcomes."""
    runs = []
    for _ in range(2):
        async with running(seed=42, failure_rate=0.5) as api:
            ids = [await api.create() for _ in range(5)]
            tasks = [api.server.tasks[i] for i in ids]
            runs.append(
                [
                    (t.task_id, round(t.finished_at - t.created_at, 9), t.reason, t.seed)
                    for t in tasks
                ]
            )
    assert runs[0] == runs[1]


async def test_unseeded_servers_pick_and_expose_a_seed() -> None:
    """Without a seed the fake draws one and shows it, so a run can be replayed."""
    async with FakeHailuoServer() as first, FakeHailuoServer() as second:
        assert first.seed != second.seed


async def test_webhook_extra_is_kept_on_the_task() -> None:
    """The extra object is stored with the task for webhook delivery later."""
    extra = {"webhook": {"url": "https://hooks.example/h"}}
    async with running() as api:
        task_id = await api.create({**VALID_BODY, "extra": extra})
        assert api.server.tasks[task_id].request.extra == extra


def test_duration_models() -> None:
    """The three duration models sample as documented and parse from strings."""
    rng = random.Random(1)
    assert Fixed(5).sample(rng) == 5
    assert all(1 <= Uniform(1, 2).sample(rng) <= 2 for _ in range(100))
    draws = sorted(LogNormal(60, 0.5).sample(rng) for _ in range(2001))
    assert 50 < draws[1000] < 70
    assert parse_duration_model("fixed:60") == Fixed(60)
    assert parse_duration_model("uniform:30,180") == Uniform(30, 180)
    assert parse_duration_model("lognormal:90,0.5") == LogNormal(90, 0.5)
    assert parse_duration_model("lognormal:90") == LogNormal(90)
    for bad in ("fixed", "uniform:1", "gamma:1,2", "fixed:x", "uniform:5,1", "fixed:-1"):
        with pytest.raises(ValueError, match=r".+"):
            parse_duration_model(bad)


@pytest.mark.parametrize(
    "knobs",
    [
        {"time_scale": 0},
        {"time_scale": -1.0},
        {"failure_rate": 1.5},
        {"queued_fraction": -0.1},
        {"requests_per_minute": 0},
        {"max_active_tasks": 0},
        {"eta_error": float("nan")},
    ],
)
def test_bad_knobs_are_refused(knobs: dict[str, float]) -> None:
    """Out-of-range knobs fail at construction, not mid-test."""
    with pytest.raises(ValueError, match=r".+"):
        FakeHailuoServer(**knobs)  # type: ignore[arg-type]


def test_constructor_and_config_agree() -> None:
    """Every FakeHailuoConfig knob is a constructor argument with the same default."""
    import inspect

    import attrs

    parameters = inspect.signature(FakeHailuoServer).parameters
    for field in attrs.fields(FakeHailuoConfig):
        assert field.name in parameters
        assert parameters[field.name].default == field.default, field.name


def test_knobs_and_config_build_the_same_server() -> None:
    """Keywords, a config, or a config with keywords on top give the same configuration."""
    config = FakeHailuoConfig(time_scale=0.5, failure_rate=0.25)
    assert FakeHailuoServer(time_scale=0.5, failure_rate=0.25).config == config
    assert FakeHailuoServer(config).config == config
    assert FakeHailuoServer(config, failure_rate=0.5).config.failure_rate == 0.5
    with pytest.raises(TypeError, match="no_such_knob"):
        FakeHailuoServer(no_such_knob=1)
