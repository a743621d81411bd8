"""The one exception type for bad user input: scripts print its message and exit 2."""


class UsageError(Exception):
    """A bad flag, file or value; the message names it and says what was expected."""
