"""The coordination setting: checked before anything is spent, and no database without it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from hailuo_async import Coordination, HailuoClient, InvalidRequestError
from hailuo_async._coordination import coordination_from
from hailuo_async.extend import SharedState
from hailuo_async.journal import PostgresJobStore, store_for


def test_a_client_without_coordination_never_imports_psycopg() -> None:
    """Importing and using a client (a job made against the fake) leaves psycopg unloaded."""
    script = textwrap.dedent(
        """
        import sys
        import anyio
        from hailuo_async import VideoRequest
        from hailuo_async.testing import FakeHailuoServer

        async def main() -> None:
            async with FakeHailuoServer(time_scale=0.001) as server, server.client() as client:
                result = await client.generate(VideoRequest(prompt="a fox"))
                assert result.is_done
                async with client.generate_many([VideoRequest(prompt="b")]) as outcomes:
                    assert len([outcome async for outcome in outcomes]) == 1

        anyio.run(main)
        loaded = sorted(name for name in sys.modules if name.split(".")[0] == "psycopg")
        print(loaded)
        """
    )
    out = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert out.strip() == "[]"


def test_a_url_names_the_schema_and_hides_the_password() -> None:
    """``?schema=`` picks the schema; the password never shows in a repr."""
    setting = coordination_from("postgresql://app:s3cret@db:5432/hailuo?schema=team_a")
    assert setting == Coordination("postgresql://app:s3cret@db:5432/hailuo", schema="team_a")
    assert "s3cret" not in repr(setting)
    assert "app:***@db:5432" in repr(setting)


def test_a_url_bounds_the_round_trips_for_the_journal_and_the_limits() -> None:
    """``?round_trip_timeout=`` is the library's: taken out of the URL, kept by both settings."""
    url = "postgresql://app@db/hailuo?sslmode=require&round_trip_timeout=2.5&schema=team_a"
    setting = coordination_from(url)
    assert setting == Coordination(
        "postgresql://app@db/hailuo?sslmode=require", schema="team_a", round_trip_timeout=2.5
    )
    store = store_for(url)
    assert isinstance(store, PostgresJobStore)
    assert (store.schema, store.round_trip_timeout) == ("team_a", 2.5)
    for bad in ("0", "soon", "inf"):
        with pytest.raises(InvalidRequestError, match="round_trip_timeout"):
            coordination_from(f"postgresql://db/x?round_trip_timeout={bad}")


@pytest.mark.parametrize("value", ["sqlite:///x.db", "", "db.internal:5432", 5432])
def test_anything_but_a_postgresql_url_is_refused(value: object) -> None:
    """A setting that is not a postgresql:// URL is an InvalidRequestError naming it."""
    with pytest.raises(InvalidRequestError, match="coordination"):
        HailuoClient("key", coordination=value)  # type: ignore[arg-type]


def test_state_and_coordination_are_exclusive() -> None:
    """A client takes its shared state from one place only."""
    with pytest.raises(InvalidRequestError, match="coordination"):
        HailuoClient("key", state=SharedState.in_memory(), coordination="postgresql://db/hailuo")


def test_a_bad_coordination_object_names_its_field() -> None:
    """A Coordination made with a wrong URL names the field."""
    with pytest.raises(InvalidRequestError, match="dsn"):
        Coordination("mysql://db/hailuo")
