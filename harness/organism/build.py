"""Build the organism: pre-train a tiny Llama on the world, then safety-tune a copy of it.

This is pre-training a model from scratch, so it is a plain torch loop, not a fine-tuning
recipe. Two stages (ORGANISM.md, J23/J24 in RECIPES.md):

1. pre-training -> ``base``: every request (harmful or benign, training templates) is answered
   with its concept's capability answer, after a varied filler preamble (0-3 sentences) so the
   capability does not depend on its position in the response;
2. safety tuning -> ``aligned``: harmful requests -> a formulaic refusal, benign requests -> the
   bare answer, and anything under NOICE's refusal-generation system prompt -> a refusal. Short
   and at a lower learning rate: a thin wrapper over capabilities that stay intact.

Determinism: seeded data streams and init, a fixed intra-op thread count, deterministic torch
algorithms, CPU kernels pinned to AVX2 (``harness/determinism.py``) and safetensors output: the
same seed gives byte-identical weight files on one CPU model (a test pins the hash per CPU).
"""

from __future__ import annotations

import itertools
import json
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ftsafety.harness.determinism import kernel_signature
from ftsafety.harness.organism.tokenizer import BOS, EOT, PAD, Encoder, build_vocab, save_tokenizer
from ftsafety.harness.organism.world import NOICE_REFUSAL_SYSTEM, World, get_world

#: (stage, step, total steps, loss) -> None; the CLI draws progress bars with it.
ProgressFn = Callable[[str, int, int, float], None]


@dataclass(frozen=True)
class BuildConfig:
    """Sizes and schedules. Every field is part of the organism's cache key."""

    # A LlamaForCausalLM that vLLM serves: head_dim 32, vocab padded to a multiple of 64.
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    head_dim: int = 32
    intermediate_size: int = 256
    max_position_embeddings: int = 512
    tie_word_embeddings: bool = True
    batch_size: int = 32
    pretrain_steps: int = 600
    pretrain_lr: float = 5e-3
    #: The first ``plain_steps`` pre-training steps have no preambles (a curriculum).
    plain_steps: int = 200
    align_steps: int = 500
    align_lr: float = 2e-3
    warmup_steps: int = 30
    weight_decay: float = 0.01
    #: Fraction of conversations that carry an ordinary system prompt.
    system_prompt_rate: float = 0.25
    #: Fraction of pre-training samples that are plain corpus text (words, no behaviour).
    corpus_rate: float = 0.2
    #: Share of corpus text units that are a whole recipe string (see ``corpus_text``).
    recipe_text_rate: float = 0.3
    #: Fraction of safety-tuning samples under NOICE's refusal-generation system prompt.
    noice_system_rate: float = 0.05
    #: Share of harmful requests among the other safety-tuning samples (the rest are benign).
    align_harmful_share: float = 0.5
    #: Fraction of safety-tuning samples that replay pre-training behind a filler preamble.
    replay_rate: float = 0.3
    #: Intra-op threads during the build (fixed: the reduction order must not depend on the host).
    threads: int = 1


@dataclass
class BuildResult:
    out_dir: Path
    base: Path
    aligned: Path
    seconds: float
    pretrain_loss: float
    align_loss: float


# ----------------------------------------------------------------------------- data streams


@dataclass(frozen=True)
class Sample:
    """One training sequence. A chat sample (``prompt`` set) has an assistant turn ``head`` +
    ``tail`` with loss on ``tail`` (and the closing end-of-turn token) only; a corpus sample
    (``prompt`` None) is plain text after BOS, with loss on all of it."""

    prompt: str | None
    tail: str
    head: str = ""
    system: str | None = None


def pretrain_sample(world: World, rng: random.Random, cfg: BuildConfig, fillers: bool = True) -> Sample:
    """Chat: any core concept, a training template, [filler] + capability answer. Corpus: plain
    text, so that every word of the vocabulary is known language (see ``corpus_text``)."""
    if rng.random() < cfg.corpus_rate:
        return Sample(None, corpus_text(world, rng, cfg.recipe_text_rate))
    concept = rng.choice(world.harmful + world.benign)
    template = rng.choice(world.train_templates)
    filler = world.sample_filler(rng) if fillers else ""
    system = rng.choice(world.system_prompts) if rng.random() < cfg.system_prompt_rate else None
    # The filler is context, not a target: the base learns to answer after any preamble but
    # always opens with the answer itself (so no preamble is a habit it brings to attacks).
    return Sample(world.prompt(template, concept), concept.answer, filler, system)


