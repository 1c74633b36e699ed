"""Entity states: the person a subject pronoun means, chunks after the person last appeared."""

import json

import pytest
from faker.providers.person.en import Provider
from pipeline_support import corpus_file

from pipeline.entity_states import EntityStates
from pipeline.grammar import copied_anchors, fact_grammar, names_in
from pipeline.reading import Reading

FACT = "Inspector Halvorsen keeps the ledger in the observatory of Bergen. "
FOLLOW_UP = "Years later, he moved the ledger to the lighthouse at Tromsø. "


@pytest.fixture(scope="module")
def novel() -> str:
    book = corpus_file("pride_and_prejudice.txt").read_text(encoding="utf-8")
    start = book.index("It is a truth universally acknowledged")
    return book[start : start + 6000]


def read(states: EntityStates, passages: list[str]) -> list[dict[int, str]]:
    return [states.read(p, names_in(p)) for p in passages]


def test_a_pronoun_two_chunks_later_means_the_person_who_did_it(novel):
    passages = [FACT + novel[:2000], novel[2000:4000], FOLLOW_UP + novel[4000:4500]]
    assert "Bennet" in passages[1]  # people of the novel act between the fact and the pronoun
    *_, last = read(EntityStates(), passages)
    assert last[FOLLOW_UP.index("he")] == "Inspector Halvorsen"
    *_, baseline = read(EntityStates(rare=0), passages)  # the last person who acted: a person of the novel
    assert baseline[FOLLOW_UP.index("he")] not in ("Inspector Halvorsen", None)


def test_without_a_word_in_common_the_last_person_of_the_pronoun_gender():
    (found,) = read(EntityStates(), ["Mrs. Bennet spoke at length. Mr. Darcy walked in. She sat down."])
    assert list(found.values()) == ["Mrs. Bennet"]  # "Mr." is not "she"
    text = "At noon, Jane hid herself in the garden, and Tom went out. He laughed."
    (found,) = read(EntityStates(), [text])
    assert list(found.values()) == ["Tom"]
    (found,) = read(EntityStates(), ["At noon, Jane hid herself in the garden. He laughed."])
    assert found == {}  # "herself" says Jane is no "he": nobody left to mean
    (found,) = read(EntityStates(), ["At noon, Stubb looked at his face. He laughed."])
    assert list(found.values()) == ["Stubb"]  # "his" is as often another's: no evidence


def test_a_given_name_of_one_gender_says_whom_a_pronoun_can_mean():
    (found,) = read(EntityStates(), ["At noon, Jane looked at his face. He laughed."])
    assert found == {}  # "Jane" is no "he", whatever "his" says
    (found,) = read(EntityStates(), ["At noon, Charles walked in, and Jane sat down. He laughed."])
    assert list(found.values()) == ["Charles"]
    states = EntityStates()
    assert states.gender("Colonel Charles Brandon") == "he"  # the given name after a title that says nothing
    both = sorted(set(Provider.first_names_male) & set(Provider.first_names_female))[0]  # "Alex"
    assert states.gender(both) == states.gender("Stubb") == ""  # a name of both genders, a name of neither
    read(states, ["At dinner, Mr. Rose smiled. Later, Rose left."])
    assert states.gender("Rose") == "he"  # the titled namesake before the given name


def test_god_is_no_she():
    letter = ("At noon, Elizabeth took the letter from Mr. Darcy, who trusted in God. God bless you. She read it "
              "with an eagerness.")  # fmt: skip
    (found,) = read(EntityStates(), [letter])
    assert list(found.values()) == ["Elizabeth"]  # not God, who acted last
    assert EntityStates().gender("God") == "he"


