"""Which PostgreSQL errors mean "storage unavailable", which "retry the transaction"."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from aisd.store.postgresql import verdict


@pytest.mark.parametrize(
    "exc",
    [
        errors.AdminShutdown(),  # 57P01
        errors.CrashShutdown(),  # 57P02
        errors.CannotConnectNow(),  # 57P03
        errors.DiskFull(),  # 53100
        errors.TooManyConnections(),  # 53300
        errors.ConnectionFailure(),  # 08006
        psycopg.OperationalError("connection refused"),  # no SQLSTATE: no server
    ],
)
def test_the_server_gone_or_full_is_storage_unavailable(exc: psycopg.Error) -> None:
    found = verdict(exc)
    assert found is not None
    kind, reason = found
    assert kind == "unavailable"
    assert reason.startswith("PostgreSQL unavailable")
    # The reason names the SQLSTATE, never libpq's text (host and user names).
    assert "refused" not in reason


@pytest.mark.parametrize("exc", [errors.SerializationFailure(), errors.DeadlockDetected()])
def test_a_lost_race_is_retried(exc: psycopg.Error) -> None:
    assert verdict(exc) == ("retry", f"SQLSTATE {exc.sqlstate}")


@pytest.mark.parametrize(
    "exc",
    [
        errors.UniqueViolation(),
        errors.UndefinedTable(),
        errors.QueryCanceled(),  # 57014 is a statement timeout, not a shutdown
        ValueError("not a database error"),
    ],
)
def test_everything_else_is_not_waited_out(exc: Exception) -> None:
    assert verdict(exc) is None
