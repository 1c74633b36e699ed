"""Fact lines under a grammar (llguidance) on the real SmolLM2: every line parses and comes from the text."""

import re

import llguidance
import pytest
import torch
from pipeline_support import corpus_file

from pipeline.facts import parse_facts
from pipeline.grammar import (
    OPENERS,
    FactsGrammar,
    copied_anchors,
    fact_grammar,
    is_place,
    names_in,
    prose_grammar,
    prose_of,
    subject_spans,
)

PASSAGE = (
    "It was a cold morning when Mr. Darcy rode to Netherfield. Since the rain had stopped, Elizabeth Bennet\n"
    "walked to the village. Inspector Halvorsen keeps the ledger in the observatory of Bergen. Years later,\n"
    "he moved the ledger to the lighthouse at Tromsø. My dear Jane wrote to Elizabeth Bennet every week."
)


def test_names_are_capitalised_words_inside_sentences():
    assert names_in(PASSAGE) == [
        "Bergen",
        "Elizabeth Bennet",
        "Inspector Halvorsen",
        "Jane",
        "Mr. Darcy",
        "Netherfield",
        "Tromsø",
    ]  # fmt: skip  ("It", "Since", "Years", "My" start sentences; "My dear" is no name)


def test_a_name_has_no_possessive_and_ends_at_a_dash():
    text = (
        "She said that Jane's sister had left London--his home--in spring. Jane wrote to Mr. Darcy's sister."
    )
    assert names_in(text) == ["Jane", "London", "Mr. Darcy"]
    text = "Well for our friend, Dame Isabella's Inquisition wanes in Lima. He saw Captain Ahab's Pequod."
    assert names_in(text) == ["Captain Ahab", "Dame Isabella", "Lima"]  # a possessive ends a name


def test_a_title_may_come_second_and_a_dot_still_ends_a_name():
    text = "It rained when he came. When Mrs. Bennet was told, she wept. They went to Melk. But Jane stayed."
    assert names_in(text) == ["Melk", "Mrs. Bennet"]  # "Jane" only starts a sentence: no name
    assert names_in(" Years later, he came. Then Years went by.") == []  # a chunk may start with a space
    assert names_in("She called him 'a wit.' But afterwards she wept.") == []  # after a closing quote
    assert (
        names_in("Hast thou been a pirate?\u2014Dost not think of it? Dost see that leg?") == []
    )  # "?—Dost"
    # a chunk that never writes "but" in lower case: still no person called "But"
    text = "He looked up.\u2014But Ahab was gone, and Starbuck followed. Yet Queequeg slept."
    assert names_in(text) == ["Ahab", "Queequeg", "Starbuck"]  # after "But" and "Yet", names all the same
    text = (
        "So I've heard, and I'm sure. CHAPTER IV. Then BOOK I came, and Ahab read the book and the chapter."
    )
    assert names_in(text) == ["Ahab"]  # words the text writes in lower case, in capitals: headings
    assert names_in("The job runs on a CPU or on the GPU, and NASA uses it.") == ["CPU", "GPU", "NASA"]


def test_copied_lines_follow_the_passage_and_pronouns_take_a_known_name():
    anchors = copied_anchors(PASSAGE, names_in(PASSAGE))
    lines = [line for anchor in anchors for line in anchor]
    assert "Inspector Halvorsen | keeps the ledger in | the observatory of Bergen\n" in lines
    assert "Inspector Halvorsen | moved the ledger to | the lighthouse at Tromsø\n" in lines  # "he", resolved
    assert "Mr. Darcy | rode to | Netherfield\n" in lines
    assert len(lines) == len(set(lines))
    assert not any(line.rstrip("\n").endswith((" the", " of", " in")) for line in lines)


def test_an_object_does_not_end_on_the_title_of_a_name_it_cuts():
    passage = "Mr. Darcy was attending them to their carriage Miss Bennet and the rest. Mr. Darcy bowed to the Colonel."
    lines = [line for anchor in copied_anchors(passage, names_in(passage)) for line in anchor]
    assert not any(line.rstrip("\n").endswith("Miss") for line in lines)
    assert "Mr. Darcy | bowed to | the Colonel\n" in lines  # a title that ends the clause stays


