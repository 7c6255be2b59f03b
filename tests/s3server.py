"""A real S3-compatible server for tests: moto's server mode on a free loopback port.

`S3Server.start()` runs `moto.server.ThreadedMotoServer` on 127.0.0.1 and `environment()`
gives the variables that point boto3 and s3fs at it with fake credentials and few,
quick retries (so an unreachable or refusing server fails in seconds). Nothing here
talks to anything but the loopback address.

    server = S3Server.start()
    with pytest.MonkeyPatch.context() as patch:
        server.apply(patch)           # env + a fresh s3fs instance cache
        server.bucket("models")       # boto3 client, create the bucket
    server.stop()

The conftest fixture `s3` (session-scoped server, per-test environment) wraps this.
"""

from __future__ import annotations

import logging
import socket
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

FAKE_KEY_ID = "AKIAFLAMBECOMPATTEST"
FAKE_SECRET = "flambe-compat-fake-secret-never-printed"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def closed_port_url() -> str:
    """An http URL on loopback where nothing listens (for unreachable-store tests)."""
    return f"http://127.0.0.1:{free_port()}"


@dataclass
class S3Server:
    """A running moto server and how to reach it."""

    server: Any
    endpoint: str

    @classmethod
    def start(cls) -> S3Server:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        return cls(server, f"http://127.0.0.1:{port}")

    def stop(self) -> None:
        self.server.stop()

    def environment(self, endpoint: str | None = None) -> dict[str, str]:
        """Variables for boto3/s3fs: this endpoint (or `endpoint`), fake credentials, one
        retry per request at botocore's level."""
        return {
            "AWS_ENDPOINT_URL": endpoint or self.endpoint,
            "AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_MAX_ATTEMPTS": "2",
            "AWS_RETRY_MODE": "standard",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def apply(self, patch: pytest.MonkeyPatch, endpoint: str | None = None) -> None:
        """Point s3fs and boto3 at the server (or `endpoint`) for the time of `patch`."""
        import fsspec.config
        import s3fs

        for name, value in self.environment(endpoint).items():
            patch.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        # s3fs retries connection errors itself (5 times, with backoff): twice is enough
        # here, and a refused connection (nothing listening) fails at once
        patch.setattr(s3fs.S3FileSystem, "retries", 2)
        patch.setitem(
            fsspec.config.conf, "s3", {"config_kwargs": {"connect_timeout": 10, "read_timeout": 60}}
        )
        s3fs.S3FileSystem.clear_instance_cache()

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=FAKE_KEY_ID,
            aws_secret_access_key=FAKE_SECRET,
            region_name=REGION,
        )

    def bucket(self, prefix: str = "test") -> str:
        """Create a fresh bucket; returns its name."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name
