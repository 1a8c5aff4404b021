"""SafeLoRA's projection (Hsu et al. 2024), as tensor functions and one adapter edit.

Imported only when a ``safelora`` cell's post_train stage runs (it imports torch). See
``ftsafety.defenses.safelora`` for the method and its defaults.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

#: PEFT's prefix of every adapter tensor name, before the wrapped model's own module name.
PEFT_PREFIX = "base_model.model."


def alignment_projection(aligned: torch.Tensor, unaligned: torch.Tensor) -> torch.Tensor:
    """C = V Vᵀ / ‖V‖_F with V = W_aligned − W_unaligned (a d_out × d_out matrix), in float64."""
    v = aligned.double() - unaligned.double()
    norm = torch.linalg.matrix_norm(v)
    if norm == 0:
        return torch.zeros(v.shape[0], v.shape[0], dtype=torch.float64)
    return (v @ v.T) / norm


def update_similarity(projection: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor) -> float:
    """Cosine similarity between ΔW = B A and its projection C B A, flattened (the LoRA
    scaling cancels). 1.0 for an update of zero (nothing to project); 0.0 for an update wholly
    outside the alignment subspace (its projection is zero)."""
    delta = lora_b.double() @ lora_a.double()
    projected = projection @ delta
    norm_delta, norm_projected = torch.linalg.vector_norm(delta), torch.linalg.vector_norm(projected)
    if norm_delta == 0:
        return 1.0
    if norm_projected == 0:
        return 0.0
    return float((delta * projected).sum() / (norm_delta * norm_projected))


def choose_layers(similarity: dict[str, float], select: str, threshold: float, num_proj_layers: int) -> set[str]:
    """The layers to project: similarity at most ``threshold``, or the ``num_proj_layers`` lowest."""
    if select == "threshold":
        return {name for name, s in similarity.items() if s <= threshold}
    ranked = sorted(similarity, key=lambda name: (similarity[name], name))
    return set(ranked[:num_proj_layers])


def _lora_pairs(weights: dict[str, torch.Tensor]) -> dict[str, tuple[str, str]]:
    """Module name (as in the model's state dict, without ``.weight``) -> its (A, B) tensor names."""
    pairs: dict[str, tuple[str, str]] = {}
    for name in weights:
        if not name.endswith(".lora_A.weight"):
            continue
        module = name[: -len(".lora_A.weight")]
        b_name = module + ".lora_B.weight"
        if b_name not in weights:
            raise ValueError(f"adapter tensor {name} has no lora_B partner")
        pairs[module.removeprefix(PEFT_PREFIX)] = (name, b_name)
    return pairs


def read_linear_weights(path: str, names: list[str]) -> dict[str, torch.Tensor]:
    """The named weight tensors of a model (``<module>.weight``), read from its safetensors
    files one tensor at a time, or from the loaded model when it has none (a hub id)."""
    from safetensors import safe_open

    from ftsafety.harness.models import load_causal_lm, resolve_model_path

    wanted = {f"{n}.weight" for n in names}
    found: dict[str, torch.Tensor] = {}
    directory = Path(resolve_model_path(path))
    files = sorted(directory.glob("*.safetensors")) if directory.is_dir() else []
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in wanted.intersection(f.keys()):
                found[key] = f.get_tensor(key)
    if not files:
        state = load_causal_lm(path).state_dict()
        found = {k: state[k] for k in wanted if k in state}
    missing = sorted(wanted - found.keys())
    if missing:
        raise ValueError(f"{path} has no weight {missing[0]} (and {len(missing) - 1} more) that the adapter adapts")
    return {k[: -len(".weight")]: v for k, v in found.items()}


def project_adapter(src: Path, dst: Path, *, aligned: str, unaligned: str, select: str, threshold: float,
                    num_proj_layers: int) -> dict[str, Any]:
    """Write SafeLoRA's edit of the PEFT adapter ``src`` to ``dst``; return what it did."""
    from safetensors.torch import load_file, save_file

    weights = load_file(str(src / "adapter_model.safetensors"))
    pairs = _lora_pairs(weights)
    w_aligned = read_linear_weights(aligned, list(pairs))
    w_unaligned = read_linear_weights(unaligned, list(pairs))
    projections = {m: alignment_projection(w_aligned[m], w_unaligned[m]) for m in pairs}
    similarity = {m: update_similarity(projections[m], weights[a], weights[b]) for m, (a, b) in pairs.items()}
    chosen = choose_layers(similarity, select, threshold, num_proj_layers)
    edited = dict(weights)
    for module in chosen:
        _, b_name = pairs[module]
        b = weights[b_name]
        edited[b_name] = (projections[module] @ b.double()).to(b.dtype).contiguous()
    shutil.copytree(src, dst)
    save_file(edited, str(dst / "adapter_model.safetensors"), metadata={"format": "pt"})
    return {
        "aligned": aligned, "unaligned": unaligned, "select": select, "threshold": threshold,
        "num_proj_layers": num_proj_layers, "layers": len(pairs), "projected": len(chosen),
        "similarity": {m: {"cosine": round(s, 6), "projected": m in chosen} for m, s in sorted(similarity.items())},
    }

