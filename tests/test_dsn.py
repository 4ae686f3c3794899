"""Database addresses: one masker for every form of password, and no URL taken for a file."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli import (  # _clean_env: each test in its own folder, without HAILUO_* variables
    _clean_env,  # noqa: F401
    fake_env,
    invoke,
    threaded_fake,
)

from hailuo_async import Coordination, InvalidRequestError, JournalError
from hailuo_async._dsn import check_not_a_dsn, mask_dsn
from hailuo_async.journal import store_for
from hailuo_async.postgres import CoordinationError

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://app:s3cr3t-Pa55@db:5432/hailuo", "postgresql://app:***@db:5432/hailuo"),
        (
            "postgresql://app@db/hailuo?password=s3cr3t-Pa55&sslmode=require",
            "postgresql://app@db/hailuo?password=***&sslmode=require",
        ),
        (
            "postgres://db/hailuo?sslmode=require&sslpassword=s3cr3t-Pa55#x",
            "postgres://db/hailuo?sslmode=require&sslpassword=***#x",
        ),
        ("host=db password=s3cr3t-Pa55 dbname=hailuo", "host=db password=*** dbname=hailuo"),
        ("host=db password = 's3cr3t Pa55' dbname=x", "host=db password = *** dbname=x"),
        ("postgresql://app:s3cr3t/Pa55@db/hailuo", "postgresql://app:***@db/hailuo"),
        ("postgresql://db:5432/hailuo?schema=a", "postgresql://db:5432/hailuo?schema=a"),
    ],
)
def test_every_form_of_password_is_masked(dsn: str, shown: str) -> None:
    """user:pass@, ?password=, ?sslpassword= and libpq password= all show as ***."""
    assert mask_dsn(dsn) == shown
    assert "s3cr3t" not in mask_dsn(f"cannot connect to {dsn}: refused")


def test_a_coordination_repr_hides_a_query_password() -> None:
    """repr(Coordination(url)) masks a ?password= as well as a user:password@."""
    setting = Coordination(f"postgresql://app@db/hailuo?password={SECRET}&sslmode=require")
    assert SECRET not in repr(setting)
    assert "password=***&sslmode=require" in repr(setting)


def test_journal_and_coordination_errors_never_show_the_password() -> None:
    """An error quoting an address (as psycopg's may) is masked when it is made."""
    for error in (
        JournalError(f"cannot use postgresql://u@h/d?password={SECRET}: refused"),
        CoordinationError(f"connecting: host=h password={SECRET}"),
    ):
        assert SECRET not in str(error)
        assert SECRET not in repr(error)


@pytest.mark.parametrize(
    "value",
    [
        "postgresql:/broken",
        "postgresql:broken",
        "sqlite:///journal.db",
        "postgresql+psycopg://u:p@h/d",
        "http://example.com/journal",
        f"host=db password={SECRET} dbname=hailuo",
        f"  dbname=hailuo password={SECRET}",
    ],
)
def test_an_address_that_is_not_postgresql_is_refused_without_a_file(
    value: str, tmp_path: Path
) -> None:
    """store_for refuses a URL-like or libpq-like value: no store, no file, no password shown."""
    with pytest.raises(InvalidRequestError) as refused:
        store_for(value)
    assert SECRET not in str(refused.value)
    with pytest.raises(InvalidRequestError):
        check_not_a_dsn(value, field="journal")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["run.sqlite", "./postgresql:x.sqlite", "C:\\\\runs\\\\j.sqlite"])
def test_paths_stay_paths(value: str) -> None:
    """A plain path, ./NAME, and a Windows drive letter are SQLite paths."""
    check_not_a_dsn(value, field="journal")


@pytest.mark.parametrize(
    "value",
    ["postgresql:/broken", f"host=db password={SECRET} dbname=hailuo", "sqlite:///x.db"],
)
def test_the_cli_refuses_such_a_journal_in_one_line_and_makes_nothing(
    value: str, tmp_path: Path
) -> None:
    """`hailuo batch --journal VALUE`: exit 2, one line, no folder or file, the password unseen."""
    (tmp_path / "p.txt").write_text("a lark\n")
    with threaded_fake() as server:
        result = invoke("batch", "p.txt", "--out", "o", "--journal", value, env=fake_env(server))
        attempts = server.stats.submission_attempts
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --journal: looks like")
    assert result.stderr.count("\n") == 1
    assert SECRET not in result.output
    assert attempts == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["p.txt"]


def test_name_without_a_postgresql_journal_is_refused(tmp_path: Path) -> None:
    """--name with a SQLite journal (or none): exit 2, one line, nothing sent."""
    (tmp_path / "p.txt").write_text("a lark\n")
    with threaded_fake() as server:
        result = invoke("batch", "p.txt", "--name", "spring", env=fake_env(server))
        status = invoke("status", "t-1", "--name", "spring", env=fake_env(server))
        attempts = server.stats.submission_attempts
    for refused in (result, status):
        assert refused.exit_code == 2
        assert "--name names a batch in a postgresql:// journal" in refused.stderr
    assert attempts == 0
