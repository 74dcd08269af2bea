"""Exceptions, one per C error code (CC_E*)."""


class CommcareError(Exception):
    """A libcommcare call failed; code is the negative CC_E* code."""
    code = -9

    def __init__(self, message, code=None, result=None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.result = result  # the engine's answer, for a refused submission


class NotFoundError(CommcareError, LookupError):
    code = -1


class AlreadyExistsError(CommcareError):
    code = -2


class InvalidArgumentError(CommcareError, ValueError):
    code = -3


class FailedPreconditionError(CommcareError):
    code = -4


class AbortedError(CommcareError):
    code = -5


class UnavailableError(CommcareError):
    code = -6


class DataLossError(CommcareError):
    code = -7


class UnimplementedError(CommcareError, NotImplementedError):
    code = -8


class InternalError(CommcareError):
    code = -9


class ResourceExhaustedError(CommcareError):
    code = -10


class PermissionDeniedError(CommcareError, PermissionError):
    code = -11


class UnauthenticatedError(CommcareError):
    code = -12


_BY_CODE = {c.code: c for c in (
    NotFoundError, AlreadyExistsError, InvalidArgumentError, FailedPreconditionError,
    AbortedError, UnavailableError, DataLossError, UnimplementedError, InternalError,
    ResourceExhaustedError, PermissionDeniedError, UnauthenticatedError)}


def from_code(code, message, result=None):
    """The exception for a CC_E* code."""
    return _BY_CODE.get(code, CommcareError)(message, code=code, result=result)
