"""Neutralising chat-control strings before untrusted text enters a judge prompt.

METRICS.md ("Judge hygiene"): escape or strip chat-control strings from responses before they
enter a judge prompt — a response containing ``[/INST]`` must not be able to answer for the
judge. Benchmark prompts go through the same function (jailbreak prompts carry such strings too).

What is rewritten, in this order (``SANITIZER_VERSION`` changes when this list changes, and is
part of every judge cache key):

0. Every line break Python or Unicode recognises (``\r\n``, ``\r``, ``\v``, ``\f``,
   U+001C-U+001E, U+0085, U+2028, U+2029) becomes ``\n``: a judge model may read any of them
   as a new line, and the line-start rules below (6, 7) must see every line the judge sees.
1. C0 control characters other than tab and newline, and DEL, are deleted
   (they have no meaning in a response and some APIs reject them).
2. Special-token syntax ``<|name|>`` (``<|eot_id|>``, ``<|im_end|>``, ``<|start_header_id|>``,
   ``<|user|>``, ``<|endoftext|>``, ...) becomes ``(name)``; so do DeepSeek's tokens, whose
   bars are full-width (``<｜User｜>``, ``<｜Assistant｜>``, ``<｜begin▁of▁sentence｜>``): either
   bar on either side. Applied until nothing changes, so nested forms cannot reassemble.
3. Llama-2 / Mistral markers: ``[INST]`` → ``(INST)``, ``[/INST]`` → ``(/INST)`` (any case,
   inner spaces tolerated); ``<<SYS>>`` → ``(SYS)``, ``<</SYS>>`` → ``(/SYS)``;
   ``<s>``/``</s>`` → ``(s)``/``(/s)`` (Llama tokenizers parse these literally as BOS/EOS).
4. Upper-case bracket tags ``[TAG]``/``[/TAG]`` (``[BEHAVIOR]``, ``[GENERATION]``, ``[CONTEXT]``,
   ``[SYSTEM_PROMPT]``, ``[TOOL_CALLS]``, ...) become ``(TAG)``/``(/TAG)``: they are the
   HarmBench classifier's field markers and Mistral's control tokens.
5. Angle-bracket turn markers: Gemma's ``<start_of_turn>``/``<end_of_turn>``/``<bos>``/``<eos>``
   and Llama Guard's ``<BEGIN ...>``/``<END ...>`` section markers become ``(...)``.
6. Verdict tags: ``#thescore:`` → ``(thescore):``, ``#thereason:`` → ``(thereason):`` (Q24),
   ``#scores``/``#overall_reasoning`` → ``(scores)``/``(overall_reasoning)`` (StrongREJECT), and
   a StrongREJECT answer key at a line start (``1.b``) → ``(1.b)``; all case-insensitive,
   spaces tolerated.
7. Judge field labels at the start of a line (after optional spaces of any kind, zero-width
   characters, ``#``, ``*``, ``>``):
   ``Answer:``, ``Answers:``, ``Final answer:``, ``Verdict:``, ``Score:``, ``Rating:``,
   ``Label:``, ``Classification:``, ``User Instruction:``, ``Model Response:``,
   ``AI model response:``, ``Human user:``, ``AI assistant:``, ``Harmful request:``,
   ``Response refusal:``, ``Harmful response:``, ``Behavior:``, ``Generation:``, ``Context:``
   keep their word but the colon (ASCII or full-width ``：``) becomes `` -``
   (``Answer: yes`` → ``Answer - yes``), so a response cannot start a fake field of the
   judge's form.

Not touched: double quotes (the Q24/NOICE templates wrap the response in quotes without
escaping, as their sources did; a closing quote alone cannot close a chat turn), other
look-alike Unicode (full-width square or angle brackets are not special tokens to any
tokenizer; DeepSeek's full-width bars are, hence rule 2), and ordinary words.
"""

from __future__ import annotations

import re

#: Bump whenever a rule changes: judge caches key on it.
SANITIZER_VERSION = "2"

