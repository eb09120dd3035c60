"""The one exception type a user sees.

Anything a user can cause (a bad path, a malformed file, wrong dimensions, an unsupported combination) raises
`UserError` with a message that names the file/line/value and says what to do. The CLI prints it on one line and
exits non-zero; every other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error caused by the user's input, reported without a traceback."""
