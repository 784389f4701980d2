"""The one exception type for problems with a user's input."""


class UserError(Exception):
    """Bad input (config, data, checkpoint, option): the CLI prints the message on one line and exits with code 2.

    The message names the problem and the fix, e.g. "data.image_size=30 is not divisible by f=4; use 32".
    """
