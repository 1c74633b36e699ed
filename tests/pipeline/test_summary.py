"""Summaries with evidence: from the facts and entity states, and evidence found for generated prose."""

import pytest

from pipeline.summary import (
    changes,
    content_words,
    evidence_for,
    lead_summary,
    person_facts,
    sentence_spans,
    summary_from_states,
    supported,
)

TEXT = (
    "Inspector Halvorsen keeps the ledger in the observatory of Bergen. Mary Hale walked to the mill. "
    "The rain fell all day. Mary Hale sold the old mill to a miller. Years later, he moved the ledger to "
    "the lighthouse at Tromsø. It was over."
)


def fact(subject: str, relation: str, obj: str, where: str, chunk: int = 0) -> dict:
    """A fact row whose evidence span is `where` in TEXT, as the actor's grounding gives it."""
    start = TEXT.index(where)
    return {"subject": subject, "relation": relation, "object": obj, "chunk_index": chunk,
            "char_start": start, "char_end": start + len(where)}  # fmt: skip


FACTS = [
    fact(
        "Inspector Halvorsen", "keeps the ledger", "in the observatory of Bergen", "Inspector Halvorsen keeps"
    ),
    fact("Mary Hale", "walked to", "the mill", "Mary Hale walked to the mill"),
    fact("rain", "fell", "all day", "rain fell all day"),  # not a name: no one the summary follows
    fact("Mary Hale", "sold", "the old mill to a miller", "Mary Hale sold the old mill", chunk=1),
    # "he" resolved by the entity states: the span holds the object only
    fact(
        "Inspector Halvorsen",
        "moved the ledger to",
        "the lighthouse at Tromsø",
        "the lighthouse at Tromsø",
        1,
    ),
]
STARTS = [0, TEXT.index("Mary Hale sold")]


def test_the_main_people_first_and_last_acts_each_sentence_with_its_evidence():
    summary, evidence = summary_from_states(FACTS, TEXT, STARTS)
    assert summary == (
        "The text follows Inspector Halvorsen and Mary Hale. "
        "Inspector Halvorsen keeps the ledger in the observatory of Bergen. "
        "Finally, Inspector Halvorsen moved the ledger to the lighthouse at Tromsø. "
        "Mary Hale walked to the mill. Finally, Mary Hale sold the old mill to a miller."
    )
    assert {e["sentence"] for e in evidence} == {0, 1, 2, 3, 4}
    assert all(supported(summary, evidence, TEXT))
    # the resolved pronoun's sentence: its own sentence in the text, and the last span that names the person
    spans = [TEXT[e["char_start"] : e["char_end"]] for e in evidence if e["sentence"] == 2]
    assert spans == ["Years later, he moved the ledger to the lighthouse at Tromsø.", "Inspector Halvorsen"]
    assert [e["chunk_index"] for e in evidence if e["sentence"] == 2] == [1, 0]


def test_people_are_bounded_and_ranked_by_what_they_did_and_who_changed_something_follows():
    summary, _ = summary_from_states(FACTS, TEXT, STARTS, people=1)
    assert summary.startswith("The text follows Inspector Halvorsen.")  # two facts each: the first to act
    # not among the main people, but what she did changed something she had before: it is said
    assert summary.endswith("Mary Hale walked to the mill. Finally, Mary Hale sold the old mill to a miller.")
    unchanged = [FACTS[0], FACTS[1], FACTS[4], dict(FACTS[3], relation="sang", object="a song")]
    summary, _ = summary_from_states(unchanged, TEXT, STARTS, people=1)
    assert "Mary" not in summary
    assert summary_from_states([FACTS[2]], TEXT, STARTS) == ("", [])  # no person: no summary to make


def test_evidence_for_generated_prose_and_what_it_cannot_support():
    summary = "Mary Hale sold the old mill. The Queen of Spain invented a telescope."
    evidence = evidence_for(summary, TEXT, STARTS)
    assert [(e["sentence"], e["chunk_index"]) for e in evidence] == [(0, 1)]
    assert TEXT[evidence[0]["char_start"] : evidence[0]["char_end"]].startswith("Mary Hale sold")
    assert supported(summary, evidence, TEXT) == [True, False]


@pytest.mark.parametrize(
    "sentence, words",
    [("Finally, the text follows Mary.", {"mary"}), ("He had 3 of them.", set())],
)
def test_content_words_leave_out_connectives_and_numbers(sentence, words):
    assert content_words(sentence) == words


def test_a_word_outside_the_evidence_is_not_supported():
    summary = "Mary Hale walked to the river."
    evidence = [{"sentence": 0, "chunk_index": 0, "char_start": 67, "char_end": 95}]
    assert TEXT[67:95] == "Mary Hale walked to the mill"
    assert supported(summary, evidence, TEXT) == [False]


def test_person_facts_keep_each_persons_latest_and_no_compound_halves():
    rows = FACTS + [dict(FACTS[1], subject="Mary Hale", relation="and", object="Inspector Halvorsen")]
    people = person_facts(rows, last=1)
    assert people == {
        "Inspector Halvorsen": ["Inspector Halvorsen moved the ledger to the lighthouse at Tromsø."],
        "Mary Hale": ["Mary Hale sold the old mill to a miller."],
    }


def test_changes_are_later_facts_that_say_again_what_an_earlier_one_was_about():
    keeps, moved = FACTS[0], FACTS[4]
    smiled = dict(moved, relation="smiled", object="at Bergen")  # a name shared is no change
    assert changes([keeps, smiled, moved]) == [moved]


