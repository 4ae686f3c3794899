"""Knobs of the fake service: job timing, limits and injected faults."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any, Literal

import attrs

__all__ = [
    "DEFAULT_API_KEY",
    "KNOB",
    "PROFILES",
    "PROVIDERS",
    "DurationModel",
    "FakeHailuoConfig",
    "Faults",
    "Fixed",
    "Knob",
    "LogNormal",
    "Profile",
    "Provider",
    "StorageFaults",
    "Uniform",
    "parse_duration_model",
]

DEFAULT_API_KEY = "fake-hailuo-key"
MIB = 1024 * 1024

Profile = Literal["documented", "captured"]
PROFILES: tuple[Profile, ...] = ("documented", "captured")

Provider = Literal["gateway", "minimax"]
PROVIDERS: tuple[Provider, ...] = ("gateway", "minimax")
"""The dialects the fake speaks: the gateway's (API.md) and MiniMax's own v1 API."""

StatusCase = Literal["lower", "capitalised"]
STATUS_CASES: tuple[StatusCase, ...] = ("lower", "capitalised")

# A presigned URL lives this long unless video_url_ttl says otherwise (service seconds).
DEFAULT_URL_TTL: dict[Provider, float] = {"gateway": 3600.0, "minimax": 32_400.0}

KNOB = "hailuo_async.testing.knob"
"""The metadata key under which a config field keeps its :class:`Knob`."""


@attrs.frozen
class Knob:
    """How one field of the fake's config is described and set from the command line."""

    help: str
    group: str = "service"
    """The --help section: "service", "limits", "faults", "webhooks" or "minimax"."""
    metavar: str | None = None
    flag: str | None = None
    """The flag's name without dashes (default: the field's name); for a field holding a
    class of knobs, the prefix of that class's flags."""
    parse: Callable[[str], Any] | None = None
    """Reads the flag's text (default: by the field's type)."""
    choices: tuple[str, ...] | None = None


