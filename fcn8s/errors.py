"""The one error type for mistakes a user can cause (bad file, bad key, bad value)."""


class FCNError(Exception):
    """A user-facing error: the CLI prints ``fcn8s: error: <message>`` and exits with code 2.

    The message must name the file, key or value at fault and, where it helps, what was expected.
    """


def one_line(reason):
    """An exception (or its reason) as one line of an FCNError message: whitespace runs become one space."""
    return " ".join(str(reason).split()) or type(reason).__name__