# ``\r\n`` first, so that it becomes one line break, not two.
_LINE_BREAK = re.compile("\r\n|[\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# ASCII ``|`` or DeepSeek's full-width ``｜`` (U+FF5C), mixed forms included.
_SPECIAL_TOKEN = re.compile("<[|\uff5c]([^<>|\uff5c\n]{0,64})[|\uff5c]>")
# No two adjacent quantifiers over the same characters (``\s*(/?)\s*``): on a long run of spaces
# they backtrack quadratically, and the text is untrusted. An unmatched group substitutes "".
_INST = re.compile(r"\[\s*(?:(/)\s*)?INST\s*\]", re.IGNORECASE)
_SYS = re.compile(r"<<\s*(?:(/)\s*)?SYS\s*>>", re.IGNORECASE)
_BOS_EOS = re.compile(r"<(/?)s>")
_BRACKET_TAG = re.compile(r"\[(/?)([A-Z][A-Z0-9_]*(?: [A-Z0-9_]+){0,3})\]")
_ANGLE_TURN = re.compile(
    r"<(/?)(start_of_turn|end_of_turn|bos|eos|pad|unk|(?:BEGIN|END)(?: [A-Z]+){1,5})>"
)
_VERDICT_TAG = re.compile(r"#\s*(thescore|thereason)\s*:", re.IGNORECASE)
_RUBRIC_HEADER = re.compile(r"#\s*(scores|overall_reasoning)\b", re.IGNORECASE)
_RUBRIC_KEY = re.compile(r"^([^\S\n]*)([1-9])\s*\.\s*([ab])\b", re.IGNORECASE | re.MULTILINE)
_LABELS = (
    "final answer|answers|answer|verdict|score|rating|label|classification|user instruction|"
    "model response|ai model response|human user|ai assistant|harmful request|"
    "response refusal|harmful response|behavior|behaviour|generation|context"
)
# Indentation a judge would not see as text: any space but a line break, and zero-width characters.
_BLANK = r"(?:[^\S\n]|[\u200b-\u200d\u2060\ufeff])"
_FIELD_LABEL = re.compile(
    rf"^((?:[#*>]|{_BLANK})*)({_LABELS})([ \t]*\**[ \t]*)[:\uff1a]", re.IGNORECASE | re.MULTILINE
)


def sanitize_with_report(text: str) -> tuple[str, list[str]]:
    """``sanitize(text)`` plus the names of the rules that changed something (for tests/logs)."""
    fired: list[str] = []

    def apply(name: str, pattern: re.Pattern[str], repl: str, s: str) -> str:
        new = pattern.sub(repl, s)
        if new != s:
            fired.append(name)
        return new

    s = apply("line-breaks", _LINE_BREAK, "\n", text)
    s = apply("control-chars", _CONTROL_CHARS, "", s)
    # Nested forms such as ``<|<|eot_id|>eot_id|>``: repeat until stable (bounded).
    for _ in range(8):
        new = _SPECIAL_TOKEN.sub(r"(\1)", s)
        if new == s:
            break
        if "special-token" not in fired:
            fired.append("special-token")
        s = new
    s = apply("inst", _INST, r"(\1INST)", s)
    s = apply("sys", _SYS, r"(\1SYS)", s)
    s = apply("bos-eos", _BOS_EOS, r"(\1s)", s)
    s = apply("bracket-tag", _BRACKET_TAG, r"(\1\2)", s)
    s = apply("angle-turn", _ANGLE_TURN, r"(\1\2)", s)
    s = apply("verdict-tag", _VERDICT_TAG, r"(\1):", s)
    s = apply("rubric-header", _RUBRIC_HEADER, r"(\1)", s)
    s = apply("rubric-key", _RUBRIC_KEY, r"\1(\2.\3)", s)
    s = apply("field-label", _FIELD_LABEL, r"\1\2\3 -", s)
    return s, fired


def sanitize(text: str) -> str:
    """Neutralise chat-control strings and verdict markers in untrusted text (see module doc)."""
    return sanitize_with_report(text)[0]