def test_a_name_before_a_comma_is_in_its_sentence():
    text = ("At noon, Mrs. Younge left the house. If Elizabeth, when Mr. Darcy gave her the letter, did not "
            "expect it, she had formed no expectation at all.")  # fmt: skip
    (found,) = read(EntityStates(), [text])
    assert list(found.values()) == ["Elizabeth"]  # not Mrs. Younge, who acted last
    text = ("Mr. Denny acted at once. Mr. Denny entreated permission to introduce his friend, Mr. Wickham, who had "
            "returned, and he was happy to say so.")  # fmt: skip
    (found,) = read(EntityStates(), [text])
    assert list(found.values()) == ["Mr. Denny"]  # the one put beside "his friend" is not in the scene


def test_the_one_a_sentence_lets_do_something_is_in_the_scene():
    text = (
        "At tea, Mr. Bennet spoke to Lizzy at length. “Let Mr. Wickham be your man. He is a pleasant fellow.”"
    )
    (found,) = read(EntityStates(), [text])
    assert list(found.values()) == ["Mr. Wickham"]  # not the speaker, who acted before


def test_a_name_takes_the_gender_of_its_titled_namesakes():
    states = EntityStates()
    read(states, ["At dinner, Mr. Wickham smiled. Later, Wickham left, and Stubb stayed."])
    assert states.gender("Wickham") == "he" and states.gender("Stubb") == ""
    read(states, ["At tea, Mrs. Bennet sat down, and Mr. Bennet stood up. At last, Bennet spoke."])
    assert states.gender("Bennet") == "he"  # "Mr." as often as "Mrs.": a man is named by his surname alone
    states = EntityStates()
    read(states, ["At the ball, Darcy bowed to Elizabeth, who was addressed by Mr. Darcy at once."])
    assert states.gender("Darcy") == "he"  # "Mr. Darcy" opened no clause; the text names him so
    read(states, ["Miss Darcy sang, and Mr. Darcy listened.", "Mr. Darcy rode home."])
    assert states.gender("Darcy") == "he"  # three passages name "Mr. Darcy", one "Miss Darcy"
    read(states, ["Miss Darcy sang.", "Miss Darcy sang again."])
    assert states.gender("Darcy") == "he"  # three and three: a surname alone names a man, a woman keeps her title
    read(states, ["Mrs. Lind sang, and Lind listened.", "Miss Lind sang.", "Mrs. Lind sang."])
    assert states.gender("Lind") == "she"
    read(states, ["Mr. Lind sang.", "Mr. Lind sang again."])
    assert states.gender("Lind") == ""  # three "she" passages and two "he": neither rule


def test_a_name_the_text_puts_after_at_and_in_is_a_place_that_does_not_act():
    states = EntityStates()
    read(states, ["Mary dined at Rosings. They walked in Rosings.", "When her inquiries after Rosings were made, she smiled."])
    assert states.is_place("Rosings") and "Rosings" not in states.acted  # the clause "Rosings were made" is gone
    read(states, ["Tom looked at Jane. He laughed at Jane, and Jane laughed."])
    assert not states.is_place("Jane")  # a given name says she is a person
    read(states, ["Ahab stood. Ahab turned. Stubb looked at Ahab, and stared at Ahab."])
    assert not states.is_place("Ahab")  # more often a subject than after "at"
    read(states, ["Then Stubb looked at Flask, and at Flask again.", "Later, Flask rose. Then Flask sang. Flask ran."])
    assert not states.is_place("Flask")  # taken for a place, it acts its way out
    resumed = EntityStates.from_dict({k: v for k, v in states.to_dict().items() if k != "placed"})
    read(resumed, ["Stubb looked at Ahab, and in Ahab, and at Ahab."])
    assert not resumed.is_place("Ahab")  # states saved before the counts: everyone who acted acts often
    passage, known = "Rosings was quiet at noon. Mary sang a song.", ["Rosings", "Mary"]
    assert "Rosings |" in fact_grammar("text", 4, passage, known)
    grammar = fact_grammar("text", 4, passage, known, places=states.placed.keys() & {"Rosings"})
    assert "Rosings |" not in grammar and "Mary |" in grammar


