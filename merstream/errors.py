"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class MerstreamError(Exception):
    """A user-facing error: bad input, missing file, mismatched config. Printed as one line."""
