"""The one exception type for errors a user can cause and fix."""


class GanLabError(Exception):
    """A bad override, missing data, an incompatible combination or an unusable file.

    The CLI prints its message as one paragraph and exits with code 2, no traceback.
    Bugs raise ordinary exceptions and keep their tracebacks.
    """
