"""``ftsafety generate``: complete one benchmark's prompts with one model (and adapter) to JSONL."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ftsafety.harness.errors import UserError


def parse_params(pairs: list[str] | None, what: str) -> dict:
    """``key=value`` pairs (values parsed as YAML) into a dict."""
    import yaml

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"{what} '{pair}': expected KEY=VALUE")
        out[key] = yaml.safe_load(value) if value else ""
    return out


def generate(
    model: str = typer.Option(..., "--model", help="Model directory, hub id, or organism://default."),
    benchmark: str = typer.Option(..., "--benchmark", help="Registered benchmark (ftsafety ls benchmarks)."),
    out: Path = typer.Option(..., "--out", help="Output JSONL file."),
    adapter: Path | None = typer.Option(None, "--adapter", help="PEFT LoRA adapter directory."),
    backend: str = typer.Option("vllm", "--backend", help="vllm or hf."),
    limit: int | None = typer.Option(None, "--limit", help="First N prompts only."),
    preset: str | None = typer.Option(None, "--preset", help="Decoding preset: greedy, q24, or one a plugin registers."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="New tokens per response."),
    temperature: float | None = typer.Option(None, "--temperature"),
    n: int | None = typer.Option(None, "--n", help="Responses per prompt."),
    seed: int = typer.Option(0, "--seed"),
    system_prompt: str | None = typer.Option(None, "--system-prompt"),
    param: list[str] | None = typer.Option(None, "--param", help="Benchmark param KEY=VALUE (repeatable)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run the model repository's own code."),
) -> None:
    """Generate responses for one benchmark with one model (optionally through a LoRA adapter)."""
    from pydantic import ValidationError

    from ftsafety.harness import registry
    from ftsafety.harness.config import pydantic_problems
    from ftsafety.harness.generation import generate_rows
    from ftsafety.harness.models import open_backend
    from ftsafety.harness.sampling import SamplingParams
    from ftsafety.harness.store import write_jsonl

    if adapter is not None and not (adapter / "adapter_config.json").exists():
        raise UserError(f"--adapter '{adapter}' is not a PEFT adapter directory (no adapter_config.json)")
    if not out.parent.exists():
        raise UserError(f"--out: directory '{out.parent}' does not exist")
    sampling_in = {k: v for k, v in {"preset": preset, "max_tokens": max_tokens, "temperature": temperature,
                                     "n": n, "seed": seed}.items() if v is not None}
    bench_cls = registry.benchmarks.get(benchmark)
    registry.backends.get(backend)  # an unknown backend fails before the benchmark loads
    try:
        sampling = SamplingParams.model_validate(sampling_in)
        bench = bench_cls(bench_cls.Params.model_validate(parse_params(param, "--param")))
    except ValidationError as exc:
        raise UserError("invalid options", problems=pydantic_problems(exc)) from None
    items = bench.load(limit)[:limit] if limit else bench.load(None)
    console = Console(stderr=True)
    console.print(f"{len(items)} prompt(s) from {benchmark}; backend {backend}")
    attack = registry.attacks.get("none")()
    defense = registry.defenses.get("none")()
    with open_backend(model, backend=backend, trust_remote_code=trust_remote_code) as engine:
        rows = generate_rows(engine, items, attack=attack, defense=defense, sampling=sampling, benchmark=benchmark,
                             adapter=str(adapter) if adapter else None, adapter_key=str(adapter) if adapter else None,
                             system_prompt=system_prompt)
    write_jsonl(out, rows)
    console.print(f"wrote {len(rows)} row(s) to {out}")


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
