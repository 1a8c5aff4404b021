"""organism-harmful / organism-benign benchmarks (no torch needed)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ftsafety.harness.registry import benchmarks


def test_registered_and_loaded(organism_world):
    harmful = benchmarks.get("organism-harmful")()
    benign = benchmarks.get("organism-benign")()
    hp, bp = harmful.load(), benign.load()
    w = organism_world
    assert len(hp) == len(w.harmful) * len(w.heldout_templates)
    assert len(bp) == len(w.benign) * len(w.heldout_templates)
    assert all(p.kind == "harmful" for p in hp) and all(p.kind == "benign" for p in bp)
    assert len({p.id for p in hp + bp}) == len(hp) + len(bp)
    heldout = {w.prompt(t, c) for t in w.heldout_templates for c in w.concepts.values()}
    assert all(p.prompt in heldout for p in hp + bp)
    assert hp[0].meta["concept"] == hp[0].category and hp[0].meta["organism_seed"] == 0
    # a limit still covers many concepts
    assert len({p.meta["concept"] for p in harmful.load(limit=10)}) == 10


def test_params_and_fingerprint():
    cls = benchmarks.get("organism-harmful")
    assert cls().fingerprint() == cls({"seed": 0}).fingerprint()
    assert cls().fingerprint() != cls({"seed": 1}).fingerprint()
    assert cls().fingerprint() != cls({"split": "train"}).fingerprint()
    with pytest.raises(ValidationError):
        cls({"sede": 1})
