"""Errors the functions raise.

Handlers let them propagate so Lambda/SQS retry and the DLQ catches what keeps failing.
"""


class FlywheelError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigurationError(FlywheelError):
    """The environment or the stack is not set up as the template says."""


class QuotaExceeded(FlywheelError):
    """SageMaker refused a job for an account quota (ResourceLimitExceeded): retrying won't help."""


class RejectedImage(FlywheelError):
    """An upload that can never become an item (corrupt, too big, not an image)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


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
