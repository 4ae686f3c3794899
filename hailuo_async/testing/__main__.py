"""Run the fake Hailuo service from the command line until Ctrl-C.

python -m hailuo_async.testing --port 8000 --api-key KEY --time-scale 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Sequence

from ._config import FakeHailuoConfig, Faults, StorageFaults, parse_duration_model
from ._server import FakeHailuoServer

__all__ = ["build_parser", "config_from_args", "main"]

_DEFAULTS = FakeHailuoConfig()


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _duration_model(text: str) -> object:
    try:
        return parse_duration_model(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser(prog: str = "python -m hailuo_async.testing") -> argparse.ArgumentParser:
    """The command line: one flag per knob of FakeHailuoConfig."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve a fake of the Hailuo-02 API (and its storage host) locally.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    net = parser.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    net.add_argument("--port", type=int, default=8000, help="API port, 0 for any free port")
    net.add_argument(
        "--storage-port", type=int, default=0, help="storage host port, 0 for any free port"
    )
    net.add_argument("--access-log", action="store_true", help="log every request to stderr")
    net.add_argument(
        "--stats-on-exit", action="store_true", help="print the stats as JSON to stdout on exit"
    )

    service = parser.add_argument_group("service (durations in service seconds)")
    service.add_argument("--api-key", default=_DEFAULTS.api_key, help="the bearer key accepted")
    service.add_argument(
        "--time-scale",
        type=float,
        default=_DEFAULTS.time_scale,
        metavar="X",
        help="real seconds per service second (0.05 runs 20x faster)",
    )
    service.add_argument("--seed", type=int, default=None, help="seed for reproducible runs")
    service.add_argument(
        "--job-duration",
        type=_duration_model,
        default=_DEFAULTS.job_duration,
        metavar="MODEL",
        help="fixed:S, uniform:LOW,HIGH or lognormal:MEDIAN[,SIGMA] (default uniform:30,180)",
    )
    service.add_argument(
        "--queued-fraction",
        type=_fraction,
        default=_DEFAULTS.queued_fraction,
        metavar="F",
        help="share of each job spent queued (default %(default)s)",
    )
    service.add_argument(
        "--failure-rate",
        type=_fraction,
        default=_DEFAULTS.failure_rate,
        metavar="F",
        help="share of jobs that end FAILED",
    )
    service.add_argument(
        "--eta-error",
        type=float,
        default=_DEFAULTS.eta_error,
        metavar="E",
        help="eta is off by a factor within [1/(1+E), 1+E] (default %(default)s)",
    )
    service.add_argument(
        "--video-url-ttl",
        type=float,
        default=_DEFAULTS.video_url_ttl,
        metavar="S",
        help="presigned URL lifetime (default %(default)s)",
    )
    service.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=_DEFAULTS.max_body_bytes,
        metavar="N",
        help="larger bodies get 413",
    )
    service.add_argument(
        "--max-image-bytes",
        type=_positive_int,
        default=_DEFAULTS.max_image_bytes,
        metavar="N",
        help="largest decoded data-URI image",
    )

    limits = parser.add_argument_group("limits (off by default)")
    limits.add_argument(
        "--requests-per-minute",
        type=_positive_int,
        default=None,
        metavar="N",
        help="per key, all endpoints, per scaled minute",
    )
    limits.add_argument(
        "--max-active-tasks",
        type=_positive_int,
        default=None,
        metavar="N",
        help="queued plus processing tasks per key",
    )
    limits.add_argument(
        "--retry-after",
        action=argparse.BooleanOptionalAction,
        default=_DEFAULTS.retry_after,
        help="send Retry-After with 429s",
    )

    faults = parser.add_argument_group("injected faults (fractions F of eligible requests)")
    for name in ("server_error", "rate_limit", "reset", "slow", "malformed_json"):
        faults.add_argument(
            f"--fault-{name.replace('_', '-')}", type=_fraction, default=0.0, metavar="F"
        )
    faults.add_argument(
        "--fault-accepted-but-lost",
        type=_fraction,
        default=0.0,
        metavar="F",
        help="POSTs whose task is created but whose response is lost",
    )
    faults.add_argument(
        "--slow-seconds",
        type=float,
        default=_DEFAULTS.faults.slow_seconds,
        metavar="S",
        help="delay of a slow response, in real seconds (default %(default)s)",
    )
    faults.add_argument("--storage-truncate", type=_fraction, default=0.0, metavar="F")
    faults.add_argument("--storage-wrong-content-length", type=_fraction, default=0.0, metavar="F")
    faults.add_argument(
        "--storage-reject-authorization",
        action="store_true",
        help="403 for downloads that carry an Authorization header",
    )

    hooks = parser.add_argument_group("webhooks (for submissions with extra.webhook.url)")
    hooks.add_argument(
        "--webhook-drop", type=_fraction, default=0.0, metavar="F", help="events never sent"
    )
    hooks.add_argument(
        "--webhook-duplicate", type=_fraction, default=0.0, metavar="F", help="events sent twice"
    )
    hooks.add_argument(
        "--webhook-timeout",
        type=float,
        default=_DEFAULTS.webhook_timeout,
        metavar="S",
        help="the receiver's time to answer 2xx (default %(default)s)",
    )
    hooks.add_argument(
        "--webhook-retries",
        type=int,
        default=_DEFAULTS.webhook_retries,
        metavar="N",
        help="retries after a failed delivery (default %(default)s)",
    )
    hooks.add_argument(
        "--webhook-retry-delay",
        type=float,
        default=_DEFAULTS.webhook_retry_delay,
        metavar="S",
        help="wait before the first retry, doubling after (default %(default)s)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> FakeHailuoConfig:
    """Turn parsed flags into a config (raises ValueError on inconsistent knobs)."""
    return FakeHailuoConfig(
        api_key=args.api_key,
        time_scale=args.time_scale,
        seed=args.seed,
        job_duration=args.job_duration,
        queued_fraction=args.queued_fraction,
        failure_rate=args.failure_rate,
        eta_error=args.eta_error,
        video_url_ttl=args.video_url_ttl,
        max_body_bytes=args.max_body_bytes,
        max_image_bytes=args.max_image_bytes,
        requests_per_minute=args.requests_per_minute,
        max_active_tasks=args.max_active_tasks,
        retry_after=args.retry_after,
        faults=Faults(
            server_error=args.fault_server_error,
            rate_limit=args.fault_rate_limit,
            reset=args.fault_reset,
            slow=args.fault_slow,
            malformed_json=args.fault_malformed_json,
            accepted_but_lost=args.fault_accepted_but_lost,
            slow_seconds=args.slow_seconds,
        ),
        storage_faults=StorageFaults(
            truncate=args.storage_truncate,
            wrong_content_length=args.storage_wrong_content_length,
            reject_authorization=args.storage_reject_authorization,
        ),
        webhook_drop=args.webhook_drop,
        webhook_duplicate=args.webhook_duplicate,
        webhook_timeout=args.webhook_timeout,
        webhook_retries=args.webhook_retries,
        webhook_retry_delay=args.webhook_retry_delay,
    )


async def _serve(server: FakeHailuoServer, args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Windows has no loop signal handlers; Ctrl-C then arrives as KeyboardInterrupt.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with server:
        print(f"fake Hailuo API on {server.url} (storage host {server.storage_url})", flush=True)
        print(
            f"api key {server.api_key!r}, time scale {server.config.time_scale:g},"
            f" seed {server.seed}; Ctrl-C to stop",
            flush=True,
        )
        # What a client in another shell needs next (the hailuo command, or HailuoClient()).
        print(f"export HAILUO_BASE_URL={server.url} HAILUO_API_KEY={server.api_key}", flush=True)
        await stop.wait()
    if args.stats_on_exit:
        print(json.dumps(server.stats.as_dict(), indent=2), flush=True)


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Entry point of ``python -m hailuo_async.testing`` (``prog`` names it in messages)."""
    parser = build_parser(prog) if prog is not None else build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    if args.access_log:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    server = FakeHailuoServer.from_config(
        config,
        host=args.host,
        port=args.port,
        storage_port=args.storage_port,
        access_log=args.access_log,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(server, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
