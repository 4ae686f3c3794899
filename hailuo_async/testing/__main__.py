"""Run the fake Hailuo service from the command line until Ctrl-C.

python -m hailuo_async.testing --port 8001 --api-key KEY --time-scale 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import typing
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import attrs

from ._config import KNOB, FakeHailuoConfig, Knob
from ._server import FakeHailuoServer

__all__ = ["build_parser", "config_from_args", "main"]

_GROUPS = {
    "service": "service (durations in service seconds)",
    "limits": "limits (off by default)",
    "faults": "injected faults (fractions F of eligible requests)",
    "webhooks": "webhooks (for submissions with extra.webhook.url, or MiniMax's callback_url)",
    "minimax": "MiniMax dialect (--provider minimax)",
}
_TITLES = {"gateway": "fake Hailuo API", "minimax": "fake MiniMax API"}


def _knobs(cls: type[Any], prefix: str = "") -> Iterator[tuple[str, attrs.Attribute[Any], Knob]]:
    """Each leaf knob of ``cls`` with its flag name; a field holding knobs is walked into."""
    for field in attrs.fields(cls):
        described: Knob = field.metadata[KNOB]
        if attrs.has(field.type):
            yield from _knobs(field.type, _flag(prefix, field, described))
        else:
            yield _flag(prefix, field, described), field, described


def _flag(prefix: str, field: attrs.Attribute[Any], described: Knob) -> str:
    """A leaf's flag name (its own ``flag`` wins), or the prefix of a nested class's flags."""
    if field.type is not None and attrs.has(field.type):
        return prefix + (described.flag or f"{field.name}-")
    return described.flag or prefix + field.name.replace("_", "-")


def _reader(field: attrs.Attribute[Any], described: Knob) -> Callable[[str], Any]:
    """Reads a flag's text and applies the field's own check, so argparse reports misuse."""
    if described.parse is not None:
        parse = described.parse
    elif described.choices is not None:
        parse = str
    else:
        parse = next(kind for kind in (int, float, str) if kind in _types(field.type))

    def read(text: str) -> Any:
        try:
            value = parse(text)
            if field.validator is not None:
                field.validator(None, field, value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return value

    return read


def _types(annotation: Any) -> tuple[Any, ...]:
    return typing.get_args(annotation) or (annotation,)


def _dest(flag: str) -> str:
    return flag.replace("-", "_")


class _OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (exit 2), not the whole usage."""

    def error(self, message: str) -> NoReturn:
        """Print ``error: message`` and where to look, then exit 2."""
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _port(text: str) -> int:
    """A TCP port number: 0 (any free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: give 0 (any free one) to 65535")
    return port


def build_parser(prog: str = "python -m hailuo_async.testing") -> argparse.ArgumentParser:
    """The command line: one flag per knob of FakeHailuoConfig, built from its fields."""
    parser = _OneLineParser(
        prog=prog,
        description=(
            "Serve a fake of the Hailuo-02 API (and its storage host) locally, in the gateway's"
            " dialect or MiniMax's own (--provider minimax)."
        ),
    )
    net = parser.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    net.add_argument(
        "--port",
        type=_port,
        default=8001,
        help="API port, 0 for any free port (default: %(default)s)",
    )
    net.add_argument(
        "--storage-port",
        type=_port,
        default=0,
        help="storage host port, 0 for any free port (default: %(default)s)",
    )
    net.add_argument("--access-log", action="store_true", help="log every request to stderr")
    net.add_argument(
        "--stats-on-exit", action="store_true", help="print the stats as JSON to stdout on exit"
    )
    groups = {name: parser.add_argument_group(title) for name, title in _GROUPS.items()}
    for flag, field, described in _knobs(FakeHailuoConfig):
        group = groups[described.group]
        plain = isinstance(field.default, (int, float, str)) and field.default is not False
        help_text = described.help + (" (default: %(default)s)" if plain else "")
        if field.type is bool:
            group.add_argument(
                f"--{flag}",
                dest=_dest(flag),
                action=argparse.BooleanOptionalAction,
                default=field.default,
                help=described.help,
            )
            continue
        group.add_argument(
            f"--{flag}",
            dest=_dest(flag),
            type=_reader(field, described),
            default=field.default,
            choices=described.choices,
            metavar=described.metavar or ("F" if float in _types(field.type) else None),
            help=help_text,
        )
    return parser


def _build(cls: type[Any], args: argparse.Namespace, prefix: str = "") -> Any:
    values: dict[str, Any] = {}
    for field in attrs.fields(cls):
        described: Knob = field.metadata[KNOB]
        flag = _flag(prefix, field, described)
        if attrs.has(field.type):
            values[field.name] = _build(field.type, args, flag)
        else:
            values[field.name] = getattr(args, _dest(flag))
    return cls(**values)


def config_from_args(args: argparse.Namespace) -> FakeHailuoConfig:
    """Turn parsed flags into a config (raises ValueError on inconsistent knobs)."""
    config: FakeHailuoConfig = _build(FakeHailuoConfig, args)
    return config


async def _serve(server: FakeHailuoServer, args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Windows has no loop signal handlers; Ctrl-C then arrives as KeyboardInterrupt.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with server:
        title = _TITLES[server.provider]
        print(f"{title} on {server.url} (storage host {server.storage_url})", flush=True)
        print(
            f"api key {server.api_key!r}, time scale {server.config.time_scale:g},"
            f" seed {server.seed}; Ctrl-C to stop",
            flush=True,
        )
        # What a client in another shell needs next (the hailuo command, or HailuoClient()).
        exports = f"HAILUO_BASE_URL={server.url} HAILUO_API_KEY={server.api_key}"
        if server.provider != "gateway":
            exports += f" HAILUO_PROVIDER={server.provider}"
        print(f"export {exports}", flush=True)
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
    server = FakeHailuoServer(
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
