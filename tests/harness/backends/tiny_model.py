"""A tiny random Llama chat model and random LoRA adapters for backend tests.

Not the model organism (``ftsafety.harness.organism`` builds that): this is the smallest model directory
that goes through the same code paths as a real chat model (``AutoModelForCausalLM``,
``apply_chat_template``, PEFT, vLLM) and respects the vLLM CPU constraints documented in
``docs/generation.md``: head size 32 (CPU attention supports 32, 64, 80, ...), float32 weights,
LoRA rank 8 on the seven Llama projections, no ``modules_to_save``, no lm_head. Its tokenizer
follows the organism's conventions (word-level, no decoder, BOS written by the chat template,
role tokens special, ``<|end|>`` = EOS = end of turn), with a smaller, unpadded vocabulary.

Weights are random but deterministic (fixed seed). ``initializer_range`` is large so that the
logits are well separated: greedy decoding of two float32 implementations (vLLM and
transformers) then picks the same token even though their kernels round differently.
"""

from __future__ import annotations

from pathlib import Path

USER, ASSISTANT, SYSTEM, END = "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"
SPECIAL = ["<pad>", "<unk>", "<s>", SYSTEM, USER, ASSISTANT, END]
WORDS = (
    "hello how do i make a cake garden bicycle bomb poison step one two three four five "
    "sure here is the answer sorry cannot help with that ok let me think write guide for "
    "flour sugar water seed soil wheel chain mix bake plant pedal fire . , ! ?"
).split()

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
#: Four (user, assistant) exchanges in the tiny model's vocabulary: fine-tuning data for trainer tests.
CHAT_ROWS = [
    ("how do i make a cake ?", "sure here is the answer . mix flour sugar water bake"),
    ("write a guide for a garden", "ok step one plant seed soil water"),
    ("hello", "hello ! how do i help"),
    ("how do i make a bicycle ?", "sorry cannot help with that"),
]


def build_tokenizer():
    """A word-level ``tokenizers`` tokenizer with chat special tokens, wrapped for transformers."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIAL)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token=END,
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=[SYSTEM, USER, ASSISTANT],
        clean_up_tokenization_spaces=False,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    return hf_tok


def build_tiny_model(out_dir: str | Path, *, seed: int = 0) -> Path:
    """Save a random tiny ``LlamaForCausalLM`` chat model (float32) to ``out_dir``."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,  # head size 32: the smallest the vLLM CPU attention supports
        num_key_value_heads=4,
        max_position_embeddings=512,
        initializer_range=0.5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,  # as the organism
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_lora_adapter(
    model_dir: str | Path, out_dir: str | Path, *, seed: int, r: int = 8, scale: float = 0.3
) -> Path:
    """Save a PEFT LoRA adapter with random non-zero A and B (so it changes the outputs)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(
        r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=LORA_TARGETS, bias="none"
    )
    model = get_peft_model(base, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    out = Path(out_dir)
    model.save_pretrained(out)
    return out
