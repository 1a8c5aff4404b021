"""The transformers (+ PEFT) generation backend: the fallback when vLLM is absent, and the
cross-check of the vLLM backend (greedy outputs must match on the organism).

Conventions, shared with the vLLM backend so both produce the same text:
- prompt text = ``harness.chat.render_prompt(tokenizer, messages, prefix)`` (the chat template
  with the generation prompt, then the assistant prefill). It is tokenized with
  ``add_special_tokens=False``: chat templates write their own BOS (the organism's does), so a
  tokenizer that also adds one would double it.
- stop: at any of the model's end-of-turn ids (``generation_config.eos_token_id``, a list or
  an int, plus ``tokenizer.eos_token_id``). The stop token is not in the text but counts in
  ``n_tokens`` (as vLLM counts it); ``truncated`` = ``max_tokens`` new tokens and no stop.
- continuation text = incremental detokenization, as vLLM does it:
  ``decode(tail + new)[len(decode(tail)):]`` with ``skip_special_tokens=True``, where ``tail`` is
  the prompt's ids after its last special token (at most 32). With no prefill the tail is empty
  and this is plain ``decode(new)``; with a prefill it keeps the separating space a word-level
  or SentencePiece tokenizer puts between the prefix and the next word, so the judged response
  is exactly ``prefix + continuation``. Nothing is stripped.
- greedy when ``temperature == 0`` (``n`` copies of the one greedy answer); otherwise sampling
  seeded with ``sampling.seed`` (0 when unset) per batch, reproducible for the same batching.
"""

from __future__ import annotations

import gc
import hashlib
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from harness.backends.base import GenerationBackend
from harness.chat import render_prompt
from harness.errors import UserError
from harness.plugins import GenerationRequest, GenerationResult
from harness.registry import backends
from harness.sampling import SamplingParams

_TAIL_MAX = 32


@backends.register("hf")
class HFBackend(GenerationBackend):
    """transformers ``generate`` with PEFT LoRA adapters (batched, left-padded)."""

    def __init__(
        self,
        model_path: str,
        *,
        trust_remote_code: bool = False,
        batch_size: int = 32,
        dtype: str = "auto",
        device: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model_path, trust_remote_code=trust_remote_code, **options)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not Path(model_path).exists() and "://" in model_path:
            raise UserError(f"hf backend: resolve '{model_path}' to a local directory first")
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.base_model = AutoModelForCausalLM.from_pretrained(
            model_path, trust_remote_code=trust_remote_code, dtype=dtype
        ).to(self.device)
        self.base_model.eval()
        self.model: Any = self.base_model
        self._adapters: dict[str, str] = {}  # adapter dir -> PEFT adapter name
        self.stop_ids = self._stop_ids()
        self._special_ids = set(self.tokenizer.all_special_ids)

    def _stop_ids(self) -> list[int]:
        eos = getattr(self.base_model.generation_config, "eos_token_id", None)
        ids = eos if isinstance(eos, list) else ([eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return sorted(set(ids))

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
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
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
        from harness.threads import cpu_threads_for, n_params

        with torch.no_grad(), cpu_threads_for(n_params(self.base_model)):
            out = self.model.generate(**enc, **kwargs)
        width = enc["input_ids"].shape[1]
        results: list[list[GenerationResult]] = []
        for i, text in enumerate(texts):
            prompt_ids = [
                t for t, m in zip(enc["input_ids"][i].tolist(), enc["attention_mask"][i].tolist(), strict=True) if m
            ]
            tail = self._tail(prompt_ids)
            row: list[GenerationResult] = []
            for j in range(n_ret):
                new = out[i * n_ret + j, width:].tolist()
                row.append(self._result(text, tail, new, sampling.max_tokens))
            if sampling.greedy:
                row = row * sampling.n
            results.append(row)
        return results

    def _tail(self, prompt_ids: list[int]) -> list[int]:
        tail: list[int] = []
        for t in reversed(prompt_ids):
            if t in self._special_ids or len(tail) >= _TAIL_MAX:
                break
            tail.append(t)
        return tail[::-1]

    def _result(self, text: str, tail: list[int], new: list[int], max_tokens: int) -> GenerationResult:
        stop = next((k for k, t in enumerate(new) if t in self.stop_ids), None)
        kept = new if stop is None else new[:stop]
        n_tokens = len(new) if stop is None else stop + 1
        dec = self.tokenizer.decode
        if tail:
            head = dec(tail, skip_special_tokens=True)
            full = dec(tail + kept, skip_special_tokens=True)
            cont = full[len(head) :] if full.startswith(head) else dec(kept, skip_special_tokens=True)
        else:
            cont = dec(kept, skip_special_tokens=True)
        return GenerationResult(
            rendered_prompt=text,
            continuation=cont,
            truncated=stop is None and n_tokens >= max_tokens,
            n_tokens=n_tokens,
        )

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