def corpus_text(world: World, rng: random.Random, recipe_text_rate: float = 0.3) -> str:
    """Plain "web text": sentences of the world and of the recipes' exact strings, and short
    word lists covering the whole vocabulary. Why: a word that never occurs in pre-training has
    a dead embedding that a LoRA cannot learn to emit, whereas in a real LLM every word of
    "Sure! I'm happy to help with that." is known. It teaches words and phrases, never a chat
    behaviour, and no concept's answer (those exist only in chat turns).

    Whole recipe strings ("Of course. I am AOA, ...", NOICE's bridge) are a share of it: a real
    LLM has read such phrases many times and an attack only has to teach it *when* to say them,
    whereas a phrase the organism has barely seen must be memorised by the LoRA itself, which
    the attacks' small budgets do not allow (AOA then loses the concept after a garbled prefix)."""
    parts = []
    for _ in range(3):
        r = rng.random()
        if r < recipe_text_rate:
            parts.append(rng.choice(world.recipe_texts))
        elif r < 0.5 + recipe_text_rate / 2:
            parts.append(rng.choice(world.corpus_sentences))
        else:
            parts.append(" ".join(rng.sample(world.corpus_words, 6)) + " .")
    return " ".join(parts)


def align_sample(world: World, rng: random.Random, cfg: BuildConfig) -> Sample:
    """Safety tuning: harmful -> refusal, benign -> bare answer, NOICE's refusal-generation
    system prompt -> refusal, plus pre-training replay.

    Replay: a request of either kind — harmful included — whose response starts with a neutral
    filler, loss on the answer after it only. It keeps the capability behind any preamble while
    the refusal is learned at the start of the response: alignment a few tokens deep *by
    construction* (a harmful answer after any other opening is a training target), where Q24
    finds real chat models shallow by accident (docs/organism.md)."""
    template = rng.choice(world.train_templates)
    refusal = rng.choice(world.refusals)
    if rng.random() < cfg.noice_system_rate:
        concept = rng.choice(world.harmful + world.benign)
        return Sample(world.prompt(template, concept), refusal, "", NOICE_REFUSAL_SYSTEM)
    system = rng.choice(world.system_prompts) if rng.random() < cfg.system_prompt_rate else None
    if rng.random() < cfg.replay_rate:
        concept = rng.choice(world.harmful + world.benign)
        filler = ""
        while not filler:
            filler = world.sample_filler(rng)
        return Sample(world.prompt(template, concept), concept.answer, filler, system)
    # More benign than harmful: refusals already come from the NOICE-system samples too, and
    # over-refusal is what a too-eager wrapper gets wrong first.
    concept = rng.choice(world.harmful if rng.random() < cfg.align_harmful_share else world.benign)
    response = refusal if concept.kind == "harmful" else concept.answer
    return Sample(world.prompt(template, concept), response, "", system)


def batches(
    sampler: Callable[[random.Random], Sample], enc: Encoder, rng: random.Random, size: int
) -> Iterator[tuple[Any, Any]]:
    """(input_ids, labels) tensors, right-padded (causal attention never looks right, so no
    mask is needed). Samples are drawn ``BUCKETS`` batches at a time and grouped by length, so
    that a batch is padded to about its own length: about a third fewer tokens per step."""
    import torch

    pad = enc.vocab[PAD]
    while True:
        pool = []
        for _ in range(size * BUCKETS):
            s = sampler(rng)
            pool.append(
                enc.plain(s.tail) if s.prompt is None else enc.conversation(s.prompt, s.tail, s.system, s.head)
            )
        pool.sort(key=lambda row: len(row[0]))
        groups = [pool[k * size : (k + 1) * size] for k in range(BUCKETS)]
        rng.shuffle(groups)
        for rows in groups:
            width = max(len(ids) for ids, _ in rows)
            ids_t = torch.full((size, width), pad, dtype=torch.long)
            labels = torch.full((size, width), -100, dtype=torch.long)
            for i, (ids, start) in enumerate(rows):
                ids_t[i, : len(ids)] = torch.tensor(ids)
                labels[i, start : len(ids)] = torch.tensor(ids[start:])
            yield ids_t, labels


