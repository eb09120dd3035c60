"""Records and helpers shared by the data tests."""

import json
from pathlib import Path


def write_jsonl(path: Path, records: list, raw_lines: dict[int, str] | None = None) -> str:
    """records as jsonl; raw_lines {index: text} replaces those lines verbatim (for malformed input)."""
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    for i, text in (raw_lines or {}).items():
        lines[i] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


CHATS = [
    {"messages": [{"role": "system", "content": "You are helpful."},
                  {"role": "user", "content": "Hi!\n\n\nHow are you?"},
                  {"role": "assistant", "content": "Fine, thanks.\n\nAnd you?"},
                  {"role": "user", "content": "写一首诗 😀"},
                  {"role": "assistant", "content": "床前明月光，\n疑是地上霜。"}]},
    {"conversations": [{"from": "human", "value": "def f(x): return x"},
                       {"from": "gpt", "value": "```python\ndef f(x):\n    return x\n```"}]},
    {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
                  {"role": "user", "content": "and 3+3?"}, {"role": "assistant", "content": "6"}]},
    {"instruction": "Translate to French", "input": "Good morning", "output": "Bonjour"},
    {"instruction": "Name a color", "output": "Blue"},
]
