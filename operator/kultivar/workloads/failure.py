"""The one way a training step says why it cannot go on."""

from __future__ import annotations


class TrainingFailure(Exception):
    """A failure with a CamelCase reason for the TrainingRun's condition; retrying cannot help unless retryable."""

    def __init__(self, reason: str, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.reason, self.message, self.retryable = reason, message, retryable