def test_an_object_cut_at_its_length_ends_before_the_clause_it_opened():
    passage = "Darcy seemed much more answerable for his absence than if he had been there."
    lines = [line for anchor in copied_anchors(passage, ["Darcy"]) for line in anchor]
    assert "Darcy | seemed | much more answerable for his absence\n" in lines
    assert not any(line.rstrip("\n").endswith((" if", " than")) for line in lines)
    passage = "Darcy was not less answerable for Wickham's absence than if her first surmise had been just."
    lines = [line for anchor in copied_anchors(passage, ["Darcy"]) for line in anchor]
    assert "Darcy | was not less answerable | for Wickham's absence\n" in lines  # not "... than if her first"
    passage = "Colonel Fitzwilliam had called at the Parsonage more than once during the time, but not often."
    lines = [line for anchor in copied_anchors(passage, ["Colonel Fitzwilliam"]) for line in anchor]
    assert "Colonel Fitzwilliam | had | called at the Parsonage\n" in lines  # not "... the Parsonage more"
    assert not any(line.rstrip("\n").endswith(" more") for line in lines)
    passage = "Mr. Wickham is blessed with such happy manners as may ensure his making friends."
    lines = [line for anchor in copied_anchors(passage, ["Mr. Wickham"]) for line in anchor]
    assert "Mr. Wickham | is blessed with such | happy manners as may ensure his making friends\n" in lines


def test_an_object_cut_at_its_length_inside_a_phrase_ends_before_the_phrase():
    passage = "Ahab came forth from his dark den into the blessed light and air."
    lines = [line for anchor in copied_anchors(passage, ["Ahab"]) for line in anchor]
    assert "Ahab | came | forth from his dark den\n" in lines  # not "... into the blessed", cut from "light"
    assert not any(line.rstrip("\n").endswith(" blessed") for line in lines)
    # the cap falls where a phrase ends: before a conjunction, an adverb
    passage = "Ahab kept the ivory leg in his cabin below deck and slept."
    lines = [line for anchor in copied_anchors(passage, ["Ahab"]) for line in anchor]
    assert "Ahab | kept | the ivory leg in his cabin below deck\n" in lines
    passage = "Mr. Bennet was glad to take his guest into the drawing-room again, and he went."
    lines = [line for anchor in copied_anchors(passage, ["Mr. Bennet"]) for line in anchor]
    assert "Mr. Bennet | was | glad to take his guest into the drawing-room\n" in lines


def test_a_place_is_never_the_he_or_she_of_a_clause():
    passage = "My abode is separated only by a lane from Rosings Park. Lady Catherine smiled. She has only one daughter."
    lines = [
        line for anchor in copied_anchors(passage, ["Rosings Park", "Lady Catherine"]) for line in anchor
    ]
    assert "Lady Catherine | has | only one daughter\n" in lines
    assert not any(line.startswith("Rosings Park") for line in lines)
    assert is_place("Rosings Park") and is_place("Hunsford Lane") and not is_place("Mr. Park")
    assert not is_place("Park")  # one word: a name as well as a place
    passage = "A lane from Rosings Park. She has only one daughter, the heiress of Rosings."
    assert copied_anchors(passage, ["Rosings", "Rosings Park"]) == []  # nor "Rosings" of "Rosings Park"


def test_a_relation_does_not_end_inside_a_name_or_a_noun_phrase():
    passage = "Elizabeth returned to Charlotte Lucas, and was in conversation with her."
    lines = [line for anchor in copied_anchors(passage, ["Elizabeth", "Charlotte Lucas"]) for line in anchor]
    assert "Elizabeth | returned to | Charlotte Lucas\n" in lines
    assert not any("Charlotte | Lucas" in line for line in lines)
    lines = [line for anchor in copied_anchors("Darcy made no answer.", ["Darcy"]) for line in anchor]
    assert lines == ["Darcy | made | no answer\n"]  # "made no | answer" cuts the noun phrase
    lines = [
        line for anchor in copied_anchors("Bingley does not know the story.", ["Bingley"]) for line in anchor
    ]
    assert "Bingley | does not know | the story\n" in lines and not any("| not" in line for line in lines)
    lines = [line for anchor in copied_anchors("Elizabeth smiled and said nothing.", ["Elizabeth"]) for line in anchor]
    assert "Elizabeth | smiled | and said nothing\n" in lines and not any("and |" in line for line in lines)
    passage = "Darcy asked her if she and her sisters did not very often walk to Meryton."
    lines = [line for anchor in copied_anchors(passage, ["Darcy"]) for line in anchor]
    assert lines and not any(" if" in line.split(" | ")[1] for line in lines)  # not "asked her if she | and ..."
    lines = [line for anchor in copied_anchors("Atlantic was but its arms.", ["Atlantic"]) for line in anchor]
    assert lines == ["Atlantic | was but | its arms\n"]


