"""Captioning metrics: BLEU-1/4, ROUGE-L and CIDEr-D as the COCO caption evaluation defines them
(the values ``aac-metrics`` reports), plus event precision/recall/F1.

Sentences are compared as ``tokenizer.normalize`` words (lowercase, no punctuation) in place of
the Java PTB tokenizer. BLEU is corpus-level with the "closest" reference length; ROUGE-L is
the mean over candidates of the LCS F-measure with beta 1.2; CIDEr-D uses n-grams up to 4,
document frequencies from the references of the evaluated set, a length penalty with sigma 6,
clipped candidate counts and a factor of 10.

N-gram metrics reward fluent captions that name the wrong sounds, so ``event_scores`` counts
which of a clip's event classes a caption mentions through a synonym table.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from functools import lru_cache
from typing import Mapping, Sequence

from edgeaudio.plugins.caption.tokenizer import normalize

MAX_N = 4


def _ngrams(words: Sequence[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def bleu(candidates: Sequence[str], references: Sequence[Sequence[str]], max_n: int = MAX_N) -> list[float]:
    """Corpus BLEU-1..``max_n``: clipped n-gram precisions summed over the corpus, geometric mean,
    brevity penalty from the total candidate length vs the closest reference lengths.

    Smoothed exactly as the COCO caption scorer (``bleu_scorer.py``) smooths: ``tiny`` (1e-15) on
    every count of matches, ``small`` (1e-9) on every count of n-grams, so an order without a
    single match gives BLEU near 0 as there instead of the 1e-9 ratio that once stood here
    (tests/test_caption.py pins it against the scorer's rule)."""
    matched, total = [0.0] * max_n, [0.0] * max_n
    cand_len = ref_len = 0
    tiny, small = 1e-15, 1e-9
    for cand, refs in zip(candidates, references):
        words = normalize(cand)
        ref_words = [normalize(r) for r in refs]
        cand_len += len(words)
        ref_len += min((len(r) for r in ref_words), key=lambda n: (abs(n - len(words)), n))
        for n in range(1, max_n + 1):
            counts = _ngrams(words, n)
            best: Counter = Counter()
            for r in ref_words:
                best |= _ngrams(r, n)
            matched[n - 1] += sum(min(c, best[g]) for g, c in counts.items())
            total[n - 1] += max(len(words) - n + 1, 0)
    ratio = (cand_len + tiny) / (ref_len + small)
    penalty = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    scores, product = [], 1.0
    for n in range(max_n):
        product *= (matched[n] + tiny) / (total[n] + small)
        scores.append(penalty * product ** (1 / (n + 1)))
    return scores


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        previous = 0
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], previous + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(candidates: Sequence[str], references: Sequence[Sequence[str]], beta: float = 1.2) -> float:
    """Mean over candidates of F_beta from the best LCS precision and best LCS recall over refs."""
    scores = []
    for cand, refs in zip(candidates, references):
        words = normalize(cand)
        precision = recall = 0.0
        for ref in refs:
            ref_words = normalize(ref)
            common = _lcs(words, ref_words)
            precision = max(precision, common / len(words) if words else 0.0)
            recall = max(recall, common / len(ref_words) if ref_words else 0.0)
        if precision and recall:
            scores.append((1 + beta**2) * precision * recall / (recall + beta**2 * precision))
        else:
            scores.append(0.0)
    return sum(scores) / len(scores) if scores else 0.0


