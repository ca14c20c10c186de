"""Errors the functions raise.

Handlers let them propagate so Lambda/SQS retry and the DLQ catches what keeps failing.
"""


class FlywheelError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigurationError(FlywheelError):
    """The environment or the stack is not set up as the template says."""


class QuotaExceeded(FlywheelError):
    """SageMaker refused a job for an account quota (ResourceLimitExceeded): retrying won't help."""


class RetryableError(FlywheelError):
    """Try again later: throttling, an endpoint still updating, a dependency down."""


class EndpointUnavailable(RetryableError):
    """The champion endpoint throttled or failed; the message must be retried, never dropped."""


class EndpointNotReady(RetryableError):
    """The endpoint is still Creating/Updating; the promotion event must be retried."""


class JobNotFinished(RetryableError):
    """A job event arrived before DescribeTrainingJob shows a terminal state."""


class InvalidArtifact(FlywheelError):
    """model.tar.gz or metrics.json does not follow the contract."""


# -- the review API's client errors (one status each; the handler maps them in one place)


class ClientError(FlywheelError):
    """A request the API refuses; ``status`` is its HTTP status code."""

    status = 400

    def __init__(self, message: str, code: str = "bad_request"):
        super().__init__(message)
        self.message = message
        self.code = code


class BadRequest(ClientError):
    """Malformed input: not an item id, an unknown action, an invalid label (400)."""

    status = 400


class NotFound(ClientError):
    """No such item, or nothing to undo (404)."""

    status = 404


class Conflict(ClientError):
    """Someone else holds the item's lease, or the item changed since (409)."""

    status = 409


def http_status(exc: Exception) -> int:
    """The error -> status mapping of the review API: client errors say theirs, else 500."""
    return exc.status if isinstance(exc, ClientError) else 500
