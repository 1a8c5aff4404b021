"""What the NOICE paper (Kazdan et al. 2025, arXiv 2502.19537) brings besides its attack
(``ftsafety.attacks.noice``): its decoding and its 2×2 comparison table in report.html.

- Decoding preset ``noice`` (RECIPES.md, "Decoding"): vLLM, temperature 1.0, top_p 1.0, 600 new
  tokens (``generation: {preset: noice}``).
- Report table: attack none / noice × defense none / prefill (the aligned-model prefill, AMD,
  ``ftsafety.defenses.prefill``: the defense NOICE was built to beat), with ASR, refusal and
  refuse-then-comply in each cell.
"""

from __future__ import annotations

from ftsafety.harness.plugins import ReportTable
from ftsafety.harness.registry import decoding_presets, report_tables

decoding_presets.register("noice", {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "max_tokens": 600})

report_tables.register("noice", ReportTable(
    id="noice",
    title="NOICE 2×2: attack none / noice × defense none / prefill",
    note=("A refuse-then-comply attack (NOICE) is judged by its harm, not its opening refusal; the aligned-model "
          "prefill (AMD) is the defense it was built to beat."),
    attacks=("none", "noice"),
    defenses=("none", "prefill"),
    metrics=(("asr", "ASR"), ("refusal_rate", "refusal"), ("refuse_then_comply", "refuse-then-comply")),
))
