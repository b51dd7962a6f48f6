"""Errors and warnings raised while reading images."""


class ImageReadError(OSError):
    """An image could not be read or decoded (an ``OSError``: ``except OSError`` catches it).

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
    """One line saying what went wrong, in words (no exception class names): the OS's message for
    OSErrors ("No such file or directory"), the exception's message otherwise."""
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    if isinstance(cause, BaseException):
        text = " ".join(str(cause).split())
        if isinstance(cause, MemoryError):
            return "not enough memory to decode it" + (f" ({text})" if text else "")
        return text or "the image data are invalid"
    return str(cause)
