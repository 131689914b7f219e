"""A real S3 endpoint for tests: moto's server mode on a free local port, spoken to over HTTP.

Server mode, not moto's in-process patching: the code under test must go through botocore's real
HTTP stack (endpoint from the environment, signing, retries, multipart uploads, conditional PUTs),
and a subprocess or a Ray worker reaches the same endpoint through `S3Server.env`.

Two flavours. `threaded_server()` runs in the test process (cheap; what the session fixture `s3`
uses). moto accepts any credentials there. `server_process(auth=True)` runs moto in a child
process with IAM authentication switched on after setup: moto keeps its auth switch and its data
in process-wide globals, so an authenticating server must not share the test process.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from helpers import BOUND_S, wait_for

REGION = "us-east-1"  # the one region where a bucket needs no LocationConstraint
_names = itertools.count()


def free_port() -> int:
    """A TCP port nothing listens on (now): for a server, or for an endpoint that refuses."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def aws_env(endpoint: str, key: str = "testing", secret: str = "testing") -> dict[str, str]:
    """What every process that talks to the endpoint needs; also shuts out the user's own AWS
    configuration (a profile, a config file, instance metadata) so tests never reach real AWS."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


# Unset while a server's environment is in force: each would override the variables above.
_SHADOWING = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION")


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """Set `env` in os.environ for the block (session-wide: no monkeypatch), then restore it."""
    names = [*env, *_SHADOWING]
    saved = {name: os.environ.get(name) for name in names}
    for name in _SHADOWING:
        os.environ.pop(name, None)
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    env: dict[str, str] = field(default_factory=dict)

    def client(self, key: str = "testing", secret: str = "testing", service: str = "s3") -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name=REGION,
        )

    def bucket(self, name: str = "bench") -> str:
        """A new, empty bucket (its name made unique in this server), created with boto3."""
        unique = f"{name}-{next(_names)}-{os.getpid()}"
        self.client().create_bucket(Bucket=unique)
        return unique

    def options(self, key: str = "testing", secret: str = "testing") -> dict[str, Any]:
        """fsspec storage options that reach this server whatever the environment says."""
        return {"key": key, "secret": secret, "client_kwargs": {"endpoint_url": self.endpoint}}


def _wait_up(endpoint: str, proc: subprocess.Popen | None = None) -> None:
    def up() -> bool:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"moto server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=5):
                return True
        except OSError:
            return False

    wait_for(up, f"moto server at {endpoint}", BOUND_S, every=0.2)


@contextmanager
def threaded_server() -> Iterator[S3Server]:
    """moto's server in a thread of this process; any credentials are accepted."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    # Port 0: the OS picks a free one as the server binds it (a port found free beforehand may be
    # taken by then, and start() would wait forever for a server that failed to bind)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_up(endpoint)
        yield S3Server(endpoint, aws_env(endpoint))
    finally:
        server.stop()


@dataclass
class AuthServer(S3Server):
    """A moto server that checks signatures and IAM policies; the users it knows, by role."""

    users: dict[str, tuple[str, str]] = field(default_factory=dict)  # role -> (key, secret)
    guarded: str = ""  # a bucket that exists


_POLICIES = {
    "writer": {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
    "reader": {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"},
}


@contextmanager
def server_process(auth: bool = True) -> Iterator[AuthServer]:
    """moto in a child process. With `auth`, users `writer` (s3:*) and `reader` (no PutObject) and
    a bucket are set up first, then authentication goes on for every later request."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_up(endpoint, proc)
        server = AuthServer(endpoint, aws_env(endpoint))
        server.guarded = server.bucket("guarded")
        iam = server.client(service="iam")
        for role, statement in _POLICIES.items():
            iam.create_user(UserName=role)
            document = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
            iam.put_user_policy(UserName=role, PolicyName=role, PolicyDocument=document)
            made = iam.create_access_key(UserName=role)["AccessKey"]
            server.users[role] = (made["AccessKeyId"], made["SecretAccessKey"])
        if auth:
            # text/plain: with urllib's default (a form) moto reads no body and answers 500
            headers = {"Content-Type": "text/plain"}
            url = f"{endpoint}/moto-api/reset-auth"
            request = urllib.request.Request(url, data=b"0", headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=30):
                pass
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
