"""The package's public names: exactly the intended ones, all importable, all documented."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import hailuo_async
import hailuo_async.extend
import hailuo_async.journal
import hailuo_async.providers
import hailuo_async.testing
import hailuo_async.webhooks

# Public homes of names: the package, and its public submodules.
PUBLIC_MODULES = (
    hailuo_async,
    hailuo_async.extend,
    hailuo_async.journal,
    hailuo_async.providers,
    hailuo_async.webhooks,
)

# What a user calls, catches or annotates: the client, its requests and results, batches,
# watchers, configuration and errors.
INTENDED = {
    "DEFAULT_BASE_URL",
    "__version__",
    "HailuoClient",
    "VideoRequest",
    "TaskResult",
    "TaskStatus",
    "Video",
    "JobOutcome",
    "Duration",
    "Model",
    "Resolution",
    "JobStream",
    "BatchCounts",
    "BatchItem",
    "RequestSource",
    "LeftRunningJob",
    "TaskWatcher",
    "TaskEvent",
    "EventKind",
    "EventCallback",
    "WatchOutcome",
    "ProgressCallback",
    "DownloadProgress",
    "Limits",
    "PollPolicy",
    "RetryPolicy",
    "Timeouts",
    "Coordination",
    "WorkerSettings",
    "UnknownSubmissionPolicy",
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ContentPolicyError",
    "DownloadError",
    "HailuoError",
    "InsufficientBalanceError",
    "InternalServerError",
    "InvalidRequestError",
    "JobTimeoutError",
    "JournalError",
    "JournalInUseError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServiceUnreachableError",
    "SubmissionUnknownError",
    "TaskFailedError",
    "WaitTimeoutError",
    "WebhookError",
}

# Each public submodule's names. ``extend`` holds every extension point (the protocols to
# implement and the types they speak); the wiring between the client's parts (SubmitOne,
# PollOne, DurationStats, BatchJournal, JobKeyer...) is exported nowhere.
SUBMODULE_NAMES = {
    hailuo_async.extend: {
        "ActiveJobs",
        "Call",
        "HTTPTransport",
        "JobSpec",
        "JobStore",
        "Provider",
        "PushRegistry",
        "PushSubscriber",
        "RequestKind",
        "RequestLimits",
        "ResumeAction",
        "ResumeEntry",
        "ResumePlan",
        "SharedJobStore",
        "SharedState",
        "Step",
        "SubmissionRecorder",
        "TCPTransport",
        "job_specs",
    },
    hailuo_async.journal: {
        "BatchProgress",
        "InvalidTransitionError",
        "JobConflictError",
        "JobRecord",
        "JobState",
        "JournalClosedError",
        "JournalConnectionError",
        "JournalError",
        "JournalInUseError",
        "JournalPermissionError",
        "JournalProviderError",
        "JournalSchemaError",
        "LeaseLostError",
        "PostgresJobStore",
        "SQLiteJobStore",
        "Synchronous",
        "UnknownJobError",
        "error_from_record",
        "job_keys",
        "store_for",
    },
    hailuo_async.providers: {
        "GatewayProvider",
        "MiniMaxProvider",
        "PROVIDERS",
        "PROVIDER_ENV",
        "ProviderName",
        "parse_webhook",
        "provider_for",
    },
    hailuo_async.testing: {
        "FakeHailuoConfig",
        "FakeHailuoServer",
        "FakeTask",
        "Faults",
        "Fixed",
        "InProcessTransport",
        "LogNormal",
        "Stats",
        "StorageFaults",
        "Uniform",
        "sample_video",
    },
}


def test_all_is_exactly_the_intended_names() -> None:
    """__all__ lists the intended public names, each once."""
    assert len(hailuo_async.__all__) == len(set(hailuo_async.__all__))
    assert set(hailuo_async.__all__) == INTENDED


def test_each_public_submodule_exports_exactly_its_names() -> None:
    """extend, journal, providers and testing list their pinned names, each once."""
    for module, names in SUBMODULE_NAMES.items():
        assert len(module.__all__) == len(set(module.__all__)), module.__name__
        assert set(module.__all__) == names, module.__name__
        assert all(getattr(module, name) is not None for name in names), module.__name__


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


# Public classes only the client makes (users get them from a call): their constructors take
# the client's wiring, which is not a user's signature.
BUILT_BY_THE_CLIENT = {"JobStream", "TaskWatcher"}


def _public_callables() -> Iterator[Callable[..., object]]:
    """The package's public functions, and the public methods and properties of its classes."""
    for name in hailuo_async.__all__:
        value = getattr(hailuo_async, name)
        if inspect.isfunction(value):
            yield value
        elif inspect.isclass(value) and value.__module__.startswith("hailuo_async."):
            for member_name, member in vars(value).items():
                if member_name.startswith("_") and (
                    member_name != "__init__" or name in BUILT_BY_THE_CLIENT
                ):
                    continue
                if isinstance(member, property) and member.fget is not None:
                    yield member.fget
                elif isinstance(member, (classmethod, staticmethod)):
                    yield member.__func__
                elif inspect.isfunction(member):
                    yield member


def _is_public(value: object) -> bool:
    return any(
        getattr(module, name, None) is value
        for module in PUBLIC_MODULES
        for name in getattr(module, "__all__", ())
    )


def test_every_type_in_a_public_signature_is_exported() -> None:
    """A type named in a public signature (class or alias of the package) can be imported."""
    missing: set[str] = set()
    for function in _public_callables():
        namespace = vars(sys.modules[function.__module__])
        for annotation in function.__annotations__.values():
            for identifier in re.findall(r"[A-Za-z_]\w*", str(annotation)):
                value = namespace.get(identifier)
                if value is None or identifier.startswith("_"):
                    continue
                home = getattr(value, "__module__", "") if inspect.isclass(value) else ""
                is_alias = not inspect.isclass(value) and not inspect.ismodule(value)
                ours = home.startswith("hailuo_async.") or (
                    is_alias
                    and f"{identifier} =" in inspect.getsource(sys.modules[function.__module__])
                )
                if ours and not _is_public(value):
                    missing.add(f"{identifier} (in {function.__qualname__})")
    assert not missing


def test_the_classifiers_claim_asyncio_and_not_anyio() -> None:
    """The package says it runs on asyncio, not on every anyio backend: aiohttp ties it to one."""
    classifiers = importlib.metadata.metadata("hailuo-async").get_all("Classifier") or []
    frameworks = {c for c in classifiers if c.startswith("Framework ::")}
    assert frameworks == {"Framework :: AsyncIO"}
