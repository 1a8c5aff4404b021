"""Judge prompt templates (data files) and the functions that fill them.

The texts are shipped byte-for-byte as in the project's JUDGE_PROMPTS.md (the fenced ``text``
blocks, without a trailing newline) under ``evals/scorers/judge_templates/``. Judges were
trained on or calibrated with these exact texts, so they are never edited in place: their
sha256 is pinned below, checked on load, and recorded with every score (``provenance()``).

Sources:

- ``harmbench-cls``: HarmBench ``eval_utils.py``, ``LLAMA2_CLS_PROMPT['prompt']`` (the prompt
  of ``cais/HarmBench-Llama-2-13b-cls``); placeholders ``{behavior}``, ``{generation}``.
- ``noice-yesno-verbatim``: NOICE ``scripts/gpt_eval.py`` as quoted in JUDGE_PROMPTS.md, with
  its Python-expression placeholders; rendered as the source's f-string would render it
  (``User Instruction:  + <prompt>``, an unbalanced opening quote before the response).
- ``noice-yesno``: the project's cleaned variant of the above: the empty prefix expression and
  the literal `` + `` are gone and the response quote is closed; nothing else changed.
- ``q24``: Qi et al. 2024 ``chatgpt_judge.py``; ``\\"%s\\"`` placeholders (the Python source's
  escaped quotes are rendered as plain ``"``, as Python did).

Every filler sanitises its inputs (``ftsafety.evals.scorers.sanitize``) unless told not to, and fills
placeholders in a single pass, so a prompt or response containing ``{generation}`` or ``%s``
cannot be substituted a second time.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from ftsafety.evals.scorers.sanitize import sanitize


@dataclass(frozen=True)
class JudgeTemplate:
    """One shipped template: its file, pinned hash, and where the text comes from."""

    name: str
    file: str
    sha256: str
    source: str


TEMPLATES: dict[str, JudgeTemplate] = {
    t.name: t
    for t in (
        JudgeTemplate(
            "harmbench-cls",
            "harmbench_cls.txt",
            "788f4f6aa1491c433c4da76c9140cfc30966cea3ff3875c4d0fcb336d92f60e0",
            "HarmBench eval_utils.py LLAMA2_CLS_PROMPT['prompt'] (cais/HarmBench-Llama-2-13b-cls)",
        ),
        JudgeTemplate(
            "noice-yesno",
            "noice_yesno.txt",
            "d3ca7ffa9bc2bedcf44f4c4a0872e1b483864a20c923e50f2504c45076b731d8",
            "NOICE scripts/gpt_eval.py, cleaned by ftsafety (no ' + ', no empty prefix, closed quote)",
        ),
        JudgeTemplate(
            "noice-yesno-verbatim",
            "noice_yesno_verbatim.txt",
            "a270d4bb683e1a2fe0fbde0bc90cb8e2e696d1cedb2ef02d29d03f3d10aa00c7",
            "NOICE scripts/gpt_eval.py (verbatim, with its quirks)",
        ),
        JudgeTemplate(
            "q24",
            "q24.txt",
            "b1bb4d246fceeb3a2acb1dfa5488c7fead16f6ba56e991232461bfe6844e5bef",
            "Qi et al. 2024 chatgpt_judge.py (GPT-4-Turbo, temperature 0, top_p 0)",
        ),
    )
}

# The verbatim NOICE template's placeholders are Python expressions from the source f-string.
_NOICE_PREFIX_EXPR = "{\"I'm sorry, I cannot\" if defense=='hard_no' else \"\"}"
_NOICE_PROMPT_EXPR = '{example["prompt"]}'
_NOICE_RESPONSE_EXPR = '{example["response"]}'


def template_sha256(text: str) -> str:
    """sha256 of a template's UTF-8 bytes (what is stored with every score)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@cache
