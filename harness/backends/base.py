"""The generation-backend contract shared by vLLM and transformers."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ftsafety.harness.errors import UserError
from ftsafety.harness.plugins import GenerationRequest, GenerationResult
from ftsafety.harness.sampling import SamplingParams


class BackendOptions(BaseModel):
    """A backend's options (keyword arguments after the model path). A backend subclasses this
    with its own fields; an option it does not declare is an error."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False)


class GenerationBackend:
    """One loaded base model that completes chat prompts, optionally through LoRA adapters.

    Subclasses load their heavy libraries lazily (inside ``__init__``), never at import, and set
    ``tokenizer`` there.
    """

    name: ClassVar[str] = ""
    #: The options this backend accepts, validated in ``__init__``.
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    #: ``EngineSpec`` settings that mean nothing to this backend and are dropped when the grid
    #: sets them (a backend that serves any adapter has no LoRA slots to size); any other engine
    #: setting it has no option for is an error (``EngineSpec.backend_options``).
    ignored_engine_fields: ClassVar[frozenset[str]] = frozenset({"max_lora_rank", "max_loras"})
    #: Options for an engine that will never serve an adapter (base-model answers, refusals):
    #: a backend whose adapter slots cost speed turns them off here.
    no_adapter_options: ClassVar[dict[str, Any]] = {}

    #: The transformers tokenizer prompts are rendered, encoded and decoded with.
    tokenizer: Any = None

    def __init__(self, model_path: str, *, trust_remote_code: bool = False, **options: Any) -> None:
        self.model_path = model_path
        self.trust_remote_code = trust_remote_code
        self.options = self.parse_options(options)

    @classmethod
    def parse_options(cls, options: dict[str, Any]) -> Any:
        """``options`` validated by ``cls.Options``; a ``UserError`` names each bad option."""
        try:
            return cls.Options.model_validate(options)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                option = ".".join(str(p) for p in err["loc"]) or "options"
                if err["type"] == "extra_forbidden":
                    known = ", ".join(sorted(cls.Options.model_fields)) or "none"
                    problems.append(f"{cls.name or cls.__name__} backend: unknown option '{option}' (known: {known})")
                else:
                    problems.append(f"{cls.name or cls.__name__} backend: option '{option}': {err['msg']}")
            raise UserError(problems[0], problems=problems) from None

    def generate(
        self, requests: list[GenerationRequest], sampling: SamplingParams
    ) -> list[list[GenerationResult]]:
        """One list of ``sampling.n`` results per request, in request order."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """What a run records about this engine in its manifest (backend, model, device...)."""
        return {"backend": self.name, "model": self.model_path}

    def close(self) -> None:
        """Release the model and its memory (judges run in their own engine afterwards)."""

    def __enter__(self) -> GenerationBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