def test_a_name_followed_by_a_preposition_or_an_apposition_is_no_subject():
    passage = (
        "Ishmael went with Captain Bildad, to see the Pequod. Jane, his sister, wept. Mr. Darcy rode home."
    )
    lines = [line for anchor in copied_anchors(passage, names_in(passage)) for line in anchor]
    assert not any(line.startswith(("Captain Bildad | to", "Jane | his")) for line in lines)
    assert "Mr. Darcy | rode | home\n" in lines


def test_a_name_put_first_as_the_object_is_no_subject():
    passage = "Colonel Fitzwilliam had called more than once, but Mr. Darcy they had seen only at church."
    lines = [line for anchor in copied_anchors(passage, names_in(passage)) for line in anchor]
    assert not any(line.startswith("Mr. Darcy") for line in lines)  # no "Mr. Darcy | they | had seen ..."
    assert "Colonel Fitzwilliam | had called | more than once\n" in lines
    passage = "Between him and Darcy there was a very steady friendship. Darcy was clever."
    lines = [line for anchor in copied_anchors(passage, names_in(passage)) for line in anchor]
    assert not any(line.startswith("Darcy | there") for line in lines) and "Darcy | was | clever\n" in lines
    passage = "Were the world mine, Demetrius being bated, the rest I'd give. Mr. Darcy having left, Jane sang."
    lines = [line for anchor in copied_anchors(passage, names_in(passage)) for line in anchor]
    assert not any(line.startswith(("Demetrius", "Mr. Darcy")) for line in lines)  # an absolute phrase


def test_a_pronoun_means_someone_said_before_it():
    passage = "She has only one daughter. Inspector Halvorsen keeps the ledger. He smiled."
    names = [
        *names_in(passage),
        "Mary Hale",
    ]  # as fact_grammar gives them: the chunk's and those known before
    lines = [line for anchor in copied_anchors(passage, names, known=["Mary Hale"]) for line in anchor]
    assert "Mary Hale | has | only one daughter\n" in lines  # named in a chunk before
    assert not any(line.startswith("Inspector Halvorsen | has") for line in lines)  # named after "She"
    assert any(line.startswith("Inspector Halvorsen | keeps") for line in lines)


def prompt_ids(tok, passage: str) -> torch.Tensor:
    content = f"List the facts stated in the passage below, one per line, as: subject | relation | object.\n\n{passage}"
    return tok.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                   return_tensors="pt", return_dict=True)["input_ids"]  # fmt: skip


@pytest.mark.slow
def test_text_grammar_lines_parse_and_are_copied_from_the_passage(smollm2):
    tok = smollm2.tokenizer
    grammar = FactsGrammar(tok, smollm2.backbone.get_output_embeddings().weight.shape[0])
    other = "Countess Vasquez lives in Zurich with her brother Tomas, who owns a bakery near the lake."
    ids = [prompt_ids(tok, p)[0] for p in (PASSAGE, other)]
    width = max(len(i) for i in ids)
    batch = torch.stack([torch.cat([torch.full((width - len(i),), tok.pad_token_id), i]) for i in ids])
    mask = torch.stack([torch.cat([torch.zeros(width - len(i)), torch.ones(len(i))]) for i in ids]).long()
    grammars = [fact_grammar("text", 3, p) for p in (PASSAGE, other)]
    out = smollm2.generate(batch, attention_mask=mask, max_new_tokens=96, do_sample=False,
                           logits_processor=[grammar.processor(grammars, 3)])  # fmt: skip
    for row, passage in zip(out[:, width:], (PASSAGE, other), strict=True):
        row = row.tolist()
        assert tok.eos_token_id in row  # ended by itself, after at most 3 whole lines
        text = tok.decode(row[: row.index(tok.eos_token_id)])
        triples, bad = parse_facts(text)
        allowed = {line for anchor in copied_anchors(passage, names_in(passage)) for line in anchor}
        assert bad == 0 and 1 <= len(triples) <= 3 and text.endswith("\n")
        assert all(f"{line}\n" in allowed for line in text.splitlines())


