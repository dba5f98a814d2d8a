"""A real S3-protocol server on loopback (moto's server mode), started once per session, and per test a fresh
bucket with the standard AWS variables pointing at it (set for that test only)."""

from __future__ import annotations

import itertools
import json
import logging

import pytest

from tests.conftest import free_port

_names = itertools.count()


@pytest.fixture(scope="session")
def moto_endpoint():
    pytest.importorskip("moto.server", reason="the object-store tests need moto[server] (the dev extra)")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws_env(moto_endpoint, monkeypatch, tmp_path):
    """The standard variables an S3 user sets, pointing at the loopback server; no ~/.aws file is read."""
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "KVW_DUCKDB_S3"):
        monkeypatch.delenv(k, raising=False)
    return env


@pytest.fixture
def bucket(aws_env):
    """A new, empty bucket; yields its s3:// URL."""
    import boto3

    name = f"kvw-test-{next(_names)}"
    boto3.client("s3", endpoint_url=aws_env["AWS_ENDPOINT_URL"]).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture
def s3_auth(aws_env, moto_endpoint):
    """Make the server check credentials (moto accepts any by default): returns the (key id, secret) of a real
    IAM user allowed everything; every other key is refused until the test ends."""
    import boto3
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    iam = boto3.client("iam", endpoint_url=moto_endpoint)
    user = f"kvw-{next(_names)}"
    iam.create_user(UserName=user)
    doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    arn = iam.create_policy(PolicyName=f"{user}-all", PolicyDocument=json.dumps(doc))["Policy"]["Arn"]
    iam.attach_user_policy(UserName=user, PolicyArn=arn)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    before = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # the in-process server reads this on every request
    ActionAuthenticatorMixin.request_count = 0
    yield key["AccessKeyId"], key["SecretAccessKey"]
    settings.INITIAL_NO_AUTH_ACTION_COUNT = before
    ActionAuthenticatorMixin.request_count = 0
