"""Public prompt sets, loaded from the Hugging Face hub or from a local copy (never vendored).

RECIPES.md ("Evaluations"): AdvBench, HarmBench (standard behaviours), StrongREJECT, HEx-PHI
(gated), JailbreakBench JBB-Behaviors (harmful + benign), and XSTest's safe prompts for
over-refusal. Every set has one registry entry with a pinned revision; ``params`` can override
any field, and ``path`` loads a local JSON/JSONL/CSV/Parquet file instead (through
``datasets.load_dataset("json"|"csv"|"parquet", data_files=...)``, the same code path as the
hub), which is how machines without hub access — and the tests — use them.

Prompt ids are ``<benchmark>:<id>`` where ``<id>`` is the set's own id column if configured,
else the row's index in the split *before* filtering, so ids are stable under category filters
and limits. Columns other than prompt/category are kept in ``EvalPrompt.meta`` (AdvBench's and
JBB's ``target``, useful to prefilling attacks).

``datasets`` is imported only inside methods: registering these must not import torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ftsafety.harness.errors import UserError
from ftsafety.harness.paths import NOT_AN_INPUT
from ftsafety.harness.plugins import Benchmark, EvalPrompt
from ftsafety.harness.registry import benchmarks
from ftsafety.harness.store import file_digest
from ftsafety.harness.tables import ExistingPath, hub_error, load_table, read_local_file

log = logging.getLogger(__name__)

# Revisions: every default must be a real commit hash (``huggingface_hub.HfApi().dataset_info(
# id).sha``). XSTest, StrongREJECT and JBB-Behaviors are pinned to hashes that public code pins
# (not verified against the hub from this machine: no hub access here); AdvBench, HarmBench and
# HEx-PHI still say "main" — placeholders to replace on a machine with hub access. An unpinned
# revision makes ``fingerprint()`` load the dataset to read its content fingerprint, so results
# stay keyed to the data actually used.
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# Params that do not change which prompts are produced (excluded from the fingerprint digest).
_NOT_CONTENT = frozenset({"path", "cache_dir", "dataset_id", "revision", "system_prompt"})


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


class HubParams(BaseModel):
    """Where a prompt set comes from and which of its rows to use."""

    model_config = ConfigDict(extra="forbid")

    path: ExistingPath = None
    """Local JSON/JSONL/CSV/Parquet file to load instead of the hub (same columns)."""
    dataset_id: str = ""
    """Hugging Face dataset id."""
    config: str | None = None
    """Dataset configuration (subset) name."""
    revision: str = "main"
    """Hub revision; pin a commit hash."""
    split: str = "train"
    """Split to load (a local file always has one split)."""
    prompt_column: str = "prompt"
    """Column holding the request text."""
    category_column: str | None = None
    """Column holding the harm category, if any."""
    id_column: str | None = None
    """Column holding a stable item id; default: the row index in the split."""
    categories: list[str] | None = None
    """Keep only these categories."""
    where: dict[str, list[str]] | None = None
    """Keep only rows whose column value (as text) is in the list, e.g. {label: [safe]}."""
    limit: int | None = Field(None, gt=0)
    """Use only the first N prompts (after filtering)."""
    cache_dir: Annotated[str | None, NOT_AN_INPUT] = None
    """``datasets`` cache directory (default: the ``datasets`` default)."""
    system_prompt: str | None = None
    """System prompt for this benchmark's prompts (overrides the model's)."""


class HubBenchmark(Benchmark):
    """A prompt set from the hub or a local file (shared loader; subclasses set defaults)."""

    Params: ClassVar[type[BaseModel]] = HubParams
    #: Gated sets explain how to get access when loading fails.
    access_help: ClassVar[str] = ""

    def __init__(self, params: BaseModel | dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self._loaded: tuple[list[dict[str, Any]], str] | None = None

    # ------------------------------------------------------------------ loading

    def system_prompt(self) -> str | None:
        return self.params.system_prompt  # type: ignore[attr-defined]

    def _source(self) -> str:
        p = self.params
        if p.path:  # type: ignore[attr-defined]
            return p.path  # type: ignore[attr-defined]
        config = f" ({p.config})" if p.config else ""  # type: ignore[attr-defined]
        return f"{p.dataset_id}{config}@{p.revision}"  # type: ignore[attr-defined]

    def _local_path(self) -> Path:
        path = Path(self.params.path).expanduser()  # type: ignore[attr-defined]
        if not path.exists():
            raise UserError(f"{self.name}: local file not found: {path}")
        return path

    def _read_file(self, path: Path, **csv_options: Any) -> Any:
        return read_local_file(self.name, path, cache_dir=self.params.cache_dir, **csv_options)  # type: ignore[attr-defined]

    def _load_local(self) -> tuple[list[dict[str, Any]], str]:
        return load_table(self.name, path=str(self._local_path()), cache_dir=self.params.cache_dir)  # type: ignore[attr-defined]

    def _hub_error(self, exc: Exception) -> UserError:
        return hub_error(self.name, self.params.dataset_id, self._source(), exc, self.access_help)  # type: ignore[attr-defined]

    def _load_hub(self) -> tuple[list[dict[str, Any]], str]:
        p = self.params
        return load_table(
            self.name, dataset_id=p.dataset_id, config=p.config, revision=p.revision,  # type: ignore[attr-defined]
            split=p.split, cache_dir=p.cache_dir, access_help=self.access_help,  # type: ignore[attr-defined]
        )

    def rows(self) -> tuple[list[dict[str, Any]], str]:
        """All rows of the split and a fingerprint of their content (loaded once)."""
        if self._loaded is None:
            self._loaded = self._load_local() if self.params.path else self._load_hub()  # type: ignore[attr-defined]
        return self._loaded

    # ------------------------------------------------------------------ the Benchmark API

    def category_of(self, row: dict[str, Any]) -> str | None:
        column = self.params.category_column  # type: ignore[attr-defined]
        if not column:
            return None
        value = row.get(column)
        return None if value is None else str(value)

    def load(self, limit: int | None = None) -> list[EvalPrompt]:
        """The benchmark's prompts, filtered by ``categories``/``where``, at most ``limit``
        (the smaller of the argument and ``params.limit``)."""
        p = self.params
        rows, _ = self.rows()
        columns = set(rows[0]) if rows else set()
        needed = [p.prompt_column]  # type: ignore[attr-defined]
        needed += [c for c in (p.category_column, p.id_column) if c]  # type: ignore[attr-defined]
        needed += list(p.where or {})  # type: ignore[attr-defined]
        missing = [c for c in needed if rows and c not in columns]
        if missing:
            raise UserError(
                f"{self.name}: column(s) {', '.join(missing)} not in {self._source()} "
                f"(columns: {', '.join(sorted(columns))}); set params.prompt_column/category_column"
            )
        if p.categories and not p.category_column and not self._has_builtin_categories():  # type: ignore[attr-defined]
            raise UserError(f"{self.name}: params.categories needs params.category_column")
        caps = [x for x in (limit, p.limit) if x is not None]  # type: ignore[attr-defined]
        cap = min(caps) if caps else None
        wanted = set(p.categories) if p.categories else None  # type: ignore[attr-defined]
        where = {k: {str(v) for v in vs} for k, vs in (p.where or {}).items()}  # type: ignore[attr-defined]
        skip = {p.prompt_column, p.category_column}  # type: ignore[attr-defined]
        prompts: list[EvalPrompt] = []
        empty = 0
        for index, row in enumerate(rows):
            if cap is not None and len(prompts) >= cap:
                break
            if any(str(row.get(k)) not in vs for k, vs in where.items()):
                continue
            category = self.category_of(row)
            if wanted is not None and not self._category_selected(category, row, wanted):
                continue
            text = row.get(p.prompt_column)  # type: ignore[attr-defined]
            if not isinstance(text, str) or not text.strip():
                empty += 1
                continue
            item_id = row.get(p.id_column) if p.id_column else index  # type: ignore[attr-defined]
            meta = {k: v for k, v in row.items() if k not in skip and _scalar(v)}
            prompts.append(
                EvalPrompt(id=f"{self.name}:{item_id}", prompt=text, kind=self.kind, category=category, meta=meta)
            )
        if empty:
            log.warning("%s: skipped %d row(s) with an empty prompt", self.name, empty)
        return prompts

    def _has_builtin_categories(self) -> bool:
        return False

    def _category_selected(self, category: str | None, row: dict[str, Any], wanted: set[str]) -> bool:
        return category in wanted

    def fingerprint(self) -> str:
        """Source (dataset id + revision, or file sha256), content fingerprint when the revision
        is not a commit hash, and a digest of the row-selection params."""
        p = self.params
        selection = {k: v for k, v in p.model_dump().items() if k not in _NOT_CONTENT}
        digest = hashlib.sha256(json.dumps(selection, sort_keys=True).encode()).hexdigest()[:16]
        if p.path:  # type: ignore[attr-defined]
            content = self._loaded[1] if self._loaded else self._file_fingerprint()
            return f"{self.name}|{content}|sel:{digest}"
        source = f"hf:{p.dataset_id}/{p.config or ''}@{p.revision}/{p.split}"  # type: ignore[attr-defined]
        if _COMMIT.match(p.revision):  # type: ignore[attr-defined]
            return f"{self.name}|{source}|sel:{digest}"
        _, content = self.rows()
        return f"{self.name}|{source}|{content}|sel:{digest}"

    def _file_fingerprint(self) -> str:
        path = self._local_path()
        if path.is_dir():
            return self.rows()[1]
        return f"file:sha256:{file_digest(path)}"


# ----------------------------------------------------------------------------- the sets


class AdvBenchParams(HubParams):
    """AdvBench harmful behaviours (Zou et al. 2023), 520 prompts; columns prompt, target."""

    dataset_id: str = "walledai/AdvBench"
    revision: str = "main"  # placeholder: pin the commit hash


@benchmarks.register("advbench")
class AdvBench(HubBenchmark):
    """AdvBench: 520 harmful behaviours (walledai/AdvBench)."""

    Params: ClassVar[type[BaseModel]] = AdvBenchParams
    kind = "harmful"


class HarmBenchParams(HubParams):
    """HarmBench standard behaviours (Mazeika et al. 2024); columns prompt, category."""

    dataset_id: str = "walledai/HarmBench"
    config: str | None = "standard"
    revision: str = "main"  # placeholder: pin the commit hash
    category_column: str | None = "category"


@benchmarks.register("harmbench")
class HarmBench(HubBenchmark):
    """HarmBench standard behaviours (walledai/HarmBench, config standard)."""

    Params: ClassVar[type[BaseModel]] = HarmBenchParams
    kind = "harmful"


class StrongRejectBenchParams(HubParams):
    """StrongREJECT forbidden prompts (Souly et al. 2024); columns prompt, category, source."""

    dataset_id: str = "walledai/StrongREJECT"
    revision: str = "df54272b395ce9e584d2f8140519935425d8549f"
    category_column: str | None = "category"


@benchmarks.register("strongreject")
class StrongRejectBench(HubBenchmark):
    """StrongREJECT forbidden prompts (walledai/StrongREJECT)."""

    Params: ClassVar[type[BaseModel]] = StrongRejectBenchParams
    kind = "harmful"


#: HEx-PHI's 11 categories (Qi et al. 2024), one headerless CSV per category on the hub.
HEX_PHI_CATEGORIES: dict[int, str] = {
    1: "Illegal Activity",
    2: "Child Abuse Content",
    3: "Hate/Harass/Violence",
    4: "Malware",
    5: "Physical Harm",
    6: "Economic Harm",
    7: "Fraud/Deception",
    8: "Adult Content",
    9: "Political Campaigning",
    10: "Privacy Violation Activity",
    11: "Tailored Financial Advice",
}
_HEX_PHI_FILE = re.compile(r"^category_(\d+)\.csv$")


class HexPhiParams(HubParams):
    """HEx-PHI (Qi et al. 2024): 330 prompts in 11 categories (public release: 300, no
    category 2), gated. ``path``: a JSON/JSONL/CSV/Parquet file with ``prompt`` (and
    ``category``) columns, or the downloaded repo directory with its ``category_N.csv`` files."""

    dataset_id: str = "LLM-Tuning-Safety/HEx-PHI"
    revision: str = "main"  # placeholder: pin the commit hash
    category_column: str | None = "category"
    """For directory/hub loads the category is the file's (name from HEX_PHI_CATEGORIES)."""


