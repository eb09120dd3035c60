"""Backslash escapes in prompt flags: shell double quotes keep `\n` as two characters, so `--prompt "a\n\nb"`
would otherwise send a backslash and an n to the model."""

import re

_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def unescape(text: str) -> str:
    """`\\n` -> newline, `\\t` -> tab, `\\\\` -> one backslash; any other backslash stays as typed."""
    return re.sub(r"\\([nt\\])", lambda m: _ESCAPES[m.group(1)], text)