def load_template(name: str) -> str:
    """The exact text of a shipped template; raises if the file does not match its pinned hash."""
    try:
        meta = TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown judge template '{name}' (known: {', '.join(TEMPLATES)})") from None
    text = resources.files("ftsafety.evals.scorers.judge_templates").joinpath(meta.file).read_text("utf-8")
    digest = template_sha256(text)
    if digest != meta.sha256:
        # A silently edited judge prompt would make every score incomparable: fail loudly.
        raise RuntimeError(
            f"judge template {meta.file} was modified (sha256 {digest}, expected {meta.sha256})"
        )
    return text


def fill_literal(template: str, values: dict[str, str]) -> str:
    """Replace each literal placeholder key by its value in one pass (no re-substitution)."""
    if not values:
        return template
    pattern = re.compile("|".join(re.escape(k) for k in sorted(values, key=len, reverse=True)))
    return pattern.sub(lambda m: values[m.group(0)], template)


def _clean(text: str, do_sanitize: bool) -> str:
    return sanitize(text) if do_sanitize else text


def build_harmbench_prompt(behavior: str, generation: str, *, sanitize_inputs: bool = True) -> str:
    """The HarmBench classifier prompt. Clip ``generation`` to 512 classifier tokens first
    (``clip_to_tokens``), as HarmBench does."""
    return fill_literal(
        load_template("harmbench-cls"),
        {
            "{behavior}": _clean(behavior, sanitize_inputs),
            "{generation}": _clean(generation, sanitize_inputs),
        },
    )


def build_q24_prompt(instruction: str, response: str, *, sanitize_inputs: bool = True) -> str:
    """The Q24 1–5 rubric prompt, rendered as ``judge_template % (instruction, response)``."""
    # The file keeps the Python source's escaped quotes; Python rendered ``\"`` as ``"``.
    text = load_template("q24").replace('\\"', '"')
    first, middle, last = text.split("%s")  # exactly two placeholders in the source
    return (
        first
        + _clean(instruction, sanitize_inputs)
        + middle
        + _clean(response, sanitize_inputs)
        + last
    )


def build_noice_prompt(
    instruction: str,
    response: str,
    *,
    verbatim: bool = False,
    hard_no: bool = False,
    sanitize_inputs: bool = True,
) -> str:
    """NOICE's Yes/No judge prompt; ``verbatim`` reproduces the source f-string's output,
    ``hard_no`` the source's ``defense == 'hard_no'`` branch (verbatim only)."""
    instruction = _clean(instruction, sanitize_inputs)
    response = _clean(response, sanitize_inputs)
    if not verbatim:
        return fill_literal(
            load_template("noice-yesno"), {"{prompt}": instruction, "{response}": response}
        )
    return fill_literal(
        load_template("noice-yesno-verbatim"),
        {
            _NOICE_PREFIX_EXPR: "I'm sorry, I cannot" if hard_no else "",
            _NOICE_PROMPT_EXPR: instruction,
            _NOICE_RESPONSE_EXPR: response,
        },
    )


def build_judge_prompt(template: str, prompt: str, response: str) -> str:
    """Dispatch for the chat-style judge templates (``q24``, ``noice-yesno[-verbatim]``)."""
    if template == "q24":
        return build_q24_prompt(prompt, response)
    if template == "noice-yesno":
        return build_noice_prompt(prompt, response)
    if template == "noice-yesno-verbatim":
        return build_noice_prompt(prompt, response, verbatim=True)
    if template == "harmbench-cls":
        return build_harmbench_prompt(prompt, response)
    raise ValueError(f"unknown judge template '{template}'")


def clip_to_tokens(text: str, tokenizer: object, max_tokens: int = 512) -> str:
    """``text`` cut to its first ``max_tokens`` tokens under ``tokenizer`` (HarmBench clips
    generations to 512 classifier tokens before classifying). Unchanged if already short."""
    ids = tokenizer.encode(text, add_special_tokens=False)  # type: ignore[attr-defined]
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)  # type: ignore[attr-defined]
