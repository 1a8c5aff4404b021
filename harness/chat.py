"""Rendering chat prompts the way both backends and the trainer see them."""

from __future__ import annotations

from typing import Any


def render_prompt(tokenizer: Any, messages: list[dict[str, str]], prefix: str = "") -> str:
    """The text a model is asked to continue: the chat template up to the assistant turn, then
    ``prefix`` (the assistant-turn prefill, empty for plain generation).

    Uses the tokenizer's own chat template (``apply_chat_template``), so a 7B model and the
    organism go through the same code path.
    """
    if not messages:  # a complete prompt given as prefix (e.g. the HarmBench classifier's [INST] text)
        return prefix
    text = tokenizer.apply_chat_template(chat_for(tokenizer, messages), tokenize=False, add_generation_prompt=True)
    return text + prefix


def supports_system_role(tokenizer: Any) -> bool:
    """False when the chat template rejects a system message (Gemma's raises, for one)."""
    cached = getattr(tokenizer, "_ftsafety_system_role", None)
    if cached is not None:
        return cached
    probe = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    try:
        tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
        ok = True
    except Exception:  # jinja2 TemplateError from raise_exception, or a template-specific error
        ok = False
    try:
        tokenizer._ftsafety_system_role = ok  # rendering thousands of prompts probes once
    except AttributeError:
        pass
    return ok


def fold_system(messages: list[dict[str, str]], template: str = "{system}\n\n{user}") -> list[dict[str, str]]:
    """Put a leading system message into the first user turn (as the papers do for models
    without a system role). Training data and evaluation prompts use this same function, so a
    model is evaluated on exactly the rendering it was trained on."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    for m in rest:
        if m["role"] == "user":
            m["content"] = template.format(system=system, user=m["content"])
            return rest
    return [{"role": "user", "content": system}, *rest]


def chat_for(tokenizer: Any, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """``messages`` as this tokenizer's template accepts them (system folded when needed)."""
    if messages and messages[0]["role"] == "system" and not supports_system_role(tokenizer):
        return fold_system(messages)
    return messages


def conversation_row(tokenizer: Any, user: str, assistant: str, system: str | None = None) -> dict[str, Any]:
    """A TRL conversational prompt/completion row; the system text is folded into the user turn
    when the model's chat template has no system role (``chat_for``)."""
    prompt = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return {"prompt": chat_for(tokenizer, prompt), "completion": [{"role": "assistant", "content": assistant}]}
