"""Context objects handed to plugins by the stage runner, and the training stage entry."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.store import read_json

if TYPE_CHECKING:
    from harness.config import GridConfig, ModelSpec
    from harness.planner import Cell
    from harness.store import ArtifactStore

@dataclass
class AttackContext:
    """What an attack recipe may use to build its fine-tuning data."""

    cfg: GridConfig
    model: ModelSpec
    #: Local directory (or hub id) of the model the attack fine-tunes.
    model_path: str
    seed: int
    #: The data stage's artifact directory (for intermediate files such as NOICE's refusals).
    workdir: Path
    #: The shared artifact store, for intermediate results cached on their own key.
    store: ArtifactStore | None = None
    #: Fingerprint of the model (part of keys of intermediate artifacts).
    model_key: dict[str, Any] = field(default_factory=dict)
    _tokenizer: Any = None

    def organism_world(self) -> Any:
        """The organism's world when the model is an organism, else None."""
        from harness.organism.resolve import is_organism, parse

        seed = parse(self.model.path)[0] if is_organism(self.model.path) else None
        if seed is None:
            # A local organism build: DIR/aligned or DIR/base beside DIR/organism.json.
            meta = Path(self.model_path).expanduser().parent / "organism.json"
            if not meta.is_file():
                return None
            seed = int(read_json(meta)["seed"])
        from harness.organism.world import get_world

        return get_world(seed)

    def tokenizer(self) -> Any:
        """The model's tokenizer (its chat template decides how system text is placed)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=self.model.trust_remote_code)
        return self._tokenizer

    def cached(self, stage: str, inputs: dict[str, Any], filename: str, compute: Any) -> Any:
        """``compute()``'s JSON result, cached in the store under a key of ``inputs`` + the model
        (NOICE's generated refusals are reused by every cell and run that needs the same ones)."""
        import json

        from harness.store import content_key

        if self.store is None:
            return compute()
        full = {"model": self.model_key, **inputs}
        key = content_key(full)
        if not self.store.is_complete(stage, key):
            with self.store.writing(stage, key, full) as out:
                (out / filename).write_text(json.dumps(compute(), ensure_ascii=False))
        return read_json(self.store.path(stage, key) / filename)


def train_cell(cfg: GridConfig, cell: Cell, data_file: Path, out: Path, *, model_path: str) -> dict[str, Any]:
    """Fine-tune ``model_path`` on ``data_file`` into ``out/adapter`` (TRL SFTTrainer + PEFT).

    An empty data file (a ``moderation`` screen dropped every example) trains nothing: the
    stage writes the unchanged model in the shape training would have (an adapter that is the
    identity — PEFT initialises LoRA's B to zero — or a copy of the weights), so that the cell
    is evaluated like every other and its result is "the provider refused the upload"."""
    from harness.store import read_jsonl

    if not read_jsonl(data_file):
        return untrained(cfg, cell, out, model_path=model_path)
    from harness.training import train_sft

    return train_sft(cfg, cell, data_file, out, model_path=model_path)


def untrained(cfg: GridConfig, cell: Cell, out: Path, *, model_path: str) -> dict[str, Any]:
    """The train stage's outputs for zero examples: the model as it was (see ``train_cell``)."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.store import atomic_write_json

    t = cfg.training_for(cell.attack)
    trust = cell.model.trust_remote_code
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust)
    if t.method == "full":
        shutil.copytree(model_path, out / "model")
    else:
        from peft import LoraConfig, get_peft_model

        model = AutoModelForCausalLM.from_pretrained(model_path, trust_remote_code=trust)
        lora = LoraConfig(r=t.lora.r, lora_alpha=t.lora.alpha, lora_dropout=t.lora.dropout,
                          target_modules=list(t.lora.target_modules), task_type="CAUSAL_LM", bias="none")
        get_peft_model(model, lora).save_pretrained(str(out / "adapter"))
        tokenizer.save_pretrained(str(out / "adapter"))
    (out / "train_log.jsonl").write_text("")
    summary = {"method": t.method, "examples": 0, "steps": 0, "seconds": 0.0, "train_loss": None,
               "chat_template": tokenizer.chat_template, "trainer": "none (no examples left after screening)"}
    atomic_write_json(out / "train_summary.json", summary)
    return summary


def finish_aligned_model(source: str, out: Path, *, defense: str) -> None:
    """Check an alignment-stage defense wrote ``out/model``, and keep an organism's identity
    with it (``organism.json`` beside the model directory, as in an organism build), so that a
    local organism stays recognisable — its world, its oracle — after alignment."""
    import shutil

    if not (out / "model" / "config.json").is_file():
        raise RuntimeError(f"defense '{defense}' did not write a model directory to {out / 'model'}")
    meta = Path(source).expanduser().parent / "organism.json"
    if meta.is_file():
        shutil.copyfile(meta, out / "organism.json")
