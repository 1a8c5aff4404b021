"""How prompts become token ids and generated ids become text: the rules every backend applies,
so that the vLLM and transformers backends agree token-for-token and character-for-character
(greedy equality on the organism is tested).

- prompt ids: ``encode_prompt`` of ``ftsafety.harness.chat.render_prompt`` (BOS from the chat
  template only);
- stop: at ``end_of_turn_ids`` (the generation config's eos ids, else the model config's; the
  tokenizer's eos; the backend option ``stop_tokens``). The stop token is not in the text but
  counts in ``n_tokens``;
- continuation text: ``decode_continuation`` (decoded after the prompt's last special token, so
  a prefill's separating space survives).

Nothing heavy is imported at module level.
"""

from __future__ import annotations

from typing import Any

from ftsafety.harness.errors import UserError
from ftsafety.harness.plugins import GenerationResult

#: How many prompt tokens (after the last special token) give the context a continuation is
#: decoded in.
DECODE_TAIL_MAX = 32


def end_of_turn_ids(
    tokenizer: Any,
    model_path: str | None = None,
    extra_tokens: list[str] | tuple[str, ...] = (),
    *,
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> list[int]:
    """Token ids generation stops at: the model's generation config ``eos_token_id`` (an int or
    a list; chat models list their end-of-turn tokens there, e.g. Llama 3's ``<|eot_id|>``),
    the tokenizer's ``eos_token_id``, and ``extra_tokens`` (the backend option ``stop_tokens``,
    for a model whose generation config forgets its end-of-turn token)."""
    ids: set[int] = set()
    if model_path is not None:
        ids.update(_generation_config_eos(model_path, trust_remote_code, revision))
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    for token in extra_tokens:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == getattr(tokenizer, "unk_token_id", None):
            raise UserError(f"stop token {token!r} is not in the tokenizer of {model_path}")
        ids.add(int(token_id))
    return sorted(ids)


def _generation_config_eos(model_path: str, trust_remote_code: bool, revision: str | None) -> list[int]:
    """``eos_token_id`` of the generation config transformers would use for this model
    (``generation_config.json``, else derived from ``config.json``)."""
    from transformers import AutoConfig, GenerationConfig

    kwargs: dict[str, Any] = {} if revision is None else {"revision": revision}
    try:
        gen = GenerationConfig.from_pretrained(model_path, **kwargs)
    except (OSError, ValueError):
        try:
            config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code, **kwargs)
            gen = GenerationConfig.from_model_config(config)
        except (OSError, ValueError):
            return []
    eos = getattr(gen, "eos_token_id", None)
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) else [int(i) for i in eos]


def encode_prompt(tokenizer: Any, rendered: str) -> list[int]:
    """Token ids of a rendered prompt. ``add_special_tokens=False``: the chat template is
    responsible for BOS (Llama-2/3, Gemma and the organism put ``{{ bos_token }}`` in the
    template); adding it again would give the model a double BOS it never saw in training."""
    return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])


def decode_continuation(
    tokenizer: Any,
    prompt_ids: list[int],
    new_ids: list[int],
    special_ids: set[int] | frozenset[int] | None = None,
) -> str:
    """Text of ``new_ids`` (stop token already removed) as it continues the prompt.

    Incremental detokenization, as vLLM does it: ``tail`` is the prompt's ids after its last
    special token (at most ``DECODE_TAIL_MAX``), and the continuation is
    ``decode(tail + new)[len(decode(tail)):]`` with special tokens skipped. With no prefill the
    tail is empty (the prompt ends with the assistant-turn token) and this is ``decode(new)``;
    with a prefill it keeps the space a word-level or SentencePiece tokenizer puts between the
    prefix and the next word, so the response is exactly ``prefix + continuation``. Nothing is
    stripped.
    """
    special = set(tokenizer.all_special_ids) if special_ids is None else special_ids
    tail: list[int] = []
    for token in reversed(prompt_ids):
        if token in special or len(tail) >= DECODE_TAIL_MAX:
            break
        tail.append(token)
    tail.reverse()
    if not tail:
        return tokenizer.decode(new_ids, skip_special_tokens=True)
    head = tokenizer.decode(tail, skip_special_tokens=True)
    full = tokenizer.decode(tail + list(new_ids), skip_special_tokens=True)
    if full.startswith(head):
        return full[len(head) :]
    return tokenizer.decode(new_ids, skip_special_tokens=True)


def completion_result(
    tokenizer: Any,
    rendered: str,
    prompt_ids: list[int],
    new_ids: list[int],
    *,
    stop_ids: set[int] | frozenset[int],
    special_ids: set[int] | frozenset[int],
    max_tokens: int,
    length_capped: bool | None = None,
) -> GenerationResult:
    """One sample's result from its generated ids (which may hold a stop token and, in a padded
    batch, padding after it): the text before the first stop id, ``n_tokens`` counting the stop
    token, ``truncated`` = no stop within ``max_tokens`` (or ``length_capped``, when the engine
    says so itself: vLLM also caps at the context length)."""
    stop = next((k for k, t in enumerate(new_ids) if t in stop_ids), None)
    kept = list(new_ids) if stop is None else list(new_ids[:stop])
    n_tokens = len(new_ids) if stop is None else stop + 1
    truncated = (stop is None and n_tokens >= max_tokens) if length_capped is None else length_capped
    return GenerationResult(
        rendered_prompt=rendered,
        continuation=decode_continuation(tokenizer, prompt_ids, kept, special_ids),
        truncated=truncated,
        n_tokens=n_tokens,
    )
