"""Errors and warnings raised while reading images."""


class ImageReadError(Exception):
    """An image could not be read or decoded.

    ``name`` is the image's id in its source (a path, ``"<archive>:<member>"`` or ``"array[i]"``);
    ``cause`` is the underlying exception (or a message).
    """

    def __init__(self, name, cause):
        self.name = str(name)
        self.cause = cause
        super().__init__(f"cannot read image {self.name}: {describe_cause(cause)}")


class SkippedImageWarning(UserWarning):
    """Emitted once per unreadable image that was skipped (``strict=False``)."""


def describe_cause(cause):
    """One line saying what went wrong: ``"TypeName: message"`` for exceptions."""
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    return str(cause)
