"""The planted-knowledge generator: determinism, facts in their chunk, pronouns resolved, scoring."""

import pytest

from memgpt.training.filler import Filler
from memgpt.training.planted import (
    BADGE,
    MOVED_TO,
    NAMES,
    Fact,
    PlantedConfig,
    default_tokenizer,
    format_summary,
    generate,
)
from memgpt.training.scoring import FactScore, parse_facts, parse_summary, score_facts, state_accuracy

CFG = PlantedConfig(n_chunks=6, chunk_size=56, n_entities=3, n_moves=7, n_distractors=3, pronoun_prob=0.8)


@pytest.fixture(scope="module")
def tok():
    return default_tokenizer()


def test_same_seed_same_document_other_seed_other_document():
    a, b, c = generate(CFG, 7), generate(CFG, 7), generate(CFG, 8)
    assert a.text == b.text and a.facts == b.facts and a.chunks == b.chunks
    assert a.text != c.text


def test_chunks_are_exact_and_tokenizing_the_text_gives_the_chunks(tok):
    for seed in range(20):
        doc = generate(CFG, seed)
        assert [len(c) for c in doc.chunks] == [CFG.chunk_size] * CFG.n_chunks
        assert tok.encode(doc.text, add_special_tokens=False) == doc.token_ids()
        for c, (start, end) in enumerate(doc.chunk_spans):  # a chunk's characters are its tokens
            assert tok.encode(doc.text[start:end], add_special_tokens=False) == doc.chunks[c]


def test_every_fact_is_stated_inside_its_chunk(tok):
    for seed in range(20):
        doc = generate(CFG, seed)
        assert len([f for f in doc.facts if f.relation == MOVED_TO]) == CFG.moves
        for f in doc.facts:
            start, end = doc.chunk_spans[f.chunk]
            assert start <= f.span[0] < f.span[1] <= end
            sentence = doc.text[f.span[0] : f.span[1]]
            assert f.object in sentence
            chunk_text = tok.decode(doc.chunks[f.chunk])
            assert sentence in chunk_text


def test_pronouns_are_resolved_to_the_entity_named_before():
    pronoun_facts = 0
    for seed in range(30):
        doc = generate(CFG, seed)
        for f in doc.facts:
            sentence = doc.text[f.span[0] : f.span[1]]
            if sentence.split()[0] in ("She", "He", "Her", "His"):
                pronoun_facts += 1
                assert f.subject not in sentence
                assert (NAMES[f.subject] == "she") == (sentence.split()[0] in ("She", "Her"))
                # the nearest earlier name in the text is the fact's subject
                before = doc.text[: f.span[0]].split()
                nearest = next(w.split("'")[0] for w in reversed(before) if w.split("'")[0] in NAMES)
                assert nearest == f.subject
            else:
                assert sentence.startswith(f.subject)
    assert pronoun_facts > 20


def test_summary_is_the_last_stated_location_and_badge():
    doc = generate(CFG, 3)
    for name, st in doc.state.items():
        moves = [f for f in doc.facts if f.subject == name and f.relation == MOVED_TO]
        badges = [f for f in doc.facts if f.subject == name and f.relation == BADGE]
        assert st == {"location": moves[-1].object, "badge": badges[-1].object}
    assert parse_summary(doc.summary()) == doc.state
    assert state_accuracy(doc.summary(), doc.state) == 1.0
    assert doc.state_after(CFG.n_chunks - 1) == doc.state
    assert {q for q, _ in doc.questions} >= {f"Where is {n}?" for n in doc.state}


def test_state_after_a_prefix_only_knows_that_prefix():
    doc = generate(CFG, 5)
    first = doc.state_after(0)
    assert set(first) == {f.subject for f in doc.chunk_facts(0)}


def test_filler_from_text_drops_sentences_with_planted_words():
    text = "Jane went home. The sea was calm. Nobody saw the church. " * 30
    filler = Filler.from_text(text)
    assert "Jane" not in filler.words and "church." not in filler.words and "calm." in filler.words
    doc = generate(PlantedConfig(n_chunks=3), 0, filler=filler)
    assert "The sea was calm." in doc.text


def test_dense_documents_that_do_not_fit_raise():
    with pytest.raises(ValueError, match="do not fit"):
        generate(PlantedConfig(n_chunks=1, n_entities=6), 0)


def test_state_accuracy_on_known_inputs():
    truth = {"Jane": {"location": "church", "badge": "12"}, "John": {"location": "city", "badge": "40"}}
    assert state_accuracy("Jane: church, badge 12\nJohn: city, badge 40", truth) == 1.0
    assert state_accuracy("Jane: church, badge 12\nJohn: house, badge 40", truth) == 0.5
    assert state_accuracy("Jane: church\nJohn: city, badge 41", truth) == 0.0  # badge missing / wrong
    assert state_accuracy("garbage", truth) == 0.0
    assert state_accuracy("Jane: church, badge 12\nJane: city, badge 1", {"Jane": truth["Jane"]}) == 1.0
    assert format_summary(truth) == "- Jane: church, badge 12\n- John: city, badge 40"
    assert state_accuracy(format_summary(truth), truth) == 1.0


def test_fact_scores_on_known_inputs():
    truth = [Fact("Jane", MOVED_TO, "church"), Fact("Jane", BADGE, "12")]
    s = score_facts("Jane | moved to | church\nJane | moved to | city\nnot a fact", truth)
    assert (s.tp, s.fp, s.fn) == (1, 1, 1)
    assert s.precision == 0.5 and s.recall == 0.5 and s.f1 == 0.5
    total = s + score_facts("none", []) + score_facts("Jane |  badge number | 12", [("Jane", BADGE, "12")])
    assert (total.tp, total.fp, total.fn) == (2, 1, 1)
    assert FactScore().f1 == 1.0  # nothing to find, nothing claimed
    assert parse_facts(" Jane | moved to | church \n|x|") == {("Jane", "moved to", "church")}
