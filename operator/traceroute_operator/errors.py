"""The one exception the verbs raise to ask kopf for a retry."""

from __future__ import annotations


class RetryableError(RuntimeError):
    """A temporary failure: kopf retries the handler after ``delay`` seconds."""

    def __init__(self, message: str, delay: float = 15.0) -> None:
        super().__init__(message)
        self.delay = delay
