"""The one exception type a user sees: a one-line message that says what is wrong and how to fix it."""


class PipelineError(ValueError):
    """A problem with the user's input or environment (not a bug).

    The CLI prints `error: <message>` and exits with `exit_code`, without a traceback.
    """

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class UsageError(PipelineError):
    """A bad command line: unknown use case, unknown `--set` key, bad value (exit code 2)."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=2)