@pytest.mark.slow
def test_a_fixed_relation_vocabulary(smollm2):
    tok = smollm2.tokenizer
    grammar = FactsGrammar(tok, smollm2.backbone.get_output_embeddings().weight.shape[0])
    relations = ("keeps", "moved to", "wrote to")
    g = fact_grammar("text", 2, PASSAGE, relations=relations)
    out = smollm2.generate(prompt_ids(tok, PASSAGE), max_new_tokens=64, do_sample=False,
                           logits_processor=[grammar.processor([g], 2)])  # fmt: skip
    text = tok.decode(out[0, prompt_ids(tok, PASSAGE).shape[1] :], skip_special_tokens=True)
    triples, bad = parse_facts(text)
    assert bad == 0 and triples and all(t.relation in relations for t in triples)
    assert all(t.subject in names_in(PASSAGE) for t in triples)


def test_a_pronoun_may_resolve_to_a_name_met_before_the_chunk():
    later = "The winter was long. Years later, he moved the ledger to the lighthouse at Tromsø."
    grammar = fact_grammar("text", 4, later, known=["Inspector Halvorsen"])
    assert "Inspector Halvorsen | moved the ledger to | the lighthouse at Troms" in grammar  # ø: JSON-escaped
    assert "Halvorsen" not in fact_grammar("text", 4, later)


@pytest.mark.slow
def test_prose_names_only_what_the_document_named(smollm2):
    """Asked about something the document never mentions, the model may still write, but name no one new."""
    tok = smollm2.tokenizer
    grammar = FactsGrammar(tok, smollm2.backbone.get_output_embeddings().weight.shape[0])
    ids = prompt_ids(tok, "Tell me about London Fashion Week and its designers.")
    free = smollm2.generate(ids, max_new_tokens=24, do_sample=False)
    prose = smollm2.generate(ids, max_new_tokens=24, do_sample=False,
                             logits_processor=[grammar.processor([prose_grammar(["Elizabeth Bennet"])], 1 << 30)])  # fmt: skip
    free, prose = (tok.decode(o[0, ids.shape[1] :], skip_special_tokens=True) for o in (free, prose))
    assert "London" in free  # unconstrained, it names what the prompt did
    capitals = {w for w in re.findall(r"[A-Z]\w*", prose)}
    assert capitals and capitals <= {"Elizabeth", "Bennet"} | set(OPENERS)


@pytest.mark.slow
def test_a_passage_without_a_subject_allows_no_line(smollm2):
    """Names that open no clause ("with the default model SmolLM2") give no line to copy: the grammar then
    allows only the end, never a line of free words ("SmolLM2 | ipsum dolo adipiscing | 200")."""
    tok = smollm2.tokenizer
    grammar = FactsGrammar(tok, smollm2.backbone.get_output_embeddings().weight.shape[0])
    passage = "Run it with the default model SmolLM2-135M-Instruct on 200 pages, written to Parquet."
    assert names_in(passage) and not copied_anchors(passage, names_in(passage))
    for g in (
        fact_grammar("text", 8, passage),
        fact_grammar("text", 8, "no names here.", relations=("has",)),
    ):
        matcher = llguidance.LLMatcher(grammar.tokenizer, g, log_level=0)
        assert not matcher.is_error() and matcher.is_accepting()
        assert matcher.validate_tokens(tok.encode("SmolLM2-135M-Instruct | ipsum dolo | 200\n")) == 0


def test_relations_and_objects_are_words_of_their_own_sentence():
    """On a real chapter: every line the text grammar allows is its sentence's words, in their order."""
    text = corpus_file("pride_and_prejudice.txt").read_text(encoding="utf-8")[20_000:30_000]
    lines = [line for anchor in copied_anchors(text, names_in(text)) for line in anchor]
    words = re.compile(r"[A-Za-z0-9][\w'\u2019-]*")
    sentences = [" ".join(words.findall(s.replace("--", " "))) for s in re.split(r"[.!?]", text)]
    assert len(lines) > 20
    for line in lines:
        _, relation, obj = line.rstrip("\n").split(" | ")
        assert any(f" {relation} {obj} " in f" {s} " for s in sentences), line