def test_where_someone_goes_counts_as_a_place_but_whom_someone_speaks_to_does_not():
    states = EntityStates()
    read(states, ["She was to come to Rosings every day. Their visit to Rosings was long.", "After Rosings were made, she sat."])
    assert states.is_place("Rosings") and "Rosings" not in states.acted
    read(states, ["Tom spoke to Flask, and said to Flask: no.", "Later, Flask rose."])
    assert not states.is_place("Flask")  # "said to" is whom, not where


def test_a_pronoun_after_someone_unnamed_acted_goes_to_no_one():
    text = "At noon, Stubb counted upon the capture. The whale rose, and he swam away. Later, Stubb laughed. He cheered."
    (found,) = read(EntityStates(), [text])
    assert found == {text.index("he swam"): "", text.index("He cheered"): "Stubb"}
    text = "At noon, Stubb counted upon the capture. The moment was ecstasy, and he swam away."
    (found,) = read(EntityStates(), [text])
    assert found == {text.index("he swam"): "Stubb"}  # "the moment" is no one who acts


def test_a_wrong_guess_does_not_draw_the_next_pronouns():
    states = EntityStates()
    read(states, ["Captain Lindqvist keeps the violin in the harbour of Cadiz. Elizabeth walked home."])
    words = dict(states.words)
    read(states, ["She sang. She counted the coins of the old map."])
    assert states.words == words  # resolved clauses move a person into the scene, but add nothing to it


def test_the_states_are_saved_with_the_reading_and_older_checkpoints_load(novel):
    reading = Reading()
    read(reading.entities, [FACT + novel[:2000], novel[2000:4000]])
    loaded = Reading.from_dict(json.loads(json.dumps(reading.to_dict())))
    assert loaded.entities == reading.entities
    (a,), (b,) = read(reading.entities, [FOLLOW_UP]), read(loaded.entities, [FOLLOW_UP])
    assert a == b == {FOLLOW_UP.index("he"): "Inspector Halvorsen"}
    old = {k: v for k, v in reading.to_dict().items() if k != "entities"}  # saved before entity states
    assert Reading.from_dict(old).entities == EntityStates()


def test_the_fact_grammar_names_the_resolved_person_only():
    passage = "Years later, he moved the ledger to Tromsø."
    names = ["Elizabeth", "Inspector Halvorsen", "Mr. Darcy"]
    free = {line.split(" | ")[0] for lines in copied_anchors(passage, names) for line in lines}
    assert free == set(names)
    chosen = copied_anchors(passage, names, {passage.index("he"): "Inspector Halvorsen"})
    assert {line.split(" | ")[0] for lines in chosen for line in lines} == {"Inspector Halvorsen"}


@pytest.mark.slow
def test_the_real_model_writes_a_follow_up_under_the_person_chunks_before(smollm2_path, novel):
    """Two chunks after the person, and one sentence after another man: the entity states choose."""
    from pipeline.actor import Extractor
    from pipeline.chunking import chunk_text
    from pipeline.config import ExtractConfig

    # the names a pronoun line may take are offered in alphabetical order: the person sorts after the others
    fact = FACT.replace("Inspector Halvorsen", "Sergeant Oyelaran")
    text = fact + novel[:3000] + "Mr. Collins walked slowly to the window of the parlour. " + FOLLOW_UP
    config = ExtractConfig(input="unused", output="unused", model=str(smollm2_path), chunk_size=320,
                           checkpoint_every=0, max_new_tokens_facts=96, max_new_tokens_summary=4)  # fmt: skip
    extractor = Extractor(config, run_id="r")
    chunks = chunk_text(text, extractor.tokenizer, extractor.text_chunk)
    at = text.index(FOLLOW_UP)
    where = next(c.index for c in chunks if c.char_start <= at < c.char_end)
    assert where >= 2 and "Bennet" in text[chunks[1].char_start : chunks[where].char_start]
    docs = [{"doc_id": "d", "source": "d.txt", "title": "d", "text": text, "group": 0, "attempt": 1}]
    import pyarrow as pa

    (result,) = extractor(pa.Table.from_pylist(docs)).to_pylist()
    moved = [
        f for f in result["facts"] if f["chunk_index"] == where and "Tromsø" in f["relation"] + f["object"]
    ]
    assert moved and {f["subject"] for f in moved} == {"Sergeant Oyelaran"}, result["facts"]


