"""The one exception type the CLI turns into a short message instead of a traceback."""


class UserError(Exception):
    """Bad input from the user: a path, a file or a setting that must change, said in a line or two."""
