"""Loading a table of rows from a local file or a hub dataset, through ``datasets``.

One loader for benchmarks and attack data alike. ``datasets`` is imported inside the function:
registering plugins must stay light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator

from ftsafety.harness.errors import UserError
from ftsafety.harness.store import file_digest

FILE_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def names_local_file(value: str) -> bool:
    """Whether a data source names a local file (by its suffix) rather than a hub dataset id."""
    return Path(value).suffix.lower() in FILE_FORMATS


def must_exist(value: str | None) -> str | None:
    """Pydantic check of a param naming a local file or directory: a missing one is a config
    error that ``ftsafety validate`` reports, not a failure after an engine has started."""
    if value is not None and not Path(value).expanduser().exists():
        raise ValueError(f"local file not found: {value} (a relative path is relative to the current directory)")
    return value


#: A plugin param naming a local file or directory that must exist (or None).
ExistingPath = Annotated[str | None, AfterValidator(must_exist)]


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def read_local_file(who: str, path: str | Path, *, cache_dir: str | None = None, **csv_options: Any) -> Any:
    """One local JSON/JSONL/CSV/Parquet file as a ``datasets.Dataset`` (its packaged builders,
    the same code path as the hub)."""
    import datasets

    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{who}: local file not found: {p}")
    if p.is_dir():
        raise UserError(f"{who}: {p} is a directory; pass a JSON/JSONL/CSV/Parquet file")
    fmt = FILE_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise UserError(f"{who}: cannot read {p}: use a .json, .jsonl, .csv or .parquet file")
    try:
        return datasets.load_dataset(fmt, data_files=str(p), split="train", cache_dir=cache_dir,
                                     **(csv_options if fmt == "csv" else {}))
    except Exception as exc:  # malformed file: one line for the user
        raise UserError(f"{who}: could not read {p}: {first_line(exc)}") from None


def hub_error(who: str, dataset_id: str, source: str, exc: BaseException, access_help: str = "") -> UserError:
    """What to do when a hub dataset cannot be loaded (offline, gated, renamed)."""
    help_text = access_help or (
        f"if it is gated, accept its terms at https://huggingface.co/datasets/{dataset_id} and log in "
        "(`hf auth login` or HF_TOKEN); without hub access, download it elsewhere and pass a local file "
        "(params: {path: <.jsonl/.csv/.parquet file>})"
    )
    return UserError(f"{who}: could not load {source} ({first_line(exc)}); {help_text}")


def load_table(
    who: str,
    *,
    path: str | None = None,
    dataset_id: str | None = None,
    config: str | None = None,
    revision: str | None = None,
    split: str = "train",
    cache_dir: str | None = None,
    access_help: str = "",
) -> tuple[list[dict[str, Any]], str]:
    """Rows and a content fingerprint, from ``path`` (JSON/JSONL/CSV/Parquet) or a hub dataset.

    Errors are ``UserError``s naming ``who`` (the plugin) and saying what to do instead.
    """
    if path:
        ds = read_local_file(who, path, cache_dir=cache_dir)
        return ds.to_list(), f"file:sha256:{file_digest(Path(path).expanduser())}"
    if not dataset_id:
        raise UserError(f"{who}: give a local file (path) or a hub dataset id")
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, config, revision=revision, split=split, cache_dir=cache_dir)
    except Exception as exc:
        raise hub_error(who, dataset_id, f"{dataset_id}@{revision or 'main'}", exc, access_help) from None
    return ds.to_list(), f"datasets:{ds._fingerprint}"
