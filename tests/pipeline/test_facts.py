from pipeline.facts import Triple, dedupe, fact_key, ground, normalize, parse_facts


def test_parse_counts_bad_lines_and_skips_blanks():
    generated = """
Ahab | captains | the Pequod
  - Ishmael  |  narrates   | the story
1. Moby Dick | is | a  white whale

this line has no separators
a | b
a | b | c | d
 | missing | subject
"""
    triples, bad = parse_facts(generated)
    assert triples == [
        Triple("Ahab", "captains", "the Pequod"),
        Triple("Ishmael", "narrates", "the story"),
        Triple("Moby Dick", "is", "a white whale"),
    ]
    assert bad == 4


def test_parse_never_crashes_on_garbage():
    triples, bad = parse_facts("\x00|\ufffd|\n" + "|" * 1000 + "\n\r\n\t")
    assert (triples, bad) == ([], 2)
    assert parse_facts("") == ([], 0)


def test_normalize():
    assert normalize("  The   White Whale. ") == "white whale"
    assert normalize("An Apple") == "apple"
    assert normalize('"Captain AHAB"') == "captain ahab"
    assert normalize("the") == "the"  # an article alone stays
    assert normalize("Theodore") == "theodore"


def test_fact_key_ignores_case_whitespace_and_articles():
    assert fact_key(Triple("The Pequod", "Sails  FROM", "Nantucket")) == fact_key(
        Triple("pequod", "sails from", "nantucket.")
    )


def test_dedupe_keeps_the_first_occurrence():
    rows = [
        {"subject": "Ahab", "relation": "hunts", "object": "the whale", "chunk_index": 3},
        {"subject": "ahab", "relation": "HUNTS", "object": "whale", "chunk_index": 5},
        {"subject": "Ahab", "relation": "hates", "object": "the whale", "chunk_index": 6},
    ]
    assert [r["chunk_index"] for r in dedupe(rows)] == [3, 6]


def test_ground_finds_a_span_inside_the_chunk():
    text = "Chapter 1. Ahab hates the whale. Chapter 2. Ahab paces the deck of the Pequod at night."
    start, end = text.index("Chapter 2"), len(text)
    s, e, score = ground(Triple("ahab", "paces", "the Pequod"), text, start, end)
    assert start <= s < e <= end and score == 1.0
    assert text[s:e] == "Ahab paces the deck of the Pequod"
    s, e, score = ground(Triple("He", "walks", "the Pequod"), text, start, end)  # "He" is not in "the"
    assert text[s:e] == "the Pequod" and score == 0.5
    assert ground(Triple("Ishmael", "sees", "land"), text, start, end) == (start, end, 0.0)


def test_ground_spans_the_clause_a_copied_line_comes_from():
    text = "Ahab hates the whale. Stubb rowed on. At night Ahab paces, slowly, the deck. The whale rose; he swam away."
    s, e, score = ground(Triple("Ahab", "paces", "slowly the deck"), text, 0, len(text))
    assert text[s:e] == "Ahab paces, slowly, the deck" and score == 1.0  # not from the first "Ahab"
    s, e, score = ground(Triple("Moby Dick", "swam", "away"), text, 0, len(text))
    assert text[s:e] == "he swam away" and score == 0.5  # the subject a pronoun was resolved to
    s, e, _ = ground(Triple("Stubb", "swam", "away"), text, 0, len(text))
    assert text[s:e] == "he swam away"  # "Stubb" is in another sentence
    text = "Elizabeth smiled. At last Mr. Darcy was gone. Col. Forster was gone."
    s, e, _ = ground(Triple("Mr. Darcy", "was", "gone"), text, 0, len(text))
    assert text[s:e] == "Mr. Darcy was gone"  # the title's dot ends no sentence
    s, e, _ = ground(Triple("Col. Forster", "was", "gone"), text, 0, len(text))
    assert text[s:e] == "Col. Forster was gone"  # the clause whose sentence names the subject, not the first


def test_ground_takes_the_pronoun_the_subject_was_resolved_from():
    text = "Jane sat down. He was gone; then Darcy turned, and she was gone too."
    start = 5  # the chunk begins after "Jane "
    he, she = text.index("He") - start, text.index("she") - start
    s, e, _ = ground(Triple("Jane", "was", "gone"), text, start, len(text), {he: "Darcy", she: "Jane"})
    assert text[s:e] == "she was gone"
    s, e, _ = ground(Triple("Jane", "was", "gone"), text, start, len(text), {he: "Darcy"})
    assert text[s:e] == "she was gone"  # a pronoun no one was chosen for, before one that means someone else
    s, e, _ = ground(Triple("Jane", "was", "gone"), text, start, len(text))
    assert text[s:e] == "He was gone"  # without the resolutions: the first clause after a pronoun


def test_ground_offsets_survive_case_folding_that_changes_length():
    text = "Straße STRASSE İstanbul whale"
    s, e, _ = ground(Triple("whale", "is", "whale"), text, 0, len(text))
    assert text[s:e] == "whale"