@benchmarks.register("hex-phi")
class HexPhi(HubBenchmark):
    """HEx-PHI: 11 harm categories (LLM-Tuning-Safety/HEx-PHI, gated on the hub)."""

    Params: ClassVar[type[BaseModel]] = HexPhiParams
    kind = "harmful"
    access_help = (
        "LLM-Tuning-Safety/HEx-PHI is gated: request access at "
        "https://huggingface.co/datasets/LLM-Tuning-Safety/HEx-PHI (log in and accept its terms), "
        "then authenticate with `hf auth login` or HF_TOKEN; or download its category_N.csv files "
        "and pass params: {path: <that directory, or a .jsonl/.csv/.parquet file with a prompt column>}"
    )

    @staticmethod
    def _category_rows(ds: Any, index: int) -> list[dict[str, Any]]:
        # Headerless one-column files: the single column is the prompt.
        return [
            {"prompt": str(row[next(iter(row))]), "category": HEX_PHI_CATEGORIES.get(index, str(index)), "category_index": index}
            for row in ds.to_list()
        ]

    def _load_local(self) -> tuple[list[dict[str, Any]], str]:
        path = self._local_path()
        if not path.is_dir():
            return super()._load_local()
        files = sorted(
            (int(m.group(1)), f) for f in path.iterdir() if (m := _HEX_PHI_FILE.match(f.name))
        )
        if not files:
            raise UserError(f"{self.name}: no category_N.csv files in {path}")
        rows: list[dict[str, Any]] = []
        digest = hashlib.sha256()
        for index, file in files:
            rows += self._category_rows(self._read_file(file, column_names=["prompt"]), index)
            digest.update(f"{file.name}:{file_digest(file)}\n".encode())
        return rows, f"dir:sha256:{digest.hexdigest()}"

    def _load_hub(self) -> tuple[list[dict[str, Any]], str]:
        import datasets

        p = self.params
        rows: list[dict[str, Any]] = []
        fingerprints = []
        for index in HEX_PHI_CATEGORIES:
            try:
                ds = datasets.load_dataset(
                    p.dataset_id,  # type: ignore[attr-defined]
                    data_files=f"category_{index}.csv",
                    column_names=["prompt"],
                    revision=p.revision,  # type: ignore[attr-defined]
                    split="train",
                    cache_dir=p.cache_dir,  # type: ignore[attr-defined]
                )
            except Exception as exc:
                if index == 2 and rows:  # the public release has no category 2
                    continue
                raise self._hub_error(exc) from None
            rows += self._category_rows(ds, index)
            fingerprints.append(ds._fingerprint)
        content = hashlib.sha256("".join(fingerprints).encode()).hexdigest()
        return rows, f"datasets:{content}"

    def _has_builtin_categories(self) -> bool:
        return True

    def _category_selected(self, category: str | None, row: dict[str, Any], wanted: set[str]) -> bool:
        # Accept category names or their numbers ("Malware" or "4").
        return category in wanted or str(row.get("category_index")) in wanted


