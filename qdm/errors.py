"""One exception type for user mistakes: the CLI prints its message as one line, no traceback."""


class UserError(Exception):
    """Bad input from the user (unknown dataset, missing file, mismatched checkpoint...).
    The message says what is wrong and what to do."""


def check_choice(value, choices, what: str) -> None:
    """UserError unless value is one of choices: 'unknown <what> <value>: use one of ...'."""
    if value not in choices:
        raise UserError(f"unknown {what} {value!r}: use one of {', '.join(map(str, choices))}")
