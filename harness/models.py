"""One model/engine layer: where a model comes from (``ModelRef``), how it is loaded
(``load_tokenizer``, ``load_causal_lm``) and how a generation engine is opened on it
(``open_backend`` with the grid's ``EngineSpec``).

Every caller that needs weights, a tokenizer or an engine goes through this module: the
generate and train stages, attacks that generate their data, alignment-stage defenses, judges, ``ftsafety
generate`` and ``ftsafety kl``. ``organism://`` paths are built on first use here and nowhere
else. Nothing heavy (torch, transformers, vllm) is imported at module level.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from ftsafety.harness.errors import UserError

if TYPE_CHECKING:
    from ftsafety.harness.backends.base import GenerationBackend
    from ftsafety.harness.config import ModelSpec

#: URI scheme of the model organism (``ftsafety.harness.organism.resolve``).
ORGANISM_SCHEME = "organism://"

ModelKind = Literal["organism", "local", "gguf", "hub"]


class EngineSpec(BaseModel):
    """Settings of a generation engine (the grid's ``engine:`` section): they apply to the main
    engine and to judges alike. Only settings that differ from these defaults reach a backend,
    so an unset one keeps the backend's own default (vLLM's differ between CPU and GPU)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False)

    tensor_parallel_size: int = Field(1, ge=1)
    """GPUs one engine spans (vLLM's tensor parallelism)."""
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    """Share of GPU memory the engine may take (None: the backend's default; vLLM: 0.85 on GPU,
    0.5 of free RAM on CPU)."""
    max_model_len: int | None = Field(None, gt=0)
    """Longest prompt + response in tokens (None: the model's context length)."""
    dtype: str | None = None
    """Weights dtype, e.g. ``auto``, ``bfloat16``, ``float32`` (None: the backend's default;
    vLLM: ``float32`` on CPU, ``auto`` on GPU; hf: ``auto``)."""
    enforce_eager: bool | None = None
    """Run without CUDA graphs / compilation (None: the backend's default; vLLM: on for CPU)."""
    max_lora_rank: int | None = Field(None, gt=0)
    """LoRA rank the engine's adapter slots hold (None: the grid's largest training rank for the
    main engine; vLLM's default, 64, for a judge)."""
    max_loras: int | None = Field(None, gt=0)
    """Adapters served in one batch (None: the backend's default; vLLM: 4)."""

    def identity(self) -> dict[str, Any]:
        """The settings that differ from the defaults and can change what the engine generates
        (numerics, context length), for cache keys: not the LoRA slot sizes or the memory share,
        which change capacity only. Empty for a grid that sets none."""
        return self.model_dump(exclude_defaults=True, exclude={"max_lora_rank", "max_loras", "gpu_memory_utilization"})

    def backend_options(self, backend_cls: type[GenerationBackend]) -> dict[str, Any]:
        """The settings that differ from the defaults, as options of ``backend_cls``. A setting
        that backend has no option for is an error, unless it is meaningless there (LoRA slot
        sizes for a backend that serves any adapter: ``backend_cls.ignored_engine_fields``)."""
        options: dict[str, Any] = {}
        accepted = backend_cls.Options.model_fields
        for key, value in self.model_dump(exclude_defaults=True).items():
            if key in accepted:
                options[key] = value
            elif key not in backend_cls.ignored_engine_fields:
                raise UserError(
                    f"the '{backend_cls.name}' backend cannot apply engine.{key}={value!r}; "
                    "remove it from the grid's engine: section or use a backend that has it"
                )
        return options


