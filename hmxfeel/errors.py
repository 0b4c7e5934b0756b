"""The error types the CLI turns into a single line on stderr and exit code 2."""


class UserError(Exception):
    """Bad input from the user (file, flag, model, folder). The message names the file/field and the problem."""


class NonFiniteError(Exception):
    """A number that must be finite (a judge score, a reward) came out NaN or infinite where it is made. The
    message names what it was computed for; nothing downstream may average or train on it."""
