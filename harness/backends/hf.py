"""The transformers (+ PEFT) generation backend: the fallback when vLLM is absent, and the
cross-check of the vLLM backend (greedy outputs must match on the organism).

Prompts, stop ids and continuation text follow ``ftsafety.harness.backends.common``, as the vLLM
backend does, so both produce the same text. Greedy when ``temperature == 0`` (``n`` copies of
the one greedy answer); otherwise sampling seeded with ``sampling.seed`` (0 when unset) per
batch, reproducible for the same batching.
"""

from __future__ import annotations

import gc
import hashlib
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from pydantic import Field

from ftsafety.harness.backends.base import BackendOptions, GenerationBackend
from ftsafety.harness.backends.common import completion_result, end_of_turn_ids
from ftsafety.harness.chat import render_prompt
from ftsafety.harness.errors import UserError
from ftsafety.harness.plugins import GenerationRequest, GenerationResult
from ftsafety.harness.registry import backends
from ftsafety.harness.sampling import SamplingParams


class HFOptions(BackendOptions):
    """Options of the ``hf`` backend."""

    batch_size: int = Field(32, gt=0)
    """Prompts generated together (left-padded)."""
    dtype: str = "auto"
    """Weights dtype: ``auto`` (the checkpoint's own), ``bfloat16``, ``float32``..."""
    device: str | None = None
    """Torch device (default: ``cuda`` when available, else ``cpu``)."""
    stop_tokens: list[str] = Field(default_factory=list)
    """Extra end-of-turn token strings to stop at, when the generation config lacks one."""
    revision: str | None = None
    """Hub revision of the model (a hub id's pinned commit)."""


@backends.register("hf")
class HFBackend(GenerationBackend):
    """transformers ``generate`` with PEFT LoRA adapters (batched, left-padded)."""

    Options = HFOptions
    #: transformers + PEFT serve any adapter rank and count, and always run eagerly.
    ignored_engine_fields = frozenset({"max_lora_rank", "max_loras", "enforce_eager"})

    def __init__(self, model_path: str, *, trust_remote_code: bool = False, **options: Any) -> None:
        super().__init__(model_path, trust_remote_code=trust_remote_code, **options)
        import torch

        from ftsafety.harness.models import load_causal_lm, load_tokenizer

        o: HFOptions = self.options
        if not Path(model_path).exists() and "://" in model_path:
            raise UserError(f"hf backend: resolve '{model_path}' to a local directory first")
        self.batch_size = o.batch_size
        self.device = o.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code, revision=o.revision,
                                        pad_to_eos=True)
        self.tokenizer.padding_side = "left"
        self.base_model = load_causal_lm(
            model_path, trust_remote_code=trust_remote_code, revision=o.revision, dtype=o.dtype
        ).to(self.device)
        self.base_model.eval()
        self.model: Any = self.base_model
        self._adapters: dict[str, str] = {}  # adapter dir -> PEFT adapter name
        self.stop_ids = end_of_turn_ids(self.tokenizer, model_path, o.stop_tokens,
                                        trust_remote_code=trust_remote_code, revision=o.revision)
        self._stop_set = frozenset(self.stop_ids)
        self._special_ids = frozenset(self.tokenizer.all_special_ids)

    def info(self) -> dict[str, Any]:
        """What a run records about this engine in its manifest."""
        import transformers

        return {
            "backend": "hf",
            "transformers_version": transformers.__version__,
            "model": self.model_path,
            "device": self.device,
            "dtype": str(self.base_model.dtype).removeprefix("torch.") if self.base_model is not None else None,
            "batch_size": self.batch_size,
            "adapters": len(self._adapters),
        }

    # ------------------------------------------------------------------ adapters

    def _use_adapter(self, adapter: str | None) -> Any:
        """Activate ``adapter`` (loaded once, by directory) and return the context to generate
        in: the base weights run inside ``disable_adapter()`` once any adapter is loaded."""
        from peft import PeftModel

        if adapter is None:
            return self.model.disable_adapter() if isinstance(self.model, PeftModel) else nullcontext()
        key = str(Path(adapter).resolve())
        name = self._adapters.get(key)
        if name is None:
            if not (Path(key) / "adapter_config.json").exists():
                raise UserError(f"hf backend: no PEFT adapter at '{adapter}' (adapter_config.json missing)")
            name = "a" + hashlib.sha256(key.encode()).hexdigest()[:12]
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(key, adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.base_model, key, adapter_name=name)
            self.model.eval()
            self._adapters[key] = name
        self.model.set_adapter(name)
        return nullcontext()

    # ------------------------------------------------------------------ generation

    def generate(
        self, requests: list[GenerationRequest], sampling: SamplingParams
    ) -> list[list[GenerationResult]]:
        results: list[list[GenerationResult] | None] = [None] * len(requests)
        groups: dict[str | None, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(req.adapter, []).append(i)
        for adapter, idxs in groups.items():
            with self._use_adapter(adapter):
                for b in range(0, len(idxs), self.batch_size):
                    chunk = idxs[b : b + self.batch_size]
                    outs = self._generate_batch([requests[i] for i in chunk], sampling, b)
                    for i, out in zip(chunk, outs, strict=True):
                        results[i] = out
        return [r or [] for r in results]

    def _generate_batch(
        self, reqs: list[GenerationRequest], sampling: SamplingParams, batch_index: int
    ) -> list[list[GenerationResult]]:
        import torch

        texts = [render_prompt(self.tokenizer, r.messages, r.prefix) for r in reqs]
        # Batched ``encode_prompt``: the same ids per prompt, left-padded.
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        ids = [[t for t, m in zip(row, mask, strict=True) if m]
               for row, mask in zip(enc["input_ids"].tolist(), enc["attention_mask"].tolist(), strict=True)]
        enc = {k: v.to(self.device) for k, v in enc.items()}
        n_ret = 1 if sampling.greedy else sampling.n
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_tokens,
            "eos_token_id": self.stop_ids,
            "pad_token_id": self.tokenizer.pad_token_id,
            "num_return_sequences": n_ret,
        }
        if sampling.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            seed = sampling.seed if sampling.seed is not None else 0
            torch.manual_seed(seed * 1_000_003 + batch_index)
            kwargs.update(
                do_sample=True,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k if sampling.top_k > 0 else 0,
            )
        from ftsafety.harness.threads import cpu_threads_for, n_params

        with torch.no_grad(), cpu_threads_for(n_params(self.base_model)):
            out = self.model.generate(**enc, **kwargs)
        width = enc["input_ids"].shape[1]
        results: list[list[GenerationResult]] = []
        for i, text in enumerate(texts):
            row = [
                completion_result(self.tokenizer, text, ids[i], out[i * n_ret + j, width:].tolist(),
                                  stop_ids=self._stop_set, special_ids=self._special_ids,
                                  max_tokens=sampling.max_tokens)
                for j in range(n_ret)
            ]
            if sampling.greedy:
                row = row * sampling.n
            results.append(row)
        return results

    def close(self) -> None:
        self.model = None
        self.base_model = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass
