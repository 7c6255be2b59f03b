"""Hypothesis profiles: `ci` (few examples, reproducible) when CI is set, else `dev`;
the S3 server fixtures (`s3_server`, `s3`).

`HYPOTHESIS_PROFILE=name` picks a profile explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.s3server import S3Server

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.register_profile(
    "dev", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server on loopback for the whole session (see `tests/s3server.py`)."""
    server = S3Server.start()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The S3 server, with boto3 and s3fs pointed at it (fake credentials) for this test."""
    s3_server.apply(monkeypatch)
    return s3_server