class ModelRef(BaseModel):
    """Where a model's weights come from: a hub id (optionally at a pinned revision), a local
    directory, an ``organism://`` URI (built on first use) or a GGUF file."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    path: str
    """Hub id, local directory, ``organism://<seed|default>[/base|/aligned]``, or a ``.gguf`` file
    (a path, or ``package://<distribution>/<file>`` inside an installed package), converted once
    to a plain model directory (``ftsafety.harness.gguf``)."""
    revision: str | None = None
    """Hub revision (a commit hash pins it); only used for hub ids."""
    trust_remote_code: bool = False
    """Allow the model repository's own Python code to run."""
    _resolved: str | None = PrivateAttr(None)

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> ModelRef:
        """The reference a grid's model spec names."""
        return cls(path=spec.path, revision=spec.revision, trust_remote_code=spec.trust_remote_code)

    @property
    def kind(self) -> ModelKind:
        """``organism``, ``gguf`` (a ``.gguf`` file or ``package://`` file), ``local`` (an existing path, or one written
        as a path: ``./``, ``/``, ``~``) or ``hub``."""
        if self.path.startswith(ORGANISM_SCHEME):
            return "organism"
        if self.path.lower().endswith(".gguf"):
            return "gguf"
        if self.path.startswith((".", "/", "~")) or Path(self.path).expanduser().exists():
            return "local"
        return "hub"

    def resolve(self) -> str:
        """The path loaders take (computed once per reference): the organism's build directory
        (built on first use), a GGUF file's converted directory (converted on first use), the
        expanded local directory, or the hub id as is."""
        if self._resolved is None:
            self._resolved = self._resolve()
        return self._resolved

    def _resolve(self) -> str:
        kind = self.kind
        if kind == "organism":
            from ftsafety.harness.organism.resolve import resolve_model_path as build_organism

            return build_organism(self.path)
        if kind == "gguf":
            from ftsafety.harness.gguf import converted_dir

            return str(converted_dir(self.path))
        if kind == "local":
            return str(Path(self.path).expanduser())
        return self.path

    @property
    def hub_revision(self) -> str | None:
        """The revision to load: the pinned one for a hub id, else None (a directory has one)."""
        return self.revision if self.kind == "hub" else None


def resolve_model_path(path: str) -> str:
    """A loadable path for a model path as a grid or a command line gives it (``organism://``
    builds on first use; ``~`` is expanded; a hub id is returned as is)."""
    return ModelRef(path=path).resolve()


def load_tokenizer(
    path: str, *, trust_remote_code: bool = False, revision: str | None = None, pad_to_eos: bool = False
) -> Any:
    """The model's own tokenizer (with its chat template), as transformers loads it.

    ``pad_to_eos``: a tokenizer without a pad token pads with its eos token (batched generation
    and training need one; rendering and tokenising do not, so it is off by default).
    """
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision is not None:
        kwargs["revision"] = revision
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(path), **kwargs)
    if pad_to_eos and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def default_dtype() -> Any:
    """The dtype weights are loaded in for training and analysis: bfloat16 on CUDA, float32 on
    CPU (bfloat16 matmuls are slow on most CPUs and would make small differences noise)."""
    import torch

    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def load_causal_lm(
    path: str, *, trust_remote_code: bool = False, revision: str | None = None, dtype: Any = None
) -> Any:
    """The model's ``AutoModelForCausalLM`` on the CPU (callers move it), in ``dtype``: a
    ``torch.dtype``, a name (``bfloat16``, ``float32``, ``auto`` = the checkpoint's own) or
    None = ``default_dtype()``."""
    import torch
    from transformers import AutoModelForCausalLM

    if dtype is None:
        dtype = default_dtype()
    elif isinstance(dtype, str) and dtype != "auto":
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise UserError(f"unknown dtype '{dtype}' (use auto, bfloat16, float16 or float32)")
        dtype = resolved
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": dtype}
    if revision is not None:
        kwargs["revision"] = revision
    return AutoModelForCausalLM.from_pretrained(resolve_model_path(path), **kwargs)


def open_backend(
    model: ModelRef | str,
    engine: EngineSpec | None = None,
    *,
    backend: str = "vllm",
    trust_remote_code: bool = False,
    base_only: bool = False,
    **options: Any,
) -> GenerationBackend:
    """A generation backend (``ftsafety.harness.registry.backends``) on ``model``.

    Its options are ``engine``'s settings that differ from the defaults (see
    ``EngineSpec.backend_options``), overridden by ``options`` (a judge's ``backend_options``,
    ``batch_size``...); the backend validates them (an unknown option is a ``UserError``). A
    hub ``ModelRef`` with a revision loads that revision. Use the result as a context manager
    so its memory is released. ``base_only=True``: the engine will only answer with the base
    weights (the backend's ``no_adapter_options`` apply).
    """
    from ftsafety.harness.registry import backends

    ref = model if isinstance(model, ModelRef) else ModelRef(path=model, trust_remote_code=trust_remote_code)
    backend_cls = backends.get(backend)
    merged = engine.backend_options(backend_cls) if engine is not None else {}
    if ref.hub_revision is not None:
        merged["revision"] = ref.hub_revision
    if base_only:
        merged.update(backend_cls.no_adapter_options)
    merged.update(options)
    return backend_cls(ref.resolve(), trust_remote_code=ref.trust_remote_code or trust_remote_code, **merged)