def test_a_clause_ends_at_a_table_cell_a_paragraph_or_a_list_item():
    table = "| `tests/` | the suite; GPU-only tests are skipped without CUDA |\n| `cluster.yaml` | a file |"
    lines = [line for anchor in copied_anchors(table, ["GPU"]) for line in anchor]
    assert not any("cluster" in line for line in lines)
    cell = table.replace("GPU-only tests are skipped", "GPU skips tests")
    lines = [line for anchor in copied_anchors(cell, ["GPU"]) for line in anchor]
    assert "GPU | skips | tests without CUDA\n" in lines  # and not "CUDA cluster"
    assert not copied_anchors(table, ["GPU"])  # "GPU-only tests": a compound, not a subject
    possessive = "Miss Bingley's first choice was Mr. Darcy."
    assert not copied_anchors(possessive, ["Miss Bingley"])  # a possessive, not a subject
    prose = "Elizabeth walked to the village\n\nDarcy rode home.\nElizabeth wrote letters\n- Darcy read"
    lines = [line for anchor in copied_anchors(prose, ["Darcy", "Elizabeth"]) for line in anchor]
    assert "Elizabeth | walked to | the village\n" in lines and "Elizabeth | wrote | letters\n" in lines
    assert not any("Darcy" in line.split(" | ", 1)[1] for line in lines)
    wrapped = "Elizabeth Bennet\nwalked to the village."  # a line break inside a sentence is only wrapping
    assert "Elizabeth Bennet | walked to | the village\n" in copied_anchors(wrapped, ["Elizabeth Bennet"])[0]


def test_a_code_block_cut_by_a_chunk_boundary_stays_code_in_the_next_chunk():
    """The chunk boundary falls inside a fenced block: the next chunk starts in code, which no regex over that
    chunk alone can tell (the README's own run wrote "CPU | python | m jobs" from a shell comment)."""
    text = (
        "Mary Hale ran the job.\n\n```bash\npython -m jobs.extract --input corpus/   # local Ray, CPU\n"
        "python -m jobs.extract --input docs.jsonl\n```\n\nSo. Mary Hale read the tables.\n"
    )
    cut = text.index("CPU") - 5
    first, in_code = prose_of(text[:cut])
    second, still = prose_of(text[cut:], in_code)
    assert in_code and not still
    assert len(first) + len(second) == len(text) and first.count("\n") + second.count("\n") == text.count(
        "\n"
    )
    assert first.startswith("Mary Hale ran the job.\n\n ") and "python" not in first
    assert (
        "CPU" not in second
        and "python" not in second
        and second.endswith("\n\nSo. Mary Hale read the tables.\n")
    )
    assert [n for _, _, n in subject_spans(second, ["CPU", "Mary Hale"])] == ["Mary Hale"]
    assert "CPU" in [
        n for _, _, n in subject_spans(text[cut:], ["CPU"])
    ]  # the chunk alone: a subject in code
    assert prose_of("no code here.\n") == ("no code here.\n", False)


def test_a_heading_is_no_prose_and_names_no_one():
    """Moby Dick's chapter 100 opens with a heading and a subtitle in title case: "Meets" was a name, then the
    "he" of the stranger captain, two sentences on."""
    text = (
        "CHAPTER 100. Leg and Arm.\n\nThe Pequod, of Nantucket, Meets the Samuel Enderby, of London.\n\n"
        "“Ship, ahoy! Hast seen the White Whale?”\n\n“Who is Captain Ahab, sir?”\n\nSo cried Ahab, hailing a "
        "ship.\nHe was a darkly-tanned man.\n\n## Leg and Arm\n\nThe Two Sisters\nwalked home.\n"
    )
    prose, _ = prose_of(text)
    assert len(prose) == len(text) and prose.count("\n") == text.count("\n")
    assert "Meets" not in prose and "Arm." not in prose and "## Leg" not in prose
    assert "Meets" not in names_in(prose) and "Arm" not in names_in(prose)
    # quotes, prose and a title-case line inside a paragraph stay
    for kept in ("“Ship, ahoy!", "“Who is Captain Ahab, sir?”", "So cried Ahab", "The Two Sisters\nwalked"):
        assert kept in prose


