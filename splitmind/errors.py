"""Error types. Only `api/errors.py` maps them to HTTP status codes.

Each docstring says whether the error is retryable: a client's mistake is not; a worker that
failed, timed out or vanished is (on another worker, by the router, in a later issue).
"""

from __future__ import annotations


class SplitmindError(Exception):
    """Root of every splitmind error."""

    retryable = False


class InvalidRequestError(SplitmindError):
    """The client asked for something malformed or impossible. Not retryable."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class RequestTooLargeError(InvalidRequestError):
    """The request body is over the gateway's cap. Not retryable."""


class PrepareTimeoutError(SplitmindError):
    """Templating and tokenizing the prompt took too long (a huge prompt, or a gateway whose
    prepare threads are all busy). Retryable later."""

    retryable = True


class UnsupportedParameterError(InvalidRequestError):
    """A known OpenAI parameter that splitmind does not implement. Not retryable."""


class ContextLengthError(InvalidRequestError):
    """Prompt (plus requested output) exceeds the model's context. Not retryable."""


class ModelNotFoundError(SplitmindError):
    """The request names a model this deployment does not serve. Not retryable."""

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist.")
        self.model = model


class NoWorkerError(SplitmindError):
    """No healthy worker of a needed role. Retryable later (service unavailable)."""

    retryable = True


class OverloadedError(SplitmindError):
    """Every healthy worker of a role is at its limit: the gateway starts no work it cannot
    finish. Retryable after `retry_after_s` (429 with Retry-After)."""

    retryable = True

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class WorkerError(SplitmindError):
    """A worker failed the request (engine error, protocol error). Retryable elsewhere."""

    retryable = True

    def __init__(self, worker_id: str, message: str) -> None:
        super().__init__(f"worker {worker_id}: {message}")
        self.worker_id = worker_id


class WorkerRejectedError(SplitmindError):
    """A worker judged the request invalid (its 4xx). Not retryable."""

    def __init__(self, worker_id: str, message: str) -> None:
        super().__init__(message)
        self.worker_id = worker_id


class WorkerTimeoutError(WorkerError):
    """A worker did not answer within its timeout. Retryable elsewhere."""
