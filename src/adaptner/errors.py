"""The one error type that the CLI turns into a clean message and a non-zero exit."""


class AdaptnerError(Exception):
    """A user-facing error: what went wrong, where, and what to do about it."""
