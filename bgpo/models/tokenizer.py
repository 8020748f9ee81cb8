"""A character-level tokenizer for the built-in model, built on Hugging Face ``tokenizers``.

Every printable ASCII character and the newline is one token; four special tokens come first:
``<|pad|>`` (0), ``<|eos|>`` (1), ``<|mask|>`` (2, the absorbing state of the forward process)
and ``<|unk|>`` (3). The result is a ``PreTrainedTokenizerFast``, so it saves and loads with
``save_pretrained`` / ``AutoTokenizer.from_pretrained`` like any hub tokenizer.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, EOS, MASK, UNK = "<|pad|>", "<|eos|>", "<|mask|>", "<|unk|>"
SPECIAL_TOKENS = (PAD, EOS, MASK, UNK)
CHARACTERS = "\n" + "".join(chr(c) for c in range(32, 127))


def char_tokenizer(characters: str = CHARACTERS) -> PreTrainedTokenizerFast:
    """Build the character-level tokenizer (vocabulary: 4 special tokens, then ``characters``)."""
    if len(set(characters)) != len(characters):
        raise ValueError("tokenizer characters must be distinct")
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in characters:
        vocab[ch] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        eos_token=EOS,
        mask_token=MASK,
        unk_token=UNK,
        padding_side="left",
    )
