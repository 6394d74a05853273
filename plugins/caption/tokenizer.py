"""The captioning model's tokenizer: the word vocabulary of plugins/shared/vocabulary.py, which the
plugins that read prompts share; its names are re-exported here, where the captioning code and
its users import them from."""

from edgeaudio.plugins.shared.vocabulary import BOS, EOS, PAD, SPECIALS, UNK, Vocabulary, normalize

__all__ = ["BOS", "EOS", "PAD", "SPECIALS", "UNK", "Vocabulary", "normalize"]
