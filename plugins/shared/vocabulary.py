"""Word-level vocabulary built from training captions, for models that read or write sentences.

Captions of synthesized scenes (and of Clotho/AudioCaps after normalisation) use a few hundred
words at most, so whole words are the cheapest tokens: no sub-word model to download or ship,
and the vocabulary is a plain JSON list that travels inside the task config, hence inside every
bundle's manifest, and next to the shipped weights.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
_NON_WORD = re.compile(r"[^a-z0-9' ]+")


def normalize(text: str) -> list[str]:
    """Lowercase words without punctuation: what the tokenizer and every metric compare.

    The reference metric tools run the Java PTB tokenizer; without Java we lowercase and strip
    punctuation ourselves (hyphens become spaces, so "hi-hat" and "hi hat" agree).
    """
    return _NON_WORD.sub(" ", text.lower().replace("-", " ")).split()


class Vocabulary:
    """Token ids: the four specials first, then words by falling frequency (ties alphabetical)."""

    def __init__(self, words: Sequence[str]):
        self.words = list(words)
        if tuple(self.words[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}")
        self.index = {word: i for i, word in enumerate(self.words)}
        self.pad, self.bos, self.eos, self.unk = (self.index[s] for s in SPECIALS)

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> "Vocabulary":
        counts = Counter(word for caption in captions for word in normalize(caption))
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(list(SPECIALS) + kept)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, caption: str, max_tokens: int) -> list[int]:
        """``<bos> words... <eos>``, the words cut so the whole fits ``max_tokens``."""
        ids = [self.index.get(word, self.unk) for word in normalize(caption)][: max_tokens - 2]
        return [self.bos, *ids, self.eos]

    def decode(self, ids: Iterable[int]) -> str:
        """Words up to the first ``<eos>``; specials other than ``<unk>`` are dropped."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.eos:
                break
            if i not in (self.pad, self.bos):
                words.append(self.words[i])
        return " ".join(words)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.words, indent=0) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        return cls(json.loads(Path(path).read_text()))