def test_a_facts_evidence_is_where_its_words_stand_not_its_subjects_first_mention():
    # grounding found the subject's first mention in the chunk; the copied words stand in a later sentence
    first = TEXT.index("Mary Hale")
    row = dict(FACTS[3], chunk_index=0, char_start=first, char_end=first + len("Mary Hale"))
    summary, evidence = summary_from_states([row, FACTS[0]], TEXT, [0], least=1)
    spans = [TEXT[e["char_start"] : e["char_end"]] for e in evidence if e["sentence"] == 1]
    assert spans == ["Mary Hale sold the old mill to a miller."]
    assert summary_from_states([row], TEXT, [0], least=2) == ("", [])  # one person: too few for `least` 2


def test_a_change_is_told_with_the_value_it_superseded():
    def said(relation: str, obj: str) -> dict:
        return {"subject": "Mary Hale", "relation": relation, "object": obj, "chunk_index": 0, "char_start": 0,
                "char_end": 9}  # fmt: skip

    rows = [said("walked to", "the mill"), said("kept the brass key", "in her desk"), said("sang", "a song"),
            said("moved the brass key", "to the chapel"), said("slept", "at noon")]  # fmt: skip
    summary, _ = summary_from_states(rows + [dict(FACTS[0])], TEXT, [0])
    assert summary.startswith(
        "The text follows Mary Hale and Inspector Halvorsen. Mary Hale walked to the mill. Later, Mary Hale kept "
        "the brass key in her desk. Later, Mary Hale moved the brass key to the chapel. Finally, Mary Hale slept "
        "at noon."
    )


def test_evidence_is_numbered_as_the_summary_splits_into_sentences():
    """A line ending on "than I." runs on into the next one, and "Mme. Defarge" does not end a sentence: the
    evidence numbers the summary's sentences as `sentence_spans` reads them."""
    text = "Mme. Defarge knitted a red shawl. Jane was taller than I. Jane sold the old mill."
    rows = [
        {"subject": "Mme. Defarge", "relation": "knitted", "object": "a red shawl", "chunk_index": 0},
        {"subject": "Jane", "relation": "was", "object": "taller than I", "chunk_index": 0},
        {"subject": "Jane", "relation": "sold", "object": "the old mill", "chunk_index": 0},
    ]
    for row in rows:
        row["char_start"] = text.index(row["relation"])
        row["char_end"] = row["char_start"] + len(row["relation"])
    summary, evidence = summary_from_states(rows, text, [0])
    spans = sentence_spans(summary)
    assert [summary[a:b] for a, b in spans] == [
        "The text follows Jane and Mme. Defarge.",
        "Jane was taller than I. Finally, Jane sold the old mill.",
        "Mme. Defarge knitted a red shawl.",
    ]
    assert {e["sentence"] for e in evidence} == {0, 1, 2}
    assert all(supported(summary, evidence, text))


def test_the_forms_of_one_name_are_one_person():
    text = "Mr. Darcy rode to Netherfield. Darcy smiled at Elizabeth. Elizabeth walked to Meryton. Darcy rode home."

    def row(subject, relation, obj):  # noqa: E306
        start = text.index(f"{subject} {relation}")
        return {"subject": subject, "relation": relation, "object": obj, "chunk_index": 0, "char_start": start,
                "char_end": start + len(f"{subject} {relation} {obj}")}  # fmt: skip

    facts = [row("Mr. Darcy", "rode to", "Netherfield"), row("Darcy", "smiled at", "Elizabeth"),
             row("Elizabeth", "walked to", "Meryton"), row("Darcy", "rode", "home")]  # fmt: skip
    summary, _ = summary_from_states(facts, text, [0])
    assert summary.startswith("The text follows Darcy and Elizabeth.")  # not "Darcy, Elizabeth and Mr. Darcy"
    assert "Mr. Darcy rode to Netherfield." in summary  # each sentence in its fact's own words


MANUAL = """# tool

Install it with pip, then point it at a folder of text files.

```bash
# Run the job on this folder and write the tables.
tool run --input docs/
```

- The tables are Parquet files. Each has a schema.
| name | what it holds in its column |

It reads every file once and writes one row per file it read. Errors are rows of their own, with the file named.
A third sentence makes the lead longer than its budget of words allows, so it is left out of the summary.
"""


def test_a_lead_is_the_opening_prose_as_it_stands_each_sentence_its_own_evidence():
    starts = [0, MANUAL.index("It reads")]
    summary, evidence = lead_summary(MANUAL, starts, words=40)
    assert summary == (
        "Install it with pip, then point it at a folder of text files. It reads every file once and writes one "
        "row per file it read. Errors are rows of their own, with the file named."
    )  # no heading, code, comment in code, list item or table row; nothing past the words' budget
    spans = [MANUAL[e["char_start"] : e["char_end"]] for e in evidence]
    assert spans[0] == "Install it with pip, then point it at a folder of text files."
    assert [e["chunk_index"] for e in evidence] == [0, 1, 1] and all(supported(summary, evidence, MANUAL))
    assert lead_summary("# Title\n\n- a list item only.\n", [0]) == ("", [])
    assert lead_summary("One **long** first sentence of nine words in all here.", [0], words=3)[0] == (
        "One long first sentence of nine words in all here."
    )  # at least one sentence, its Markdown emphasis dropped
