"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class MerstreamError(Exception):
    """A user-facing error: bad input, missing file, mismatched config. Printed as one line."""


class Interrupted(BaseException):
    """SIGINT/SIGTERM turned into an exception, so writers can close their timelines cleanly."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        super().__init__(signal.Signals(signum).name)
