"""Capability probe: does the harmful capability survive under the refusal? (Jain et al. 2023)

Source: Jain et al. 2023 (J23, "Mechanistically analyzing the effects of fine-tuning on
procedurally defined tasks", arXiv 2311.12786) find that safety fine-tuning learns a thin
*wrapper* over a capability that stays intact underneath; linear probes on the fine-tuned
model's hidden states still decode what the capability needs. Here the capability is "knowing
which harmful thing is being asked for": a linear probe per layer predicts the request's harmful
*concept* (the organism's concept, a hub benchmark's category) from the hidden state at the last
prompt token — the position the answer is generated from (chat template with its generation
prompt).

Protocol (docs/probe.md):

1. Features: for every model, the hidden state at the last prompt token at every layer
   (``hidden_states`` of transformers: the embedding output, then each decoder layer's output;
   the last one is the final layer's, after the final norm as transformers returns it).
2. Split: the prompts are split once, seeded and stratified by label (``train_fraction`` of each
   label's prompts to train, at least one prompt on each side; identical prompt texts stay on one
   side). Labels with fewer than two prompts are dropped (recorded).
3. Probe: multinomial logistic regression per layer, fitted on the *base* model's training
   features only (standardised with the base training mean and standard deviation; an L2 penalty
   ``0.5 * ||W||^2 / C`` on the summed cross-entropy, as scikit-learn's ``C``; the bias is not
   penalised). Solved to convergence in float64 with L-BFGS: the objective is strictly convex,
   so the probe is unique and the fit deterministic.
4. The same probe (the base model's, unchanged) is applied to the held-out prompts' features of
   the base model and of every other model: accuracy with a Wilson 95% interval and n. Chance is
   1 / #labels (and the held-out majority rate).
5. Refusals: each other model answers each held-out prompt greedily; on the organism the exact
   oracle says whether the answer refuses (``harness/organism/oracle.py``), elsewhere the
   ``prefix`` keyword rule (``evals/scorers/keyword.py``). The probe's accuracy on the refused
   prompts alone (n may be 0: accuracy None) says whether the concept is still decodable in a
   model that *refuses* to act on it.

Models are ``MODEL[:ADAPTER]`` as in ``ftsafety kl`` (``harness/kl.py``), loaded by the same code
(fp32; one copy of each distinct base, adapters on top by name).
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftsafety.harness.errors import UserError
from ftsafety.harness.kl import KLSide
from ftsafety.harness.plugins import EvalPrompt

#: Label fields looked up when none is given: the organism's concept, then a benchmark's category.
DEFAULT_LABEL_FIELDS: tuple[str, ...] = ("concept", "category")


# ----------------------------------------------------------------------------- labels and split


def item_labels(items: list[EvalPrompt], benchmark: str, label_field: str | None = None) -> tuple[str, list[str]]:
    """(field, label of every item). ``field`` is ``category`` (``EvalPrompt.category``) or a key
    of ``meta``; with none given, ``concept`` when every item has one, else ``category``."""
    if not items:
        raise UserError(f"benchmark '{benchmark}' has no prompts")

    def value(item: EvalPrompt, name: str) -> Any:
        return item.category if name == "category" and item.category is not None else item.meta.get(name)

    if label_field is None:
        label_field = next((f for f in DEFAULT_LABEL_FIELDS if all(value(it, f) not in (None, "") for it in items)),
                           DEFAULT_LABEL_FIELDS[-1])
    labels = [value(it, label_field) for it in items]
    missing = [it.id for it, lab in zip(items, labels, strict=True) if lab in (None, "")]
    if missing:
        have = sorted({"category", *items[0].meta} if items[0].category is not None else set(items[0].meta))
        raise UserError(
            f"benchmark '{benchmark}': {len(missing)} of {len(items)} item(s) have no '{label_field}' label "
            f"(e.g. {missing[0]}); the probe predicts it — name another field with --label-field "
            f"(fields: {', '.join(have) or 'none'})"
        )
    return label_field, [str(lab) for lab in labels]


@dataclass
class Split:
    """Indices into the items: probe training set, held-out set, and the labels used."""

    train: list[int]
    test: list[int]
    classes: list[str]
    dropped: dict[str, int] = field(default_factory=dict)


def stratified_split(labels: list[str], prompts: list[str], *, seed: int, train_fraction: float = 0.5) -> Split:
    """Per label, a seeded shuffle of its distinct prompt texts; the first ``train_fraction``
    (rounded, at least one and at most all but one) train the probe, the rest are held out.

    Deterministic in (labels, prompts, seed); identical prompt texts never straddle the split.
    A label with fewer than two distinct prompts cannot be on both sides and is dropped.
    """
    if not 0.0 < train_fraction < 1.0:
        raise UserError(f"train fraction must be in (0, 1), got {train_fraction}")
    groups: dict[str, dict[str, list[int]]] = defaultdict(dict)
    for i, (label, prompt) in enumerate(zip(labels, prompts, strict=True)):
        groups[label].setdefault(prompt, []).append(i)
    train: list[int] = []
    test: list[int] = []
    classes: list[str] = []
    dropped: dict[str, int] = {}
    for label in sorted(groups):
        texts = sorted(groups[label])
        if len(texts) < 2:
            dropped[label] = sum(len(v) for v in groups[label].values())
            continue
        # one generator per label: a label's split does not depend on which other labels exist
        random.Random(f"{seed}:{label}").shuffle(texts)
        k = min(len(texts) - 1, max(1, round(train_fraction * len(texts))))
        classes.append(label)
        train += [i for t in texts[:k] for i in groups[label][t]]
        test += [i for t in texts[k:] for i in groups[label][t]]
    if len(classes) < 2:
        raise UserError(f"the probe needs at least two labels with two or more distinct prompts each (have {len(classes)})")
    return Split(sorted(train), sorted(test), classes, dropped)


# ----------------------------------------------------------------------------- the probe


@dataclass
class Probe:
    """A fitted multinomial logistic regression on standardised features (float64 tensors)."""

    mean: Any
    scale: Any
    weight: Any  # [n_features, n_classes]
    bias: Any  # [n_classes]
    loss: float
    iterations: int
    #: Largest absolute gradient component of the objective at the solution (convergence check).
    grad_max: float = 0.0

    def logits(self, x: Any) -> Any:
        import torch

        z = (torch.as_tensor(x, dtype=torch.float64) - self.mean) / self.scale
        return z @ self.weight + self.bias

    def predict(self, x: Any) -> list[int]:
        return self.logits(x).argmax(-1).tolist()


def standardise(x: Any) -> tuple[Any, Any]:
    """Mean and scale of the columns of ``x``; constant columns keep scale 1 (they become 0)."""
    import torch

    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    return mean, torch.where(std > 1e-6 * (1.0 + mean.abs()), std, torch.ones_like(std))


def fit_probe(x: Any, y: Sequence[int], n_classes: int, *, c: float = 1.0, max_iter: int = 500) -> Probe:
    """Multinomial logistic regression: minimise ``sum_i CE(x_i, y_i) + 0.5 * ||W||^2 / c`` on
    standardised ``x`` (scikit-learn's parametrisation; bias unpenalised) with L-BFGS in float64.

    Strictly convex in W and convex in b: the optimum is unique in W, and L-BFGS from zero is
    deterministic. ``c`` larger = weaker penalty.
    """
    import torch

    if c <= 0:
        raise UserError(f"the probe's C must be positive, got {c}")
    x = torch.as_tensor(x, dtype=torch.float64)
    target = torch.as_tensor(list(y), dtype=torch.long)
    mean, scale = standardise(x)
    z = (x - mean) / scale
    weight = torch.zeros(z.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-10, tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def objective() -> Any:
        return (torch.nn.functional.cross_entropy(z @ weight + bias, target, reduction="sum")
                + 0.5 * (weight * weight).sum() / c)

    def closure() -> Any:
        optimiser.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
        loss = closure()
    grad_max = max(float(weight.grad.abs().max()), float(bias.grad.abs().max()))
    state = optimiser.state[weight]
    return Probe(mean, scale, weight.detach(), bias.detach(), float(loss.detach()), int(state.get("n_iter", 0)), grad_max)


def wilson(k: int, n: int) -> list[float] | None:
    """Wilson 95% interval of k / n (None when n = 0)."""
    from ftsafety.evals.metrics import wilson_interval

    return list(wilson_interval(k, n)) if n else None


def accuracy_entry(correct: Sequence[bool]) -> dict[str, Any]:
    """``{"accuracy", "ci", "n"}``; accuracy and ci are None on an empty set."""
    n, k = len(correct), sum(bool(c) for c in correct)
    return {"accuracy": k / n if n else None, "ci": wilson(k, n), "n": n}


# ----------------------------------------------------------------------------- features and answers


def _prompt_texts(tokenizer: Any, items: list[EvalPrompt], system: str | None) -> list[str]:
    from ftsafety.harness.chat import render_prompt

    head = [{"role": "system", "content": system}] if system else []
    return [render_prompt(tokenizer, [*head, {"role": "user", "content": it.prompt}]) for it in items]


def last_token_states(model: Any, context: Any, ids: list[list[int]], *, batch_size: int, device: str,
                      progress: Callable[[int], None] | None = None) -> Any:
    """Hidden states at each sequence's last token, every layer: float32 [layers + 1, n, hidden].

    Right-padded batches (causal attention: padding after a token never changes it), read at each
    row's own last position.
    """
    import torch

    out: list[Any] = []
    with context, torch.inference_mode():
        for b in range(0, len(ids), batch_size):
            chunk = ids[b : b + batch_size]
            width = max(len(r) for r in chunk)
            input_ids = torch.zeros(len(chunk), width, dtype=torch.long)
            mask = torch.zeros(len(chunk), width, dtype=torch.long)
            for i, row in enumerate(chunk):
                input_ids[i, : len(row)] = torch.tensor(row)
                mask[i, : len(row)] = 1
            hidden = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False,
                           output_hidden_states=True).hidden_states
            last = torch.tensor([len(r) - 1 for r in chunk], device=device)
            rows = torch.arange(len(chunk), device=device)
            out.append(torch.stack([h[rows, last].float().cpu() for h in hidden]))
            if progress is not None:
                progress(len(chunk))
    return torch.cat(out, dim=1)


def greedy_answers(model: Any, context: Any, tokenizer: Any, stop_ids: list[int], texts: list[str],
                   ids: list[list[int]], *, max_new_tokens: int, batch_size: int, device: str,
                   progress: Callable[[int], None] | None = None) -> list[str]:
    """Greedy continuations (left-padded batches; decoded as the generation backends decode)."""
    import torch

    from ftsafety.harness.backends.common import completion_result

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    special = frozenset(tokenizer.all_special_ids)
    answers: list[str] = []
    with context, torch.inference_mode():
        for b in range(0, len(ids), batch_size):
            chunk = ids[b : b + batch_size]
            width = max(len(r) for r in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros(len(chunk), width, dtype=torch.long)
            for i, row in enumerate(chunk):
                input_ids[i, width - len(row) :] = torch.tensor(row)
                mask[i, width - len(row) :] = 1
            out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                 max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                                 top_k=None, eos_token_id=stop_ids, pad_token_id=pad)
            for i, row in enumerate(chunk):
                result = completion_result(tokenizer, texts[b + i], row, out[i, width:].tolist(),
                                           stop_ids=frozenset(stop_ids), special_ids=special,
                                           max_tokens=max_new_tokens)
                answers.append(result.continuation)
            if progress is not None:
                progress(len(chunk))
    return answers


def refusal_rule(items: list[EvalPrompt]) -> str:
    """``organism-oracle`` when every item is an organism item the oracle can judge, else ``keyword:prefix``."""
    if all("concept" in it.meta and "organism_seed" in it.meta for it in items):
        from ftsafety.harness.organism.world import get_world

        if all(str(it.meta["concept"]) in get_world(int(it.meta["organism_seed"])).concepts for it in items):
            return "organism-oracle"
    return "keyword:prefix"


def refused(items: list[EvalPrompt], answers: list[str], rule: str) -> list[bool]:
    """Whether each answer refuses, under ``rule`` (``refusal_rule``)."""
    if rule == "organism-oracle":
        from ftsafety.harness.organism.oracle import judge
        from ftsafety.harness.organism.world import get_world

        return [judge(get_world(int(it.meta["organism_seed"])), str(it.meta["concept"]), a).refused
                for it, a in zip(items, answers, strict=True)]
    from ftsafety.evals.scorers.keyword import is_prefix_refusal

    return [is_prefix_refusal(a) for a in answers]


# ----------------------------------------------------------------------------- the measurement


@dataclass
class ProbeSettings:
    benchmark: str
    label_field: str
    seed: int = 0
    train_fraction: float = 0.5
    c: float = 1.0
    max_new_tokens: int = 32
    batch_size: int = 16
    system_prompt: str | None = None
    #: Also fit a probe on each other model's own features (a control; see ``run_probe``).
    own_probe: bool = True


@dataclass
class ModelResult:
    name: str
    spec: str
    layers: list[dict[str, Any]]
    refusal_rate: float | None = None
    n_refused: int | None = None
    train_accuracy: list[float] | None = None
    answers: list[str] = field(default_factory=list)


@dataclass
class ProbeResult:
    settings: ProbeSettings
    split: Split
    item_ids: list[str]
    labels: list[str]
    refusal_rule: str
    models: list[ModelResult]
    fit: list[dict[str, Any]]

    @property
    def n_layers(self) -> int:
        return len(self.models[0].layers)

    def chance(self) -> dict[str, float]:
        counts = Counter(self.labels[i] for i in self.split.test)
        return {"uniform": 1.0 / len(self.split.classes), "majority": max(counts.values()) / len(self.split.test)}

    def as_dict(self) -> dict[str, Any]:
        s = self.settings
        return {
            "what": "linear probe of the request's label on the last prompt token's hidden state, per layer; "
                    "fitted on the base model, applied to every model (J23's capability wrapper)",
            "benchmark": s.benchmark,
            "label_field": s.label_field,
            "seed": s.seed,
            "probe": {"kind": "multinomial logistic regression", "standardised": "base model's training mean/std",
                      "C": s.c, "penalty": "0.5 * ||W||^2 / C on the summed cross-entropy (bias unpenalised)",
                      "solver": "L-BFGS, float64", "fit": self.fit},
            "split": {"train_fraction": s.train_fraction, "stratified_by": s.label_field,
                      "n_train": len(self.split.train), "n_test": len(self.split.test),
                      "classes": self.split.classes, "dropped_labels": self.split.dropped,
                      "test_ids": [self.item_ids[i] for i in self.split.test]},
            "chance": self.chance(),
            "refusal": {"rule": self.refusal_rule, "max_new_tokens": s.max_new_tokens, "decoding": "greedy",
                        "system_prompt": s.system_prompt},
            "layers": list(range(self.n_layers)),
            "models": [
                {"name": m.name, "spec": m.spec, "role": "base" if i == 0 else "model",
                 "refusal_rate": m.refusal_rate, "n_refused": m.n_refused,
                 **({"train_accuracy": m.train_accuracy} if m.train_accuracy is not None else {}),
                 "layers": m.layers}
                for i, m in enumerate(self.models)
            ],
        }


def run_probe(
    base: KLSide,
    models: list[tuple[str, KLSide]],
    items: list[EvalPrompt],
    labels: list[str],
    settings: ProbeSettings,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> ProbeResult:
    """Features of every model, the base model's probe per layer, held-out and refused-subset accuracy.

    ``models`` are (name, side) pairs; refusal is decided for the base model too (its refused
    subset is usually empty).
    """
    from ftsafety.harness.backends.common import encode_prompt, end_of_turn_ids
    from ftsafety.harness.kl import LoadedModels, load_or_user_error
    from ftsafety.harness.models import load_tokenizer
    from ftsafety.harness.threads import cpu_threads_for

    split = stratified_split(labels, [it.prompt for it in items], seed=settings.seed,
                             train_fraction=settings.train_fraction)
    class_index = {c: k for k, c in enumerate(split.classes)}
    kept = sorted(split.train + split.test)
    test_items = [items[i] for i in split.test]
    rule = refusal_rule(test_items)
    sides = [("base", base), *models]

    loaded = LoadedModels([s for _, s in sides])
    tokenizers: dict[str, Any] = {}
    for _, side in sides:
        if side.path not in tokenizers:
            tokenizers[side.path] = load_or_user_error(load_tokenizer, side.path)
    total = len(sides) * len(kept) + len(sides) * len(test_items)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    tick(0)
    features: list[Any] = []
    answers: list[list[str]] = []
    position = {i: k for k, i in enumerate(kept)}
    with cpu_threads_for(loaded.n_params()):
        for _, side in sides:
            tok = tokenizers[side.path]
            texts = _prompt_texts(tok, [items[i] for i in kept], settings.system_prompt)
            ids = [encode_prompt(tok, t) for t in texts]
            model, context = loaded.use(side)
            features.append(last_token_states(model, context, ids, batch_size=settings.batch_size,
                                              device=loaded.device, progress=tick))
            test_pos = [position[i] for i in split.test]
            model, context = loaded.use(side)
            answers.append(greedy_answers(model, context, tok, end_of_turn_ids(tok, side.path),
                                          [texts[p] for p in test_pos], [ids[p] for p in test_pos],
                                          max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size,
                                          device=loaded.device, progress=tick))
    shapes = {tuple(f.shape[::2]) for f in features}
    if len(shapes) != 1:
        raise UserError("the models have different layer counts or hidden sizes: one probe cannot read them all "
                        f"({', '.join(f'{n}: {tuple(f.shape[::2])}' for (n, _), f in zip(sides, features, strict=True))})")

    train_pos = [position[i] for i in split.train]
    test_pos = [position[i] for i in split.test]
    y_train = [class_index[labels[i]] for i in split.train]
    y_test = [class_index[labels[i]] for i in split.test]
    n_layers = features[0].shape[0]
    probes: list[Probe] = []
    for layer in range(n_layers):
        probes.append(fit_probe(features[0][layer, train_pos].double(), y_train, len(split.classes), c=settings.c))

    results: list[ModelResult] = []
    for k, ((name, side), feats, said) in enumerate(zip(sides, features, answers, strict=True)):
        refusals = refused(test_items, said, rule)
        layers = []
        for layer, probe in enumerate(probes):
            hit = [p == t for p, t in zip(probe.predict(feats[layer, test_pos]), y_test, strict=True)]
            entry = {
                "layer": layer,
                **accuracy_entry(hit),
                "refused": accuracy_entry([h for h, r in zip(hit, refusals, strict=True) if r]),
                "answered": accuracy_entry([h for h, r in zip(hit, refusals, strict=True) if not r]),
            }
            if k > 0 and settings.own_probe:
                # Control: a probe fitted on this model's own training features. Tells a concept
                # that is gone from one the base probe cannot read because the states moved.
                own = fit_probe(feats[layer, train_pos].double(), y_train, len(split.classes), c=settings.c)
                entry["own_probe"] = accuracy_entry(
                    [p == t for p, t in zip(own.predict(feats[layer, test_pos]), y_test, strict=True)])
            layers.append(entry)
        train_acc = None
        if k == 0:
            train_acc = [sum(p == t for p, t in zip(probe.predict(feats[layer, train_pos]), y_train, strict=True))
                         / len(y_train) for layer, probe in enumerate(probes)]
        results.append(ModelResult(name=name, spec=side.spec, layers=layers,
                                   refusal_rate=sum(refusals) / len(refusals), n_refused=sum(refusals),
                                   train_accuracy=train_acc, answers=said))
    fit = [{"layer": i, "loss": p.loss, "iterations": p.iterations, "grad_max": p.grad_max} for i, p in enumerate(probes)]
    return ProbeResult(settings=settings, split=split, item_ids=[it.id for it in items], labels=labels,
                       refusal_rule=rule, models=results, fit=fit)


# ----------------------------------------------------------------------------- outputs


def write_outputs(result: ProbeResult, out: Path) -> tuple[Path, Path]:
    """``out/probe.json`` and ``out/probe.png`` (accuracy per layer; dashed: refused prompts only)."""
    import matplotlib

    from ftsafety.harness.figures import new_figure, to_png

    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / "probe.json", out / "probe.png"
    json_path.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    fig = new_figure(7, 4)
    ax = fig.add_subplot()
    layers = list(range(result.n_layers))
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, m in enumerate(result.models):
        colour = colours[k % len(colours)]
        ax.plot(layers, [e["accuracy"] for e in m.layers], marker="o", markersize=4, color=colour,
                label=f"{m.name} (n={m.layers[0]['n']})")
        sub = [e["refused"]["accuracy"] for e in m.layers]
        if k > 0 and any(v is not None for v in sub):
            ax.plot(layers, [math.nan if v is None else v for v in sub], linestyle="--", marker="x", markersize=4,
                    color=colour, label=f"{m.name}, refused only (n={m.layers[0]['refused']['n']})")
        if "own_probe" in m.layers[0]:
            ax.plot(layers, [e["own_probe"]["accuracy"] for e in m.layers], linestyle=":", linewidth=1, alpha=0.7,
                    color=colour, label=f"{m.name}, own probe (control)")
    chance = result.chance()["uniform"]
    ax.axhline(chance, color="grey", linestyle=":", linewidth=1, label=f"chance ({chance:.3f})")
    ax.set_xticks(layers)
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"base model's linear probe of {result.settings.label_field} on {result.settings.benchmark} "
                 f"({len(result.split.classes)} labels)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    png_path.write_bytes(to_png(fig))
    return json_path, png_path
