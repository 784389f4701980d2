"""The exception types the command line turns into one line on stderr and an exit code."""


class UserError(Exception):
    """Bad input (config, data, checkpoint, option): the CLI prints the message on one line and
    exits with code 2.

    The message names the problem and the fix, e.g. "data.image_size=30 is not divisible by f=4; use
    32".
    """


class Interrupted(KeyboardInterrupt):
    """Work stopped by a signal (Ctrl-C, SIGTERM): the CLI prints the message (what was saved, how
    to continue) and exits with `code` (128 + the signal number, as a shell reports a process ended
    by that signal)."""

    def __init__(self, message: str, code: int = 130):
        super().__init__(message)
        self.code = code
