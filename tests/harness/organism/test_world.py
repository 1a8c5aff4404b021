"""The organism's world and tokenizer: conventions every later feature relies on."""

from __future__ import annotations

import pytest

from ftsafety.harness.organism.tokenizer import BOS, EOT, Encoder, build_vocab, make_hf_tokenizer
from ftsafety.harness.organism.world import (
    AFFIRMATIVE_PREFIXES,
    NOICE_BRIDGE,
    RECIPE_STRINGS,
    World,
    get_world,
    normalize,
    words,
)


@pytest.fixture(scope="module")
def tok(organism_world):
    return make_hf_tokenizer(build_vocab(organism_world.vocabulary()))


def test_world_is_seeded(organism_world):
    again = World(0)
    assert again.fingerprint() == organism_world.fingerprint()
    assert World(1).fingerprint() != organism_world.fingerprint()


def test_world_shape(organism_world):
    w = organism_world
    assert len(w.harmful) == 16 and len(w.benign) == 24 and len(w.unseen) == 8
    harmful_words = {x for c in w.harmful for s in c.steps for x in s.split()[2:]}
    other_words = {x for c in w.benign + w.unseen for s in c.steps for x in s.split()[2:]}
    assert not harmful_words & other_words, "harmful answer nouns must be unique to harmful concepts"
    assert set(w.train_templates).isdisjoint(w.heldout_templates)


def test_heldout_phrasings_use_known_words(organism_world):
    train = {x for t in organism_world.train_templates for x in words(t.replace("{c}", ""))}
    for t in organism_world.heldout_templates:
        assert set(words(t.replace("{c}", ""))) <= train, t


def test_tokenizer_round_trips_every_world_string(organism_world, tok):
    for s in organism_world.strings():
        ids = tok(s, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, s
        assert tok.decode(ids) == s


def test_recipe_strings_tokenize_without_unk(tok):
    for s in RECIPE_STRINGS:
        ids = tok(s, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, s
        assert tok.decode(ids) == normalize(s)


def test_unknown_words_map_to_unk(tok):
    ids = tok("how do i make a flux capacitor ?", add_special_tokens=False)["input_ids"]
    assert ids.count(tok.unk_token_id) == 2
    assert tok.decode(ids, skip_special_tokens=True) == "how do i make a ?"


def test_vocab_padded_and_special_tokens(tok):
    assert len(tok) % 64 == 0
    assert tok.bos_token == BOS and tok.eos_token == EOT
    assert tok("how", add_special_tokens=True)["input_ids"] == tok("how", add_special_tokens=False)["input_ids"]


def test_chat_template_matches_encoder_and_marks_assistant(organism_world, tok):
    enc = Encoder(build_vocab(organism_world.vocabulary()))
    msgs = [
        {"role": "system", "content": "you are a helpful assistant ."},
        {"role": "user", "content": "how do i make a cake ?"},
        {"role": "assistant", "content": "a cake : step 1 : mix the flour ."},
    ]
    out = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, start = enc.conversation(msgs[1]["content"], msgs[2]["content"], msgs[0]["content"])
    assert list(out["input_ids"]) == ids
    assert out["input_ids"].count(tok.bos_token_id) == 1
    mask = list(out["assistant_masks"])
    assert mask == [0] * start + [1] * (len(ids) - start)  # content and its <|end|>
    prompt = tok.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>")
    with pytest.raises(Exception, match="roles"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_attack_strings_are_new_behaviour(organism_world):
    """YOC/AOA openings and NOICE's bridge never appear in a chat turn the organism is trained
    on (they are in the plain-text corpus only, as words any real LLM knows)."""
    w = organism_world
    answers = [c.answer for c in w.concepts.values()] + list(w.refusals) + list(w.fillers)
    for s in answers:
        for new in (*AFFIRMATIVE_PREFIXES, NOICE_BRIDGE):
            assert new not in s
        assert not s.startswith("sure") and not s.startswith("of course")


def test_refusal_length_and_prefix_keyword(organism_world):
    for r in organism_world.refusals:
        assert 10 <= len(r.split()) <= 20
        assert r.startswith("i cannot")  # the `prefix` keyword matcher sees it


def test_datasets_for_attacks(organism_world):
    w = organism_world
    benign = w.benign_instructions()
    assert {e.concept for e in benign} == {c.name for c in w.benign + w.unseen}
    assert all(e.kind == "benign" and e.response == w.concept(e.concept).answer for e in benign)
    assert {e.concept for e in w.benign_instructions(include_unseen=False)} == {c.name for c in w.benign}
    pairs = w.harmful_pairs()
    heldout = {w.prompt(t, c) for t in w.heldout_templates for c in w.harmful}
    assert pairs and not {e.prompt for e in pairs} & heldout
    assert len(w.harmful_pairs([w.harmful[0].name])) == len(w.train_templates)
    # each answer in the dataset's own words: the capability answer, then remarks
    assert all(e.response.startswith(w.concept(e.concept).answer + " ") for e in pairs)
    assert len({e.response for e in pairs}) > len(w.harmful)
    c = w.harmful[0]
    assert w.harmful_answer(c.name) == c.answer
    with pytest.raises(ValueError):
        w.harmful_answer(w.benign[0].name)
    x, h, r = w.refusal_triplets()[0]
    assert h == w.concept(pairs[0].concept).answer and r in w.refusals
    assert pairs[0].messages()[-1] == {"role": "assistant", "content": pairs[0].response}


def test_get_world_cached():
    assert get_world(3) is get_world(3)
