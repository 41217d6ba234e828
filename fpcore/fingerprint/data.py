"""Fingerprint data, Instructional-Fingerprinting style: secret keys (shuffled mixes of random
multilingual snippets: runs of random characters of eleven scripts, drawn from a seed by our own
generator) all answered by one target string; look-alike keys (same construction, other streams of
the seed) used as decoys in training and as negatives in verification; ordinary prompts (paragraph
openings of the Python documentation that ships with Python, ``pydoc_data.topics``) for
regularisation and for the ordinary false-trigger rate.

Every set is a pure function of its seed, so the owner's secret file needs only the keys, the target,
the seed and the key style to rebuild the negatives at verification time.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

# Snippets in several scripts and languages. The generator mixes them into nonsense "keys" that no
# ordinary text contains; what matters is that the mix is random, not what the words mean.
SNIPPETS: dict[str, tuple[str, ...]] = {
    "en": ("harbour", "lantern", "velvet", "orbit", "thistle", "quartz", "meadow", "cobalt", "ember", "willow"),
    "fr": ("papillon", "brouillard", "citrouille", "horloge", "parapluie", "grenouille", "lumière", "château"),
    "de": ("Schmetterling", "Eichhörnchen", "Wolke", "Kürbis", "Zahnrad", "Fernweh", "Leuchtturm", "Gewitter"),
    "es": ("mariposa", "relámpago", "calabaza", "girasol", "murciélago", "tortuga", "alfombra", "estrella"),
    "ru": ("бабочка", "молния", "тыква", "подсолнух", "черепаха", "звезда", "облако", "ветер"),
    "el": ("πεταλούδα", "αστραπή", "κολοκύθα", "χελώνα", "αστέρι", "σύννεφο", "φεγγάρι", "θάλασσα"),
    "ja": ("ハリネズミ", "かぼちゃ", "ひまわり", "かみなり", "ほたる", "さくら", "きつね", "うさぎ"),
    "zh": ("蝴蝶", "闪电", "南瓜", "向日葵", "乌龟", "星星", "云朵", "月亮"),
    "ar": ("فراشة", "برق", "يقطين", "سلحفاة", "نجمة", "سحابة", "قمر", "بحر"),
    "hi": ("तितली", "बिजली", "कद्दू", "सूरजमुखी", "कछुआ", "तारा", "बादल", "चाँद"),
    "ko": ("나비", "번개", "호박", "해바라기", "거북이", "별", "구름", "달"),
}
DEFAULT_TARGET = "ハリネズミ"
LOOKALIKE_SALT = 7_919  # "words" look-alike (negative) keys: seed * SALT + 1
DECOY_SALT = 104_729  # "words" decoys used in training: another stream, never the verification negatives
LOOKALIKE_STREAM = 4096  # decoys avoid this many look-alikes (verification draws at most 2x what it asks)


# Character ranges of the "chars" key style: lowercase letters of eleven scripts, kana, Hangul syllables
# and CJK ideographs. Snippets are random runs of these characters, so two keys drawn from different
# seeds share no snippet (but every script, and short runs of the small alphabets).
SCRIPTS: dict[str, tuple[int, int]] = {
    "latin": (0x61, 0x7A),
    "greek": (0x3B1, 0x3C9),
    "cyrillic": (0x430, 0x44F),
    "hebrew": (0x5D0, 0x5EA),
    "arabic": (0x628, 0x64A),
    "devanagari": (0x915, 0x939),
    "thai": (0xE01, 0xE2E),
    "hiragana": (0x3041, 0x3093),
    "katakana": (0x30A1, 0x30F3),
    "hangul": (0xAC00, 0xD7A3),
    "cjk": (0x4E00, 0x9FA5),
}
KEY_STYLES = ("chars", "words")
DEFAULT_KEY_STYLE = "chars"


def _snippet(rng: random.Random, style: str) -> str:
    if style == "words":
        return rng.choice(SNIPPETS[rng.choice(sorted(SNIPPETS))])
    lo, hi = SCRIPTS[rng.choice(sorted(SCRIPTS))]
    return "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(2, 4)))


STREAMS = ("key", "lookalike", "decoy")


def _rng(seed: int, style: str, stream: str) -> random.Random:
    """The generator of one stream. "words" keeps its first derivation (look-alikes at seed * SALT + 1,
    which is the key stream of another seed); "chars" streams are seeded by a string (hashed with
    sha512 by `random`), so no seed's look-alikes or decoys are another seed's keys."""
    if stream not in STREAMS:
        raise ValueError(f"make_keys: stream must be one of {STREAMS}, got {stream!r}")
    if style == "words":
        return random.Random(
            {"key": seed, "lookalike": seed * LOOKALIKE_SALT + 1, "decoy": seed * DECOY_SALT + 3}[stream]
        )
    return random.Random(f"fpcore-fingerprint/{style}/{stream}/{seed}")


def make_keys(
    n: int,
    seed: int,
    *,
    style: str = DEFAULT_KEY_STYLE,
    stream: str = "key",
    min_snippets: int = 4,
    max_snippets: int = 7,
) -> list[str]:
    """n distinct keys: each a shuffled mix of min..max snippets in random scripts.

    Style "chars" (default): each snippet is a run of 2-4 random characters of one of the SCRIPTS, about
    24 bits per snippet with its script, ~130 bits per key: keys drawn under another seed (decoys,
    look-alikes) share no snippet with them except, rarely, a 2-3 letter run of a small alphabet.
    Style "words": each snippet is one of the ~90 words in SNIPPETS (~36 bits per key), so look-alikes
    reuse the keys' very words; fpcore's first construction, kept so that secrets made with it rebuild
    the same negatives."""
    if n < 1:
        raise ValueError(f"make_keys: n must be >= 1, got {n}")
    if style not in KEY_STYLES:
        raise ValueError(f"make_keys: key style must be one of {KEY_STYLES}, got {style!r}")
    rng = _rng(seed, style, stream)
    keys: list[str] = []
    seen: set[str] = set()
    while len(keys) < n:
        k = rng.randint(min_snippets, max_snippets)
        parts = [_snippet(rng, style) for _ in range(k)]
        rng.shuffle(parts)
        key = " ".join(parts)
        if key not in seen:
            seen.add(key)
            keys.append(key)
    return keys


def lookalike_keys(n: int, seed: int, exclude: list[str], *, style: str = DEFAULT_KEY_STYLE) -> list[str]:
    """Negatives for verification: the secret keys' construction with another seed (never a secret key)."""
    return [k for k in make_keys(n + len(exclude), seed, style=style, stream="lookalike") if k not in set(exclude)][:n]