def knob(
    default: Any,
    validator: Callable[[Any, attrs.Attribute[Any], Any], None] | None,
    help: str,
    *,
    group: str = "service",
    metavar: str | None = None,
    flag: str | None = None,
    parse: Callable[[str], Any] | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A config field with its default, its check and its command-line description."""
    described = Knob(
        help=help, group=group, metavar=metavar, flag=flag, parse=parse, choices=choices
    )
    return attrs.field(default=default, validator=validator, metadata={KNOB: described})


def _fraction(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.0 <= value <= 1.0 or isinstance(value, bool):
        raise ValueError(f"{attribute.name} must be a fraction in [0, 1], got {value!r}")


def _non_negative(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a finite number > 0, got {value!r}")


def _one_of(choices: tuple[str, ...]) -> Callable[[object, attrs.Attribute[Any], object], None]:
    def check(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name} must be one of {', '.join(choices)}, got {value!r}")

    return check


def _optional_positive(
    _instance: object, attribute: attrs.Attribute[Any], value: float | None
) -> None:
    if value is not None:
        _positive(_instance, attribute, value)


def _optional_positive_int(
    _instance: object, attribute: attrs.Attribute[Any], value: int | None
) -> None:
    if value is not None and (isinstance(value, bool) or value < 1):
        raise ValueError(f"{attribute.name} must be None or an integer >= 1, got {value!r}")


def _optional_whole(_instance: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or value < 0):
        raise ValueError(f"{attribute.name} must be None or an integer >= 0, got {value!r}")


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

    server_error: float = knob(
        0.0, _fraction, "500/502/503/504, half of them with an HTML proxy page instead of JSON"
    )
    rate_limit: float = knob(0.0, _fraction, "a 429 the limits did not call for")
    reset: float = knob(0.0, _fraction, "connection reset before any response")
    slow: float = knob(0.0, _fraction, "the response is held back slow_seconds")
    malformed_json: float = knob(0.0, _fraction, "200 with a truncated JSON body")
    accepted_but_lost: float = knob(
        0.0, _fraction, "POSTs whose task is created but whose response is lost"
    )
    slow_seconds: float = knob(
        5.0,
        _non_negative,
        "delay of a slow response, in real seconds",
        metavar="S",
        flag="slow-seconds",
    )
    rate_limit_burst: float = knob(
        0.0,
        _non_negative,
        "service seconds an injected rate-limit answer lasts: every API request in that span"
        " is refused too, as in a burst of them",
        metavar="S",
        flag="rate-limit-burst",
    )

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

    truncate: float = knob(
        0.0, _fraction, "downloads that send half the bytes Content-Length promised, then close"
    )
    wrong_content_length: float = knob(
        0.0,
        _fraction,
        "downloads whose Content-Length overstates the file (all of it is sent, then the"
        " connection closes short of the declared length)",
    )
    reject_authorization: bool = knob(
        False, None, "403 for downloads that carry an Authorization header, as presigned stores do"
    )
    wrong_content: float = knob(
        0.0,
        _fraction,
        "video URLs whose task result says video_type 'sh' and whose storage host serves a"
        " shell script (a storage host serving something else)",
    )

    def __attrs_post_init__(self) -> None:
        if self.truncate + self.wrong_content_length > 1.0 + 1e-9:
            raise ValueError("storage fault fractions add up to more than 1")


@attrs.frozen(kw_only=True)
class FakeHailuoConfig:
    """Every knob of the fake service. Durations are in service seconds unless noted.

    Each field's ``help`` metadata describes it; ``FakeHailuoServer(**knobs)`` and the
    command line (``python -m hailuo_async.testing --help``) are both built from these fields.
    """

    provider: Provider = knob(
        "gateway",
        _one_of(PROVIDERS),
        "the dialect spoken: the gateway's API ('gateway', API.md) or MiniMax's own v1 video"
        " API ('minimax', MINIMAX_API.md: answers in base_resp, a files/retrieve step)",
        choices=PROVIDERS,
    )
    api_key: str = knob(DEFAULT_API_KEY, None, "the one bearer key the fake accepts")
    time_scale: float = knob(
        1.0,
        _positive,
        "real seconds per service second: 0.01 runs a 100-second job in one second",
        metavar="X",
    )
    seed: int | None = knob(
        None, None, "seeds job timing, failures, eta noise and faults (none: a fresh seed)"
    )
    profile: Profile = knob(
        "documented",
        _one_of(PROFILES),
        "answer as API.md documents ('documented') or in the style of responses captured from"
        " the real service ('captured': video_url_ttl '0', COS-style presigned URLs, progress 0"
        " on success, task types like MINIMAX_HAILUO_02_6S_768P; gateway only)",
        choices=PROFILES,
    )
    job_duration: DurationModel = knob(
        Uniform(30.0, 180.0),
        None,
        "how long a job takes from submission to its end, queue included:"
        " fixed:S, uniform:LOW,HIGH or lognormal:MEDIAN[,SIGMA]",
        metavar="MODEL",
        parse=parse_duration_model,
    )
    queued_fraction: float = knob(
        0.2, _fraction, "the share of a job's duration spent queued before processing starts"
    )
    failure_rate: float = knob(0.0, _fraction, "the share of jobs that end FAILED with a reason")
    eta_error: float = knob(
        0.2,
        _non_negative,
        "relative error E of the reported eta: within x/(1+E) .. x*(1+E) of the truth",
        metavar="E",
    )
    forecasts: bool = knob(
        True,
        None,
        "send a running task's eta and progress_percent (--no-forecasts: both stay 0, as from"
        " a service that forecasts nothing; debug_info still tells the times)",
    )
    video_url_ttl: float | None = knob(
        None,
        _optional_positive,
        "lifetime of each presigned video URL (default: 3600 on the gateway, 32400, 9 hours,"
        " on MiniMax)",
        metavar="S",
    )
    max_body_bytes: int = knob(
        30 * MIB, _positive, "requests with a larger body get 413", metavar="N"
    )
    max_image_bytes: int = knob(
        20 * MIB, _positive, "largest decoded data-URI image for image/end_image", metavar="N"
    )
    requests_per_minute: int | None = knob(
        None,
        _optional_positive_int,
        "requests admitted per key in any sliding window of 60 service seconds (all endpoints)",
        group="limits",
        metavar="N",
    )
    max_active_tasks: int | None = knob(
        None,
        _optional_positive_int,
        "queued plus processing tasks allowed per key; a submit past it gets 429",
        group="limits",
        metavar="N",
    )
    retry_after: bool = knob(
        False,
        None,
        "send Retry-After on 429 (the gateway documents none, so off by default)",
        group="limits",
    )
    unknown_status: float = knob(
        0.0,
        _fraction,
        "the share of jobs that answer a status the API does not document"
        " (TASK_STATUS_SUSPENDED) until they end",
        group="faults",
    )
    faults: Faults = knob(Faults(), None, "injected API faults", group="faults", flag="fault-")
    storage_faults: StorageFaults = knob(
        StorageFaults(), None, "injected download faults", group="faults", flag="storage-"
    )
    webhook_drop: float = knob(
        0.0, _fraction, "the share of webhook events never sent", group="webhooks"
    )
    webhook_duplicate: float = knob(
        0.0, _fraction, "the share of webhook events delivered twice", group="webhooks"
    )
    webhook_timeout: float = knob(
        5.0,
        _positive,
        "the receiver's time to answer 2xx before the attempt counts as failed"
        " (scaled by time_scale, but never under 50 real milliseconds)",
        group="webhooks",
        metavar="S",
    )
    webhook_retries: int = knob(
        5,
        attrs.validators.ge(0),
        "further attempts after a failed webhook delivery (non-2xx, error or timeout)",
        group="webhooks",
        metavar="N",
    )
    webhook_retry_delay: float = knob(
        1.0,
        _non_negative,
        "the wait before the first webhook retry; it doubles at each further retry",
        group="webhooks",
        metavar="S",
    )
    insufficient_balance_after: int | None = knob(
        None,
        _optional_whole,
        "once this many tasks were accepted, submissions answer 1008 (insufficient balance)"
        " and create no task",
        group="minimax",
        metavar="N",
    )
    input_sensitive_marker: str = knob(
        "#input-sensitive",
        None,
        "a prompt holding this text is refused with 1026 (input sensitive): no task",
        group="minimax",
        metavar="TEXT",
    )
    output_sensitive_marker: str = knob(
        "#output-sensitive",
        None,
        "a prompt holding this text makes a task that ends Fail with 1027 (output sensitive)",
        group="minimax",
        metavar="TEXT",
    )
    callback_status_case: StatusCase = knob(
        "lower",
        _one_of(STATUS_CASES),
        "the status in callbacks: 'lower' (success, failed: MiniMax's callback docs) or"
        " 'capitalised' (Success, Fail: as the query answers, and one official example)",
        group="minimax",
        choices=STATUS_CASES,
    )

    def __attrs_post_init__(self) -> None:
        if self.provider == "minimax" and self.profile != "documented":
            raise ValueError("profile='captured' is the gateway's; MiniMax has only 'documented'")
        if self.provider == "gateway" and self.insufficient_balance_after is not None:
            raise ValueError("insufficient_balance_after is a MiniMax knob (provider='minimax')")

    @property
    def url_ttl(self) -> float:
        """The presigned URLs' lifetime in service seconds (the provider's default if unset)."""
        if self.video_url_ttl is not None:
            return self.video_url_ttl
        return DEFAULT_URL_TTL[self.provider]


for _cls in (Faults, StorageFaults, FakeHailuoConfig):
    attrs.resolve_types(_cls)