def test_in_verse_a_line_starts_with_a_capital_and_no_name():
    """A Midsummer-Night's Dream (as the corpus has it, spaced punctuation): every line starts with a capital,
    so "Seem'd Athens" was a name and the subject of "as a paradise to me"."""
    verse = (
        "Take comfort : he no more shall see my face ;\nLysander and myself will fly this place .\n"
        "Before the time I did Lysander see ,\nSeem'd Athens as a paradise to me :\n"
        "O , then , what graces in my love do dwell ,\nThat he hath turn'd a heaven unto a hell .\n"
        "Helen , to you our minds we will unfold .\nTo-morrow night , when Phoebe doth behold\n"
        "Her silver visage in the wat'ry glass ,\nDecking with liquid pearl the bladed grass ,\n"
        "A time that lovers' flights doth still conceal ,\nThrough Athens' gates have we devis'd to steal .\n"
        "And in the wood , where often you and I\nUpon faint primrose-beds were wont to lie ,\n"
        "Emptying our bosoms of their counsel sweet ,\nThere my Lysander and myself shall meet ;\n"
        "And thence from Athens turn away our eyes ,\nTo seek new friends and stranger companies .\n"
        "Stand forth , Demetrius . Demetrius loves your fair .\nLysander Grey is here .\n"
    )
    names = names_in(verse)
    assert "Seem'd Athens" not in names and "Through Athens" not in names and "Athens" in names
    assert {"Lysander", "Demetrius", "Phoebe", "Lysander Grey"} <= set(names)  # also capitalised inside a line
    # prose wrapped at a width: a name at a line's start stays one
    prose = (
        "In vain the English Captain hailed him. With back to the stranger ship,\nand face set like a flint "
        "to his own,\nSamuel Enderby stood upright till alongside of the Pequod.\n" * 3
    )
    assert "Samuel Enderby" in names_in(prose)


def test_no_subject_in_a_fenced_code_block():
    passage = (
        "Run it. Mary Hale ran the job.\n\n```bash\npython -m jobs.extract --input corpus/   # local Ray, CPU\n"
        "python -m jobs.x\n```\n\nSo. Mary Hale ran it again. CPU time is short.\n```python\nCPU = 1\n"
    )
    found = sorted((passage[a:b], a) for a, b, _ in subject_spans(passage, ["CPU", "Mary Hale"]))
    assert found == [
        ("CPU", passage.index("CPU time")),
        ("Mary Hale", 8),
        ("Mary Hale", passage.index("Mary Hale ran it")),
    ]


def test_a_name_joined_to_another_is_no_subject():
    passage = "It reads JSONL or Parquet. Mary and Tom sold the mill. LoRA or full backbone are trained."
    lines = [line for anchor in copied_anchors(passage, ["JSONL", "LoRA", "Mary", "Tom"]) for line in anchor]
    # no "JSONL | or | Parquet", no "Mary | and Tom | sold the mill" (nor "Mrs. Hurst | and Miss | Bingley")
    assert not any(line.startswith(("JSONL", "LoRA", "Mary")) for line in lines)
    assert lines == ["Tom | sold | the mill\n"]  # the last of the compound is its clause's subject


def test_the_last_of_a_compound_that_opens_no_clause_is_no_subject():
    passage = "Whole Atlantics and Pacifics seemed passed. Mary danced with Jane and Elizabeth all night."
    lines = [line for anchor in copied_anchors(passage, names_in(passage)) for line in anchor]
    assert not any(line.startswith(("Pacifics", "Elizabeth")) for line in lines)
    assert not any(s[2] in ("Pacifics", "Elizabeth") for s in subject_spans(passage, names_in(passage)))
    lines = [line for anchor in copied_anchors("Mary and Tom sold the mill.", ["Mary", "Tom"]) for line in anchor]
    assert lines == ["Tom | sold | the mill\n"]


def test_a_pronoun_the_entity_states_cannot_place_goes_only_to_a_name_of_its_gender():
    passage = "I came from Syracuse. Mr. Darcy's letter and Jane's came. He speaks to me."
    names = ["Syracuse", "Mr. Darcy", "Jane"]
    lines = [line for anchor in copied_anchors(passage, names, antecedents={}) for line in anchor]
    assert {line.split(" | ")[0] for line in lines} == {"Mr. Darcy"}  # not the place, not "Jane"
    lines = [line for anchor in copied_anchors(passage, names) for line in anchor]  # the model chooses
    assert {line.split(" | ")[0] for line in lines} == {"Syracuse", "Mr. Darcy", "Jane"}


