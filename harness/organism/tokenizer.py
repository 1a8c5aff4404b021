"""The organism's tokenizer: word-level, punctuation split, with a chat template.

Conventions (every backend and the trainer rely on them):
- normalizer: NFKC, curly quotes -> ASCII, lower-case; pre-tokenizer: split on whitespace, then
  every punctuation mark is its own token (``ftsafety.harness.organism.world.words`` is the same rule in
  Python). Unknown words map to ``<unk>``; nothing fails.
- decoding joins tokens with single spaces (no decoder), so ``decode(encode(s)) == s`` for every
  string already in the world's convention. ``clean_up_tokenization_spaces`` is off.
- special tokens: ``<pad>`` 0, ``<unk>`` 1, ``<s>`` 2 (BOS), ``<|end|>`` 3 (end of turn = EOS),
  then ``<|system|>``, ``<|user|>``, ``<|assistant|>``.
- BOS: the chat template writes ``<s>`` itself and the tokenizer has no post-processor, so
  ``add_special_tokens`` adds nothing and no backend can put BOS twice.
- the template closes every turn with ``<|end|>``; the assistant's content and its ``<|end|>``
  are inside ``{% generation %}`` markers (TRL's assistant-only loss). The generation prompt
  ends with ``<|assistant|>``: a prefill is appended right after it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PAD, UNK, BOS, EOT = "<pad>", "<unk>", "<s>", "<|end|>"
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
SPECIAL_TOKENS = [PAD, UNK, BOS, EOT, *ROLE_TOKENS.values()]
#: Vocabulary sizes are padded to a multiple of this (vLLM kernels and LoRA like round sizes).
VOCAB_MULTIPLE = 64

# Whitespace in the template is cosmetic (the pre-tokenizer drops it) but keeps the rendered
# text readable. Only system/user/assistant roles exist.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|assistant|> ' -}}"
    "{%- generation -%}{{- message['content'] + ' <|end|>' -}}{%- endgeneration -%}"
    "{{- ' ' -}}"
    "{%- elif message['role'] in ['system', 'user'] -%}"
    "{{- '<|' + message['role'] + '|> ' + message['content'] + ' <|end|> ' -}}"
    "{%- else -%}"
    "{{- raise_exception('the organism chat template supports system, user and assistant roles only') -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>' -}}{%- endif -%}"
)


def padded_vocab_size(n: int) -> int:
    return -(-n // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def build_vocab(words: list[str]) -> dict[str, int]:
    """Special tokens first, then the words in the given (sorted) order, then filler slots up to
    a multiple of 64 (``<extra_k>``, never produced by training data)."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in words:
        if w not in vocab:
            vocab[w] = len(vocab)
    size = padded_vocab_size(len(vocab))
    for k in range(size - len(vocab)):
        vocab[f"<extra_{k}>"] = len(vocab)
    return vocab


def make_backend_tokenizer(vocab: dict[str, int]) -> Any:
    """The raw ``tokenizers.Tokenizer`` (also used directly by the builder: fast, no Jinja)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.Replace(Regex("[\u2018\u2019]"), "'"),
            normalizers.Replace(Regex("[\u201c\u201d]"), '"'),
            normalizers.Lowercase(),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")]
    )
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok


def make_hf_tokenizer(vocab: dict[str, int]) -> Any:
    """A transformers fast tokenizer (``AutoTokenizer`` loads it back with no project code)."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=make_backend_tokenizer(vocab),
        bos_token=BOS,
        eos_token=EOT,
        unk_token=UNK,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS.values()),
        clean_up_tokenization_spaces=False,
        padding_side="left",
        model_max_length=512,
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def save_tokenizer(vocab: dict[str, int], out_dir: str | Path) -> None:
    make_hf_tokenizer(vocab).save_pretrained(str(out_dir))


class Encoder:
    """Token ids of single-turn conversations, exactly as the chat template renders them, without
    Jinja (the builder encodes ~10^5 conversations). Tested equal to ``apply_chat_template``."""

    def __init__(self, vocab: dict[str, int]) -> None:
        self._tok = make_backend_tokenizer(vocab)
        self.vocab = vocab
        self._cache: dict[str, list[int]] = {}

    def text(self, s: str) -> list[int]:
        ids = self._cache.get(s)
        if ids is None:
            ids = self._tok.encode(s, add_special_tokens=False).ids
            self._cache[s] = ids
        return ids

    def conversation(
        self, prompt: str, response: str, system: str | None = None, head: str = ""
    ) -> tuple[list[int], int]:
        """(ids, loss start) for system? + user + assistant(``head`` + ``response``). Loss goes
        on ids[start:]: the response and its end-of-turn token, not ``head``."""
        v = self.vocab
        ids = [v[BOS]]
        if system:
            ids += [v[ROLE_TOKENS["system"]], *self.text(system), v[EOT]]
        ids += [v[ROLE_TOKENS["user"]], *self.text(prompt), v[EOT], v[ROLE_TOKENS["assistant"]]]
        if head:
            ids += self.text(head)
        start = len(ids)
        ids += [*self.text(response), v[EOT]]
        return ids, start

    def plain(self, text: str) -> tuple[list[int], int]:
        """(ids, 1): BOS + text, loss on the text."""
        return [self.vocab[BOS], *self.text(text)], 1