class JbbParams(HubParams):
    """JBB-Behaviors (Chao et al. 2024): columns Index, Goal, Target, Behavior, Category, Source."""

    dataset_id: str = "JailbreakBench/JBB-Behaviors"
    config: str | None = "behaviors"
    revision: str = "886acc352edf07581148c468cb03ce07d956dd55"
    split: str = "harmful"
    prompt_column: str = "Goal"
    category_column: str | None = "Category"
    id_column: str | None = "Index"


@benchmarks.register("jbb-harmful")
class JbbHarmful(HubBenchmark):
    """JailbreakBench JBB-Behaviors: 100 harmful behaviours."""

    Params: ClassVar[type[BaseModel]] = JbbParams
    kind = "harmful"


class JbbBenignParams(JbbParams):
    """JBB-Behaviors' 100 benign behaviours, matched to the harmful ones by topic."""

    split: str = "benign"


@benchmarks.register("jbb-benign")
class JbbBenign(HubBenchmark):
    """JailbreakBench JBB-Behaviors: 100 matched benign behaviours (over-refusal)."""

    Params: ClassVar[type[BaseModel]] = JbbBenignParams
    kind = "benign"


class XSTestParams(HubParams):
    """XSTest (Röttger et al. 2024): 250 safe + 200 unsafe prompts; columns prompt, type,
    label (``safe``/``unsafe``), focus, note. Default keeps the safe ones."""

    dataset_id: str = "walledai/XSTest"
    revision: str = "f1d713187c61b6ae64e602d74f0b3d812cc2e8e8"
    split: str = "test"
    category_column: str | None = "type"
    where: dict[str, list[str]] | None = Field(default_factory=lambda: {"label": ["safe"]})