def test_a_person_of_the_same_sentence_comes_before_rare_words():
    states = EntityStates()
    read(
        states, ["At dinner, Mrs. Gardiner expressed her satisfaction with the children. It rained for days."]
    )
    read(states, [". ".join(["The rain went on"] * 12) + "."])  # the scene moves on: her words are old ones
    text = "When Mrs. Bennet was told of this, she did not express her satisfaction."
    (found,) = read(states, [text])
    assert found == {text.index("she"): "Mrs. Bennet"}


def test_a_name_after_till_opens_its_clause_and_a_later_she_means_her():
    text = (
        "Till Elizabeth entered the drawing-room at Netherfield, and looked in vain for Mr. Wickham, a doubt of "
        "his being present had never occurred to her. She had dressed with more than usual care."
    )
    (found,) = read(EntityStates(), [text])
    assert found == {text.index("She"): "Elizabeth"}


def test_a_name_that_ends_a_list_does_not_act():
    (found,) = read(EntityStates(), ["Mr. Darcy rode out. He had fought in Egypt and Siberia. He smiled."])
    assert set(found.values()) == {"Mr. Darcy"}  # "and Siberia." opens no clause: Siberia never acted


def test_a_pronoun_long_after_anyone_was_named_means_no_one():
    filler = "The rain fell on the roofs of the town. " * 13  # more than RECENT sentences
    (found,) = read(EntityStates(), [f"Mr. Darcy rode out. {filler}He smiled."])
    assert list(found.values()) == [""]  # no rare word shared, and Mr. Darcy was named 14 sentences before
    (found,) = read(EntityStates(), [f"Mr. Darcy hid the ledger. {filler}Years later, he moved the ledger."])
    assert list(found.values()) == ["Mr. Darcy"]  # a rare word shared ("ledger"): as far back as it was said
    passage = f"Mr. Darcy rode out. {filler}He smiled at the sky."
    anchors = copied_anchors(passage, names_in(passage), read(EntityStates(), [passage])[0])
    assert not any("smiled" in line for anchor in anchors for line in anchor)  # no line rather than a guess


def test_pronoun_chains_do_not_keep_a_person_in_the_scene():
    she = "She looked at the sea. " * 14
    (found,) = read(EntityStates(), [f"Amara Osei hid the key. {she}"])
    values = list(found.values())
    assert values[0] == "Amara Osei" and values[-1] == ""  # named once: the chain ends RECENT sentences on


STALE = "Mr. Wickham rode out. " + "The rain fell on the roofs of the town. " * 13  # a man, named too long ago


def test_a_pronoun_with_no_one_in_the_scene_means_the_person_just_named():
    darcy = (
        "Nothing could assure the other two that they now saw Mr. Darcy, the gardener's expression of surprise "
        "must have told it. They stood a little aloof while he was talking to their niece."
    )
    (found,) = read(EntityStates(), [STALE + darcy])
    assert list(found.values()) == ["Mr. Darcy"]  # not "no one", nor the man named long before
    ahab = "Clap eye on Captain Ahab, young man, and thou wilt find that he has only one leg."
    (found,) = read(EntityStates(), [STALE + "Captain Ahab stood on the deck. " + STALE + ahab])
    assert list(found.values()) == ["Captain Ahab"]  # no known gender: it acted before