def cider_d(candidates: Sequence[str], references: Sequence[Sequence[str]], sigma: float = 6.0) -> float:
    """CIDEr-D averaged over the set (0-10 scale)."""
    cand_counts = [_all_ngrams(normalize(c)) for c in candidates]
    ref_counts = [[_all_ngrams(normalize(r)) for r in refs] for refs in references]
    frequency: Counter = Counter()
    for refs in ref_counts:
        frequency.update({g for counts in refs for g in counts})
    log_docs = math.log(float(len(ref_counts))) if ref_counts else 0.0

    def vector(counts: Counter):
        vec = [defaultdict(float) for _ in range(MAX_N)]
        norm = [0.0] * MAX_N
        length = 0
        for gram, tf in counts.items():
            n = len(gram) - 1
            vec[n][gram] = tf * (log_docs - math.log(max(1.0, frequency[gram])))
            norm[n] += vec[n][gram] ** 2
            if n == 1:  # the reference implementation measures length in bigrams
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    scores = []
    for cand, refs in zip(cand_counts, ref_counts):
        vec, norm, length = vector(cand)
        total = [0.0] * MAX_N
        for ref in refs:
            ref_vec, ref_norm, ref_length = vector(ref)
            penalty = math.exp(-((length - ref_length) ** 2) / (2 * sigma**2))
            for n in range(MAX_N):
                value = sum(min(v, ref_vec[n][g]) * ref_vec[n][g] for g, v in vec[n].items())
                if norm[n] and ref_norm[n]:
                    value /= norm[n] * ref_norm[n]
                total[n] += value * penalty
        scores.append(10.0 * sum(total) / MAX_N / len(refs))
    return sum(scores) / len(scores) if scores else 0.0


def _all_ngrams(words: Sequence[str]) -> Counter:
    counts: Counter = Counter()
    for n in range(1, MAX_N + 1):
        counts.update(_ngrams(words, n))
    return counts


def mentioned_classes(caption: str, keywords: Mapping[str, Sequence[str]]) -> set[str]:
    """Classes whose keywords occur in ``caption``, matching longer phrases first and consuming
    their words ("a car horn" is a horn, not a horn and a car)."""
    return keyword_table(keywords).mentioned(normalize(caption))


class KeywordTable:
    """A keyword table prepared for matching: (normalized phrase, class), longest phrases first;
    the ranks in that order of the phrases each word starts; every word of a phrase."""

    def __init__(self, keywords: tuple[tuple[str, tuple[str, ...]], ...]):
        self.phrases = sorted(((tuple(normalize(k)), label) for label, ks in keywords for k in ks), key=lambda p: -len(p[0]))
        self.by_first_word: dict[str, list[int]] = {}
        for rank, (phrase, _) in enumerate(self.phrases):
            self.by_first_word.setdefault(phrase[0], []).append(rank)
        self.words = frozenset(word for phrase, _ in self.phrases for word in phrase)

    def mentioned(self, words: list[str]) -> set[str]:
        """``mentioned_classes`` of a caption's normalized ``words``."""
        starts: dict[str, list[int]] = {}  # where each word occurs: a phrase can start only there
        for i, word in enumerate(words):
            starts.setdefault(word, []).append(i)
        found, used = set(), [False] * len(words)
        for rank in sorted(rank for word in starts for rank in self.by_first_word.get(word, ())):
            phrase, label = self.phrases[rank]
            if not starts.keys() >= set(phrase[1:]):
                continue
            n = len(phrase)
            for i in starts[phrase[0]]:
                if i + n <= len(words) and not any(used[i : i + n]) and tuple(words[i : i + n]) == phrase:
                    found.add(label)
                    used[i : i + n] = [True] * n
        return found


def keyword_table(keywords: Mapping[str, Sequence[str]]) -> KeywordTable:
    """The prepared table of ``keywords``, built once per table (the captioning search asks for
    every hypothesis at every step, and a caption holds a few of the table's words)."""
    return _keyword_table(tuple((label, tuple(ks)) for label, ks in keywords.items()))


@lru_cache(maxsize=8)
def _keyword_table(keywords: tuple[tuple[str, tuple[str, ...]], ...]) -> KeywordTable:
    return KeywordTable(keywords)


def event_scores(candidates: Sequence[str], labels: Sequence[Sequence[str]], keywords: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Micro precision/recall/F1 of the classes captions mention vs the clips' true classes."""
    hits = said = present = 0
    for cand, truth in zip(candidates, labels):
        found, truth = mentioned_classes(cand, keywords), set(truth)
        hits, said, present = hits + len(found & truth), said + len(found), present + len(truth)
    precision = hits / said if said else 0.0
    recall = hits / present if present else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"event_precision": precision, "event_recall": recall, "event_f1": f1}


def caption_scores(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    b = bleu(candidates, references)
    return {"bleu_1": b[0], "bleu_4": b[3], "rouge_l": rouge_l(candidates, references), "cider_d": cider_d(candidates, references)}