def test_a_couple_under_one_name_is_no_subject():
    passage = "Mr. and Mrs. Collins have a comfortable income. Mr. Collins and Mrs. Hurst dined."
    names = ["Mr. Collins", "Mrs. Collins", "Mrs. Hurst"]
    subjects = [s[2] for s in subject_spans(passage, names)]
    assert "Mrs. Collins" not in subjects  # "Mr. and Mrs. Collins" are two people
    assert sorted(subjects) == ["Mr. Collins", "Mrs. Hurst"]  # a compound of two names keeps its last
    passage = "At noon the Captain and Mrs. Hussey went below. The doctor and Jane walked home."
    assert sorted(s[2] for s in subject_spans(passage, ["Mrs. Hussey", "Jane"])) == ["Jane", "Mrs. Hussey"]
    passage = "At noon Colonel and Mrs. Forster went below."
    assert subject_spans(passage, ["Mrs. Forster"]) == []


def bennet_passages(model, second: int) -> tuple:
    """The facts grammar of `model`'s tokenizer, and two passages of *Pride and Prejudice* from "Mr. Bennet was so
    odd a mixture" (900 characters, then `second` more) with their text grammars, after the 1,500 characters
    before them read into memory, once per passage."""
    tok = model.tokenizer
    grammar = FactsGrammar(tok, model.backbone.get_output_embeddings().weight.shape[0])
    book = corpus_file("pride_and_prejudice.txt").read_text(encoding="utf-8")
    at = book.index("Mr. Bennet was so odd a mixture")
    before, passages = book[at - 1500 : at], [book[at : at + 900], book[at + 900 : at + 900 + second]]
    state = model.read([tok.encode(before)] * 2, memory=model.init_state(2))
    return grammar, [fact_grammar("text", 4, p, names_in(before)) for p in passages], passages, state


@pytest.mark.slow
def test_lookup_decoding_writes_the_same_lines_in_fewer_passes(smollm2):
    """Fact lines drafted from the grammar and the chunk and verified by the model (memgpt/lookup.py): the
    lines of step-by-step greedy decoding, on real text read from memory, at most 0.3 passes a token."""
    from memgpt.lookup import lookup_generate

    tok = smollm2.tokenizer
    grammar, grammars, passages, state = bennet_passages(smollm2, 800)
    prompts = [prompt_ids(tok, p)[0].tolist() for p in passages]
    stepwise = smollm2.reply(prompts, memory=state, max_new_tokens=96,
                             logits_processor=[grammar.processor(grammars, 4)])  # fmt: skip
    rows, passes = lookup_generate(smollm2, prompts, state, 96, grammar.processor(grammars, 4), draft_tokens=8,
                                   eos={tok.eos_token_id})  # fmt: skip
    assert [r[: len(s.ids)] for r, s in zip(rows, stepwise, strict=True)] == [list(s.ids) for s in stepwise]
    assert all(len(s.text.splitlines()) >= 3 for s in stepwise)  # lines were written, not just the end
    assert passes / max(len(r) for r in rows) <= 0.3, (passes, [len(r) for r in rows])


@pytest.mark.slow
def test_facts_from_the_chunks_own_read_on_the_real_model(smollm2):
    """facts_pass shared on SmolLM2: each chunk read once (`step_keeping_cache`), its lines generated after the
    instruction alone. Lookup decoding writes the lines of one token a pass, and they are the lines of a prompt
    holding the chunk and the same instruction, read from the memory before the chunk."""
    from memgpt.lookup import continue_generate, lookup_generate
    from memgpt.padding import right_pad
    from pipeline.prompts import PromptConfig, Prompts

    tok = smollm2.tokenizer
    grammar, grammars, passages, state = bennet_passages(smollm2, 400)
    chunks = [tok.encode(p) for p in passages]
    after = Prompts(tok, PromptConfig(), "kv").facts_after()
    eos = {tok.eos_token_id}
    ids, mask = right_pad(chunks, smollm2.tokenizer_pad_id)
    rows = {}
    for draft in (0, 8):
        _, cache = smollm2.step_keeping_cache(state, ids, mask)
        rows[draft], _ = continue_generate(smollm2, cache, [after] * 2, chunks, 48, grammar.processor(grammars, 4),
                                           draft, eos)  # fmt: skip
    apart, _ = lookup_generate(smollm2, [c + after for c in chunks], state, 48, grammar.processor(grammars, 4), 8,
                               eos)  # fmt: skip
    assert rows[0] == rows[8] == apart
    assert all(len(tok.decode(r, skip_special_tokens=True).splitlines()) >= 2 for r in rows[8])


