"""Shared test configuration: nothing here may touch AWS or the network."""

import os

# Every test runs against fakes or the local stack; make sure a developer's real
# credentials and region can never be picked up by a stray client.
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ.pop("AWS_PROFILE", None)
