"""The one exception type for mistakes a user can make (bad file, bad flag, bad checkpoint).

The CLI turns it into a single line on stderr and a non-zero exit code; anything else is a bug
and stays loud.
"""


class CharLMError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


def flag(name: str) -> str:
    """The command-line flag of a setting (`hidden_size`: `--hidden-size`), as messages say it."""
    return "--" + name.replace("_", "-")