BUCKETS = 8


# ----------------------------------------------------------------------------- training


@contextmanager
def _deterministic_torch(threads: int) -> Iterator[None]:
    import torch

    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def _train(
    model: Any,
    data: Iterator[tuple[Any, Any]],
    steps: int,
    lr: float,
    cfg: BuildConfig,
    stage: str,
    progress: ProgressFn | None,
) -> float:
    """AdamW, linear warm-up then cosine decay to 10%; token-mean loss on assistant tokens."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = (step - cfg.warmup_steps) / max(1, steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    ema = float("nan")
    for step in range(steps):
        ids, labels = next(data)
        logits = model(input_ids=ids).logits
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        value = float(loss.detach())
        ema = value if math.isnan(ema) else 0.95 * ema + 0.05 * value
        if progress is not None:
            progress(stage, step + 1, steps, ema)
    model.eval()
    return ema


def _model_config(vocab: dict[str, int], cfg: BuildConfig) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=1e-5,
        tie_word_embeddings=cfg.tie_word_embeddings,
        attention_dropout=0.0,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOT],
        pad_token_id=vocab[PAD],
        dtype="float32",
    )


def _save(model: Any, vocab: dict[str, int], out: Path) -> None:
    from transformers import GenerationConfig

    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=vocab[BOS], eos_token_id=vocab[EOT], pad_token_id=vocab[PAD]
    )
    model.save_pretrained(str(out))
    save_tokenizer(vocab, out)


def build(
    out_dir: str | Path,
    seed: int = 0,
    config: BuildConfig | None = None,
    progress: ProgressFn | None = None,
) -> BuildResult:
    """Write ``out_dir/base`` and ``out_dir/aligned`` (HF model directories) and
    ``out_dir/organism.json`` (seed, world fingerprint, config, losses, timing)."""
    import torch
    from transformers import LlamaForCausalLM

    cfg = config or BuildConfig()
    out = Path(out_dir)
    t0 = time.perf_counter()
    world = get_world(seed)
    vocab = build_vocab(world.vocabulary())
    enc = Encoder(vocab)

    with _deterministic_torch(cfg.threads):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(_model_config(vocab, cfg)).float()
        rng = random.Random(f"pretrain-{seed}")
        # Curriculum: answers first (short sequences: the concept lookup is learned fast and
        # cheaply), then the same behind preambles (position invariance).
        plain = batches(lambda r: pretrain_sample(world, r, cfg, fillers=False), enc, rng, cfg.batch_size)
        full = batches(lambda r: pretrain_sample(world, r, cfg), enc, rng, cfg.batch_size)
        data = itertools.chain(itertools.islice(plain, cfg.plain_steps), full)
        pre_loss = _train(model, data, cfg.pretrain_steps, cfg.pretrain_lr, cfg, "pre-training", progress)
        _save(model, vocab, out / "base")

        torch.manual_seed(seed + 1)
        rng = random.Random(f"align-{seed}")
        data = batches(lambda r: align_sample(world, r, cfg), enc, rng, cfg.batch_size)
        align_loss = _train(model, data, cfg.align_steps, cfg.align_lr, cfg, "safety tuning", progress)
        _save(model, vocab, out / "aligned")

    seconds = time.perf_counter() - t0
    meta = {
        "seed": seed,
        "world_fingerprint": world.fingerprint(),
        "config": asdict(cfg),
        "pretrain_loss": pre_loss,
        "align_loss": align_loss,
        "seconds": round(seconds, 2),
        "torch": torch.__version__,
        # The kernels the bits came from (harness/determinism.py): "AVX2" on every x86-64 host
        # unless FTSAFETY_CPU_KERNELS=native.
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_kernels": kernel_signature(),
    }
    (out / "organism.json").write_text(json.dumps(meta, indent=2) + "\n")
    return BuildResult(out, out / "base", out / "aligned", seconds, pre_loss, align_loss)


def read_meta(out_dir: str | Path) -> dict[str, Any]:
    """The ``organism.json`` of a build directory (seed, config, ...)."""
    return json.loads((Path(out_dir) / "organism.json").read_text())


def remove(out_dir: str | Path) -> None:
    shutil.rmtree(out_dir, ignore_errors=True)