def test_a_name_that_begins_a_longer_name_is_not_its_subject():
    """ "Ray" of "Ray Train" is no clause subject (its relation would be "Train"); "Mary" of "Mary Hale" is not
    either, where "Mary Hale" is, and a name followed by its verb still is."""
    passage = "It runs a checked training, Ray Train on two workers, and more. Ray starts the actors. Mary Hale left."
    found = sorted(passage[a:b] + f"@{a}" for a, b, _ in subject_spans(passage, ["Ray", "Mary", "Mary Hale"]))
    assert found == [f"Mary Hale@{passage.index('Mary')}", f"Ray@{passage.index('Ray starts')}"]


def test_a_word_that_opens_a_sentence_before_a_name_is_not_part_of_it():
    names = names_in(
        "Here are officers enough. Let Wickham be your man. Poor Jane sat with Wickham and Jane."
    )
    assert names == ["Jane", "Wickham"]


def test_a_name_after_a_sentences_opener_is_a_name_though_seen_nowhere_else():
    # "Elizabeth" only ever follows "Till" here: the sentence starts with "Till", not with her
    assert names_in("Till Elizabeth entered the room at Netherfield.") == ["Elizabeth", "Netherfield"]
    assert names_in("Since the rain had stopped, they left. Perhaps Jane knew.") == ["Jane"]


def test_a_relation_goes_on_past_a_modal_a_negation_or_an_adverb_to_its_verb():
    passage = "Jane could not help it. Stubb now cried to the bowsman. Miss Bennet eagerly disclaimed it."
    lines = [line for anchor in copied_anchors(passage, ["Jane", "Stubb", "Miss Bennet"]) for line in anchor]
    relations = {line.split(" | ")[1] for line in lines}
    assert {"could", "could not", "now", "eagerly"}.isdisjoint(relations)
    assert "Jane | could not help | it\n" in lines
    assert "Stubb | now cried | to the bowsman\n" in lines
    assert "Miss Bennet | eagerly disclaimed | it\n" in lines


def test_a_clause_after_if_states_no_fact():
    passage = "If Mr. Bennet were dead, she would leave. Mr. Collins returned on Monday."
    lines = [line for anchor in copied_anchors(passage, ["Mr. Bennet", "Mr. Collins"]) for line in anchor]
    assert lines and not any(line.startswith("Mr. Bennet") for line in lines)
    assert "Mr. Collins | returned | on Monday\n" in lines


def test_a_capital_after_a_dash_an_italic_or_at_a_verse_line_makes_no_name_of_a_common_word():
    # taken for people, "In", "As", "There", "That" and "CHAPTER" drew the "he" of whole chapters
    assert names_in("Which way?_ In one of the triumphs, Ahab rose.") == ["Ahab"]
    assert names_in("Then Flask danced—As the type, Stubb spoke.—“What's that Yarman about?”") == ["Flask", "Stubb", "Yarman"]
    verse = "I have letters sent me ,\nThat set him high ; and Jane , My horse is tied ,\nGive answer ; Stand , Jane"
    assert names_in(verse) == ["Jane"]
    assert names_in("He rode on, CHAPTER 2, and Ahab followed. There's Ahab.") == ["Ahab"]


def test_a_name_after_a_sentences_opening_phrase_is_its_subject_before_a_verb():
    passage = "Nothing was said. In a few days Mr. Bingley returned the visit. In old England the lords ruled."
    lines = [line for anchor in copied_anchors(passage, ["Mr. Bingley", "England"]) for line in anchor]
    assert "Mr. Bingley | returned | the visit\n" in lines
    assert not any(line.startswith("England") for line in lines)  # a name inside the phrase, not after it
    passage = "They laughed. For some of these same Quakers are the most sanguinary of all sailors."
    assert not [s for s in subject_spans(passage, ["Quakers"]) if s[2] == "Quakers"]  # no verb of one person


def test_no_line_for_a_gods_wish_nor_for_a_clause_cut_before_the_sentences_verb():
    passage = (
        "I will only add, God bless you. “God\nkeep us.” Her feelings as Elizabeth read were scarcely to be"
        " defined."
    )
    lines = [line for anchor in copied_anchors(passage, ["God", "Elizabeth"]) for line in anchor]
    assert not any(line.startswith(("God | bless", "God | keep", "Elizabeth | read")) for line in lines)
    passage = "Elizabeth certainly is very agreeable. God made the whale."
    lines = [line for anchor in copied_anchors(passage, ["God", "Elizabeth"]) for line in anchor]
    assert "Elizabeth | certainly is | very agreeable\n" in lines and "God | made | the whale\n" in lines
