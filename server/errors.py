"""A request the server refuses, with the gRPC status it answers.

Why a code on the exception: the servicer maps every refusal to one proper status (INVALID_ARGUMENT,
NOT_FOUND, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, UNAVAILABLE when busy) with a message naming the problem, and keeps
serving; `splitinfer.common.transport.wire.WireError` carries a code the same way.
"""


class RequestError(Exception):
    """Refused request. `code` is a `grpc.StatusCode` name."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def invalid(message: str) -> RequestError:
    return RequestError("INVALID_ARGUMENT", message)


def not_found(message: str) -> RequestError:
    return RequestError("NOT_FOUND", message)


def precondition(message: str) -> RequestError:
    return RequestError("FAILED_PRECONDITION", message)


def exhausted(message: str) -> RequestError:
    return RequestError("RESOURCE_EXHAUSTED", message)


def unavailable(message: str) -> RequestError:
    """Busy for now: the same request may succeed later (clients retry UNAVAILABLE with backoff)."""
    return RequestError("UNAVAILABLE", message)
