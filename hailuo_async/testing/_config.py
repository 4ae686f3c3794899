"""Knobs of the fake service: job timing, limits and injected faults."""

from __future__ import annotations

import math
import random
from typing import Any

import attrs

__all__ = [
    "DEFAULT_API_KEY",
    "DurationModel",
    "FakeHailuoConfig",
    "Faults",
    "Fixed",
    "LogNormal",
    "StorageFaults",
    "Uniform",
    "parse_duration_model",
]

DEFAULT_API_KEY = "fake-hailuo-key"
MIB = 1024 * 1024


def _fraction(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.0 <= value <= 1.0 or isinstance(value, bool):
        raise ValueError(f"{attribute.name} must be a fraction in [0, 1], got {value!r}")


def _non_negative(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a finite number > 0, got {value!r}")


def _optional_positive_int(
    _instance: object, attribute: attrs.Attribute[Any], value: int | None
) -> None:
    if value is not None and (isinstance(value, bool) or value < 1):
        raise ValueError(f"{attribute.name} must be None or an integer >= 1, got {value!r}")


@attrs.frozen
class Fixed:
    """Every job takes exactly `seconds` service seconds."""

    seconds: float = attrs.field(validator=_positive)

    def sample(self, rng: random.Random) -> float:
        """Draw one job duration in service seconds."""
        return self.seconds


@attrs.frozen
class Uniform:
    """Job durations drawn uniformly from [low, high] service seconds."""

    low: float = attrs.field(validator=_positive)
    high: float = attrs.field(validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.high < self.low:
            raise ValueError(f"Uniform needs low <= high, got {self.low} > {self.high}")

    def sample(self, rng: random.Random) -> float:
        """Draw one job duration in service seconds."""
        return rng.uniform(self.low, self.high)


@attrs.frozen
class LogNormal:
    """Long-tailed job durations: log-normal with the given median (service seconds)."""

    median: float = attrs.field(validator=_positive)
    sigma: float = attrs.field(default=0.5, validator=_non_negative)

    def sample(self, rng: random.Random) -> float:
        """Draw one job duration in service seconds."""
        return rng.lognormvariate(math.log(self.median), self.sigma)


DurationModel = Fixed | Uniform | LogNormal


def parse_duration_model(text: str) -> DurationModel:
    """Read "fixed:60", "uniform:30,180" or "lognormal:90,0.5" (median, sigma)."""
    kind, _, args = text.partition(":")
    try:
        numbers = [float(part) for part in args.split(",")] if args else []
    except ValueError:
        raise ValueError(f"bad job duration {text!r}: the arguments must be numbers") from None
    kind = kind.strip().lower()
    if kind == "fixed" and len(numbers) == 1:
        return Fixed(numbers[0])
    if kind == "uniform" and len(numbers) == 2:
        return Uniform(numbers[0], numbers[1])
    if kind == "lognormal" and len(numbers) in (1, 2):
        return LogNormal(*numbers)
    raise ValueError(
        f"bad job duration {text!r}: use fixed:SECONDS, uniform:LOW,HIGH"
        " or lognormal:MEDIAN[,SIGMA]"
    )


@attrs.frozen
class Faults:
    """Per-request fault probabilities, applied only to requests that would have succeeded.

    One draw per request picks at most one fault, so the fractions must add up to at most 1
    and each is the exact share of eligible requests that get that fault.
    """

    server_error: float = attrs.field(default=0.0, validator=_fraction)
    """500/502/503/504, half of them with an HTML proxy page instead of JSON."""
    rate_limit: float = attrs.field(default=0.0, validator=_fraction)
    """A 429 the limits did not call for (the gateway's own throttling)."""
    reset: float = attrs.field(default=0.0, validator=_fraction)
    """Connection reset before any response; a POST creates no task."""
    slow: float = attrs.field(default=0.0, validator=_fraction)
    """The response is held back `slow_seconds` (real seconds) before it is sent."""
    malformed_json: float = attrs.field(default=0.0, validator=_fraction)
    """200 with a truncated JSON body; a POST still creates the task."""
    accepted_but_lost: float = attrs.field(default=0.0, validator=_fraction)
    """POST only: the task is created, then the connection is reset without a response."""
    slow_seconds: float = attrs.field(default=5.0, validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        if self.total > 1.0 + 1e-9:
            raise ValueError(f"fault fractions add up to {self.total:g}, more than 1")

    @property
    def total(self) -> float:
        """The share of eligible POSTs that get some fault."""
        return (
            self.server_error
            + self.rate_limit
            + self.reset
            + self.slow
            + self.malformed_json
            + self.accepted_but_lost
        )


@attrs.frozen
class StorageFaults:
    """Faults of the video storage host (the presigned download URLs)."""

    truncate: float = attrs.field(default=0.0, validator=_fraction)
    """Share of downloads that send half the bytes Content-Length promised, then close."""
    wrong_content_length: float = attrs.field(default=0.0, validator=_fraction)
    """Share of downloads whose Content-Length overstates the file: all of it is sent, then
    the connection closes short of the declared length."""
    reject_authorization: bool = False
    """Answer 403 to any download that carries an Authorization header, as presigned stores do."""

    def __attrs_post_init__(self) -> None:
        if self.truncate + self.wrong_content_length > 1.0 + 1e-9:
            raise ValueError("storage fault fractions add up to more than 1")


@attrs.frozen(kw_only=True)
class FakeHailuoConfig:
    """Every knob of the fake service. Durations are in service seconds unless noted."""

    api_key: str = DEFAULT_API_KEY
    """The one bearer key the fake accepts."""
    time_scale: float = attrs.field(default=1.0, validator=_positive)
    """Real seconds per service second: 0.01 runs a 100-second job in one second."""
    seed: int | None = None
    """Seeds job timing, failures, eta noise and faults; None draws a fresh seed."""
    job_duration: DurationModel = Uniform(30.0, 180.0)
    """How long a job takes from submission to its end, queue included."""
    queued_fraction: float = attrs.field(default=0.2, validator=_fraction)
    """The share of a job's duration spent queued before processing starts."""
    failure_rate: float = attrs.field(default=0.0, validator=_fraction)
    """The share of jobs that end TASK_STATUS_FAILED with a reason."""
    eta_error: float = attrs.field(default=0.2, validator=_non_negative)
    """Relative error of the reported eta: 0.2 keeps it within x/1.2 .. x*1.2 of the truth."""
    video_url_ttl: float = attrs.field(default=3600.0, validator=_positive)
    """Lifetime of each presigned video URL."""
    max_body_bytes: int = attrs.field(default=30 * MIB, validator=_positive)
    """Requests with a larger body get 413 (base64 images of up to 20 MB are legal)."""
    max_image_bytes: int = attrs.field(default=20 * MIB, validator=_positive)
    """Largest decoded data-URI image accepted for `image`/`end_image`."""
    requests_per_minute: int | None = attrs.field(default=None, validator=_optional_positive_int)
    """Requests admitted per key in any sliding window of 60 service seconds (all endpoints)."""
    max_active_tasks: int | None = attrs.field(default=None, validator=_optional_positive_int)
    """Queued plus processing tasks allowed per key; a submit past it gets 429."""
    retry_after: bool = False
    """Send Retry-After on 429 (the gateway documents none, so off by default)."""
    faults: Faults = Faults()
    """Injected API faults."""
    storage_faults: StorageFaults = StorageFaults()
    """Injected download faults."""
    webhook_drop: float = attrs.field(default=0.0, validator=_fraction)
    """The share of webhook events silently never sent (the receiver must not rely on them)."""
    webhook_duplicate: float = attrs.field(default=0.0, validator=_fraction)
    """The share of webhook events delivered twice (the receiver must be idempotent)."""
    webhook_timeout: float = attrs.field(default=5.0, validator=_positive)
    """How long a webhook receiver has to answer 2xx before the attempt counts as failed
    (scaled by `time_scale`, but never under 50 real milliseconds)."""
    webhook_retries: int = attrs.field(default=5, validator=attrs.validators.ge(0))
    """Further attempts after a failed webhook delivery (non-2xx, error or timeout)."""
    webhook_retry_delay: float = attrs.field(default=1.0, validator=_non_negative)
    """The wait before the first retry of a webhook; it doubles at each further retry."""