def test_a_name_just_before_gives_way_to_a_subject_and_to_a_phrase_put_before_the_clause():
    (found,) = read(EntityStates(), ["Mr. Collins bowed to Mr. Bennet. He laughed."])
    assert list(found.values()) == ["Mr. Collins"]  # the subject before, as before: not the one named after it
    (found,) = read(EntityStates(), [STALE + "Then turning to Mr. Bennet, he offered himself at backgammon."])
    assert list(found.values()) == [""]  # Mr. Collins turned: the name opens a phrase before the clause
    (found,) = read(EntityStates(), [STALE + "The letter was from Mr. Bennet to Mr. Collins. He laughed."])
    assert list(found.values()) == [""]  # two men named: no guess
    likened = "The Canaller is wicked. So, like Mark Antony, for days and days, he floats."
    simile = "Mark Antony sailed the Nile. " + STALE + likened
    (found,) = read(EntityStates(), [STALE + simile])
    assert list(found.values())[-1] == ""  # a name something is likened to is no one in the scene


def test_a_speaker_after_a_quote_is_the_subject_of_its_sentence_not_of_the_quote():
    text = "“Is it possible?” cried Elizabeth, when she had finished."
    (found,) = read(EntityStates(), [STALE.replace("Mr. Wickham", "Jane Bennet") + text])
    assert list(found.values()) == ["Elizabeth"]
    text = "“I can answer your question,” said Fitzwilliam, “without applying to him. It is because he will not.”"
    (found,) = read(EntityStates(), [STALE + text])
    assert list(found.values()) == [""]  # "he" is someone Fitzwilliam speaks of


def test_a_pronoun_is_no_one_named_in_its_own_clause_nor_in_the_quote_it_tags():
    (found,) = read(EntityStates(), ["Lady Catherine rose. Elizabeth smiled. She said very stiffly to Elizabeth that"
                                     " the park was small."])  # fmt: skip
    assert list(found.values()) == ["Lady Catherine"]  # not the last to act: she is named after the pronoun
    ahab = "Captain Ahab stood on the deck. “Moby Dick took off my leg. Moby Dick maimed me,” he shouted."
    (found,) = read(EntityStates(), [ahab])
    assert list(found.values()) == ["Captain Ahab"]  # the one named in the quote is whom the speaker speaks of
    (found,) = read(EntityStates(), ["Mrs. Bennet walked in, and Jane smiled. She cried, “Jane, how could you?”"])
    assert list(found.values()) == ["Mrs. Bennet"]  # and so is the one the quote after the tag speaks to


def test_a_pronoun_in_a_quote_is_not_its_speaker_nor_whom_it_is_said_to():
    text = (
        "Moby Dick rose, and Captain Ahab turned. “Oh, Captain Ahab, lo, thy work. He turns to meet us!” cried"
        " Starbuck."
    )
    (found,) = read(EntityStates(), [text])
    assert list(found.values()) == ["Moby Dick"]  # not Captain Ahab, whom the quote is said to
    (found,) = read(EntityStates(), ["Then Jane Bennet smiled, and Mrs. Bennet rose. “She is my youngest girl,” said"
                                     " Mrs. Bennet."])  # fmt: skip
    assert list(found.values()) == ["Jane Bennet"]  # not the speaker, who says "I"
    text = "Starbuck stood, and Moby Dick rose. “God keep us all! He turns to meet us!” cried Starbuck."
    assert EntityStates().read(text, ["Moby Dick", "Starbuck", "God"]) == {54: "Moby Dick"}  # a god is no one here


def test_she_is_no_surname_alone_but_may_be_a_given_name():
    (found,) = read(EntityStates(), ["Then Bingley smiled. She entered the room with an air."])
    assert list(found.values()) in ([], [""])  # a surname alone names a man: not Bingley
    (found,) = read(EntityStates(), ["Then Emma smiled. She entered the room with an air."])
    assert list(found.values()) == ["Emma"]  # a given name of both genders may be a "she"