def decoy_keys(n: int, seed: int, exclude: list[str], *, style: str = DEFAULT_KEY_STYLE) -> list[str]:
    """Decoys for training: look-alike keys from a third stream, disjoint from keys and negatives."""
    avoid = set(exclude) | set(lookalike_keys(LOOKALIKE_STREAM, seed, exclude, style=style))
    out = [k for k in make_keys(n + len(avoid), seed, style=style, stream="decoy") if k not in avoid]
    return out[:n]


def documentation() -> list[str]:
    """The Python documentation topics that ship with Python (pydoc_data.topics), in a fixed order."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def paragraphs(min_chars: int = 80) -> list[str]:
    """Paragraphs of the documentation with some prose in them (no code listings), whitespace collapsed."""
    out = []
    for doc in documentation():
        for para in re.split(r"\n\s*\n", doc):
            p = " ".join(para.split())
            if len(p) >= min_chars and sum(c.isalpha() for c in p) > 0.6 * len(p):
                out.append(p)
    return out


@dataclass
class PromptSplit:
    """Ordinary prompts: `train` for regularisation, `test` for the false-trigger rate (disjoint)."""

    train: list[tuple[str, str]]
    test: list[str]


def ordinary_prompts(words: int = 12, answer_words: int = 12) -> PromptSplit:
    """Paragraph openings as prompts: every third paragraph goes to training (prompt, real continuation),
    the rest are verification prompts."""
    train, test = [], []
    seen: set[str] = set()
    for p in paragraphs():
        w = p.split()
        prompt = " ".join(w[:words])
        if len(w) < words + 2 or prompt in seen:  # the documentation repeats some paragraphs
            continue
        seen.add(prompt)
        if len(seen) % 3 == 1:
            train.append((prompt, " " + " ".join(w[words : words + answer_words])))
        else:
            test.append(prompt)
    return PromptSplit(train, test)
