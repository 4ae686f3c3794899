"""The package's public names: exactly the intended ones, all importable, all documented."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import hailuo_async

INTENDED = {
    "BatchCounts",
    "JobStream",
    "TaskEvent",
    "TaskWatcher",
    "DEFAULT_BASE_URL",
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "DownloadError",
    "HailuoClient",
    "HailuoError",
    "InternalServerError",
    "InvalidRequestError",
    "JobOutcome",
    "NotFoundError",
    "PermissionDeniedError",
    "PollPolicy",
    "RateLimitError",
    "RetryPolicy",
    "SubmissionUnknownError",
    "TaskFailedError",
    "TaskResult",
    "TaskStatus",
    "Timeouts",
    "Video",
    "VideoRequest",
    "WaitTimeoutError",
    "WebhookError",
    "__version__",
}


def test_all_is_exactly_the_intended_names() -> None:
    """__all__ lists the intended public names, each once."""
    assert len(hailuo_async.__all__) == len(set(hailuo_async.__all__))
    assert set(hailuo_async.__all__) == INTENDED


def test_every_public_name_is_importable() -> None:
    """Each name in __all__ can be imported from the package, and star-import gives them all."""
    for name in hailuo_async.__all__:
        assert getattr(hailuo_async, name) is not None
    namespace: dict[str, object] = {}
    exec("from hailuo_async import *", namespace)  # noqa: S102 - a fixed string
    assert set(namespace) >= INTENDED


def test_public_classes_are_documented_and_live_in_the_package() -> None:
    """Every public class has a docstring and comes from a hailuo_async module."""
    for name in hailuo_async.__all__:
        value = getattr(hailuo_async, name)
        if inspect.isclass(value):
            assert value.__module__.startswith("hailuo_async."), name
            assert inspect.getdoc(value), name


def test_version_and_typing_marker() -> None:
    """The package has a version string and ships py.typed."""
    assert isinstance(hailuo_async.__version__, str)
    assert hailuo_async.__version__
    assert (Path(hailuo_async.__file__).parent / "py.typed").is_file()


def test_default_base_url_is_the_gateway() -> None:
    """DEFAULT_BASE_URL is the seed's public gateway."""
    assert hailuo_async.DEFAULT_BASE_URL == "https://api.highwayapi.ai"


def test_private_modules_do_not_leak_names() -> None:
    """Private modules' own __all__ names that are public are the ones the package exports."""
    exported = set(hailuo_async.__all__)
    for module_name in ("_exceptions", "_models"):
        module = importlib.import_module(f"hailuo_async.{module_name}")
        public = {name for name in module.__all__ if inspect.isclass(getattr(module, name))}
        assert public <= exported, module_name