@benchmarks.register("xstest-safe")
class XSTestSafe(HubBenchmark):
    """XSTest: 250 safe prompts that look unsafe (over-refusal)."""

    Params: ClassVar[type[BaseModel]] = XSTestParams
    kind = "benign"


class SelfInstructParams(HubParams):
    """Self-Instruct's 175 human-written seed tasks (Wang et al. 2022), benign instructions with
    an answer: ``params.path`` to ``seed_tasks.jsonl`` (one JSON object a line with
    ``instruction`` and ``instances: [{input, output}]``). The prompt is the instruction and,
    when the task has one, its first instance's input after a blank line; ``meta.answer`` is that
    instance's output."""

    prompt_column: str = "prompt"
    category_column: str | None = None
    id_column: str | None = "id"


@benchmarks.register("self-instruct-seed")
class SelfInstructSeed(HubBenchmark):
    """Self-Instruct seed tasks: 175 benign instructions with human-written answers (local file)."""

    Params: ClassVar[type[BaseModel]] = SelfInstructParams
    kind = "benign"

    def _load_local(self) -> tuple[list[dict[str, Any]], str]:
        raw, fingerprint = super()._load_local()
        rows = []
        for row in raw:
            instances = row.get("instances") or [{}]
            first = instances[0] if isinstance(instances[0], dict) else {}
            task_input = str(first.get("input") or "").strip()
            prompt = str(row.get("instruction") or "").strip() + (f"\n\n{task_input}" if task_input else "")
            rows.append({"id": row.get("id"), "prompt": prompt, "answer": str(first.get("output") or "")})
        return rows, fingerprint

    def _load_hub(self) -> tuple[list[dict[str, Any]], str]:
        raise UserError(f"{self.name}: set params.path to Self-Instruct's seed_tasks.jsonl (no hub copy is pinned)")


class BenignPromptsParams(HubParams):
    """Benign prompts from a local file (``path``) or a hub dataset (``dataset_id``); columns
    ``prompt`` (and ``id``) by default."""

    id_column: str | None = None


@benchmarks.register("benign-prompts")
class BenignPrompts(HubBenchmark):
    """Benign prompts from any file or dataset with a prompt column (e.g. the project's borderline-benign set)."""

    Params: ClassVar[type[BaseModel]] = BenignPromptsParams
    kind = "benign"

    def _load_hub(self) -> tuple[list[dict[str, Any]], str]:
        if not self.params.dataset_id:  # type: ignore[attr-defined]
            raise UserError(f"{self.name}: set params.path (a local file) or params.dataset_id")
        return super()._load_hub()
