"""Synthetic multilingual text for the tokenizer and data benchmarks (and nothing else).

Documents mix English, Chinese, Japanese, Korean, Russian, Arabic, Hindi, French/German with accents, emoji (incl.
ZWJ sequences and flags), source code and chat-formatted turns, shuffled at the sentence level from a seeded
generator so that the text is not one paragraph repeated (greedy tokenizers would then see an unrealistically
small set of tokens).
"""

from __future__ import annotations

import random

SENTENCES = [
    "Today is a beautiful day, and the RWKV model keeps its state in a fixed-size matrix per head.",
    "The quick brown fox jumps over the lazy dog; 1234567890 + 3.14159 = 1234567893.14159.",
    "今天是美好的一天。我们用循环神经网络训练语言模型，它的推理速度与上下文长度无关。",
    "東京は日本の首都です。ひらがなとカタカナと漢字が混ざった文章をトークン化します。",
    "서울은 대한민국의 수도입니다. 한국어 문장도 바이트 단위로 처리됩니다.",
    "Москва — столица России. Быстрая бурая лиса перепрыгивает через ленивую собаку.",
    "القاهرة هي عاصمة مصر، وهذه جملة عربية لاختبار المُرمِّز.",
    "नमस्ते, यह हिंदी का एक वाक्य है जो देवनागरी लिपि में लिखा गया है।",
    "Le garçon a mangé une crème brûlée à la française; Über die Brücke gehen Mädchen und Jungen.",
    "Emoji: 😀🎉🚀 👩‍👩‍👧‍👦 🇨🇳🇺🇸 ❤️‍🔥 👍🏽 — and a few symbols ∑∫√∞ ≠ ≤ ≥ µs °C.",
    "def fib(n: int) -> int:\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n",
    "SELECT name, COUNT(*) FROM users WHERE created_at > '2024-01-01' GROUP BY name;",
    "User: 你好，请介绍一下你自己。\n\nAssistant: 我是一个基于 RWKV 架构的语言模型。",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
    "    Indented text with\ttabs and  double  spaces, and a URL: https://example.com/path?q=1&r=2#x",
]


def documents(n_bytes: int, seed: int = 0, sentences_per_doc: tuple[int, int] = (4, 40)) -> list[str]:
    """About `n_bytes` of UTF-8 text as documents of a random number of shuffled sentences."""
    rng = random.Random(seed)
    out, total = [], 0
    while total < n_bytes:
        n = rng.randint(*sentences_per_doc)
        doc = "\n\n".join(" ".join(rng.choices(SENTENCES, k=rng.randint(1, 4))) for _ in range(n // 4 + 1))
        out.append(doc)
        total += len(doc.encode("utf-8"))
    return out


def random_unicode(n_chars: int, seed: int = 0) -> str:
    """Random code points from all planes (no surrogates): exercises byte fallback and rare tokens."""
    rng = random.Random(seed)
    chars = []
    while len(chars) < n_chars:
        cp = rng.choice([rng.randint(0, 0x7F), rng.randint(0x80, 0x7FF), rng.randint(0x800, 0xFFFF),
                         rng.randint(0x10000, 0x10FFFF)])
        if not 0xD800 <= cp <= 0xDFFF:
            chars.append(chr(cp))
    return "".join(chars)
