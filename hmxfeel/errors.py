"""The one error type the CLI turns into a single line on stderr and exit code 2."""


class UserError(Exception):
    """Bad input from the user (file, flag, model, folder). The message names the file/field and the problem."""
