"""One jsonl record -> the text to train on, as segments that are or are not trained under `--loss_mask qa`.

The templates are the ones RWKV World / G1 models are trained and prompted with (see the package docstring):
chat turns `User: ...`, `Assistant: ...`, `System: ...` separated by a blank line, and for Alpaca records with an
`input` the official World instruction format `Instruction: ...\\n\\nInput: ...\\n\\nResponse: ...`.

A turn's own text never contains a blank line: `\\n\\n` is the turn separator (inference stops generating at it),
so runs of newlines inside a turn collapse to one `\\n`, as the G1 template does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Role spellings accepted in chat records (OpenAI `role`/`content`, ShareGPT `from`/`value`), lower-cased.
ROLES = {"user": "User", "human": "User", "assistant": "Assistant", "gpt": "Assistant", "system": "System"}
_BLANK_LINES = re.compile(r"\n{2,}")


class RecordError(ValueError):
    """A record that cannot be rendered; the reader adds the file and line."""


@dataclass(frozen=True)
class Rendered:
    """A record's text as consecutive (text, trained) segments; "".join(texts) is the whole document.

    `structured` is False for plain `text` records: they carry no turn boundaries, and under `qa` their mask
    comes from scanning the tokens for chat markers (`chat_mask.py`) exactly as for binidx data.
    The document's trailing EOD (token 0) is trained iff the last segment is.
    """

    segments: tuple[tuple[str, bool], ...]
    structured: bool

    @property
    def text(self) -> str:
        return "".join(text for text, _ in self.segments)


def clean_turn(text: str) -> str:
    """Normalise one turn's text: CRLF -> LF, strip, and no blank lines inside (they would end the turn)."""
    return _BLANK_LINES.sub("\n", text.replace("\r\n", "\n").strip())


def _string(record: dict, key: str, required: bool = True) -> str:
    value = record.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        found = "missing" if value is None else f"a {type(value).__name__}"
        raise RecordError(f'field "{key}" must be a string, but is {found}')
    return value


def _first_key(record: dict, keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if k in record), None)


def render_chat(turns: list[tuple[str, str]]) -> Rendered:
    """[(role, text)] with role in User/Assistant/System -> segments; only Assistant turns are trained.

    An Assistant turn is split after "Assistant:" because that is where an inference prompt ends: the model
    continues with " answer", so the answer's tokens here are the ones it must produce there.
    """
    segments: list[tuple[str, bool]] = []
    for i, (role, text) in enumerate(turns):
        text = clean_turn(text)
        end = "" if i == len(turns) - 1 else "\n\n"
        if role == "Assistant":
            segments.append(("Assistant:", False))
            segments.append(((f" {text}" if text else "") + end, True))
        else:
            segments.append((f"{role}: {text}{end}", False))
    return Rendered(tuple(segments), structured=True)


def _chat_turns(record: dict, key: str) -> list[tuple[str, str]]:
    messages = record[key]
    if not isinstance(messages, list) or not messages:
        raise RecordError(f'"{key}" must be a non-empty list of messages')
    turns = []
    if isinstance(record.get("system"), str) and record["system"].strip():
        turns.append(("System", record["system"]))
    for n, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RecordError(f'"{key}"[{n}] must be an object with a role and a content')
        role_key = _first_key(message, ("role", "from"))
        text_key = _first_key(message, ("content", "value"))
        if role_key is None or text_key is None:
            raise RecordError(f'"{key}"[{n}] needs "role" and "content" (or "from" and "value")')
        role = ROLES.get(str(message[role_key]).lower())
        if role is None:
            raise RecordError(f'"{key}"[{n}] has role {message[role_key]!r}; accepted roles: {", ".join(ROLES)}')
        turns.append((role, _string(message, text_key)))
    return turns


def render_alpaca(instruction: str, input_text: str, output: str) -> Rendered:
    """Alpaca fields -> segments; the output (and the EOD after it) is trained."""
    instruction, input_text = clean_turn(instruction), clean_turn(input_text)
    if not input_text:
        return render_chat([("User", instruction), ("Assistant", output)])
    prompt = f"Instruction: {instruction}\n\nInput: {input_text}\n\nResponse:"
    output = clean_turn(output)
    return Rendered(((prompt, False), (f" {output}" if output else "", True)), structured=True)


def render_record(record: object) -> Rendered:
    """A parsed jsonl value -> its rendered document. Raises RecordError for what cannot be trained on.

    Field precedence: `messages` / `conversations` (chat), then `instruction` + `output` (Alpaca), then `text`.
    """
    if not isinstance(record, dict):
        raise RecordError(f"a record must be a JSON object, not a {type(record).__name__}")
    chat_key = _first_key(record, ("messages", "conversations"))
    if chat_key is not None:
        return render_chat(_chat_turns(record, chat_key))
    if "instruction" in record or "output" in record:
        return render_alpaca(_string(record, "instruction"), _string(record, "input", required=False),
                             _string(record, "output"))
    if "text" in record:
        return Rendered(((_string(record, "text"), True),), structured=False)
    raise RecordError('no "text", "messages"/"conversations" or "instruction"+"output" field; found '
                      + (", ".join(f'"{k}"' for k in list(record)[:8]) or "an empty object"))
