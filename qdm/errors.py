"""One exception type for user mistakes: the CLI prints its message as one line, no traceback."""


class UserError(Exception):
    """Bad input from the user (unknown dataset, missing file, mismatched checkpoint...).
    The message says what is wrong and what to do."""
