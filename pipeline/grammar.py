"""Fact lines under a grammar: every line the model writes parses as `subject | relation | object`.

Generation is constrained token by token with llguidance (a Lark grammar per document row, compiled in
milliseconds; no dependencies of its own). Three modes:

- text (the default): facts copied from the passage. After a name met in the passage, the words that follow
  it in its sentence split into relation and object ("Inspector Halvorsen | keeps the ledger in | the
  observatory of Bergen"); after "he" or "she", the subject is any name met in the passage or the running
  notes, which the model must choose, so the pronoun is resolved. With a fixed relation vocabulary
  (`facts_relations` in the YAML) the subject is a name, the relation one of the vocabulary and the object a
  phrase of the passage. Every fact can so be found in the text it came from, or in the notes, and its
  relation is words of its own sentence (or of the vocabulary). A passage without a sentence whose subject
  is a name or pronoun (or, with a vocabulary, without a name) allows no line: free words there would be
  words the model makes up.
- lines: any words in each of the three fields (the relation from the vocabulary, if one is given);
- none: unconstrained generation, parsed afterwards (lines that are no fact are counted as unparsed).

The model chooses which facts to write and where to split them; with a small model that choice is most of
the quality (docs/knowledge.md).
"""

import bisect
import json
import re
from functools import cached_property

import llguidance
import llguidance.hf
import llguidance.torch
import torch
from transformers import LogitsProcessor

from pipeline.entities import GODS, HE_TITLES, SHE_TITLES, STOPWORDS, TITLES, given_name_gender

GRAMMARS = ("text", "lines", "none")
NO_LINES = '""'  # the grammar of a passage without a line to copy: only the end of the output
OPENERS = (
    "The A An He She They It In At On After When Later Then This That These His Her Their One Years Meanwhile But "
    "And As So There Here I We You"
).split()
# words a capital never makes a name of, wherever they stand ("—But the mate", "Dost see that leg?"): a chunk
# that never writes them in lower case would otherwise take them for names, and the document would keep them
_NEVER_NAMES = frozenset(
    "and but or nor yet so then now thus still oh ah alas nay yes no well aye ay o lo "
    "thou thee thy thine ye dost didst hast hath art wast shalt wilt "
    # a sentence's first word before a name, never part of it: "Let Wickham be your man", "Poor Jane"
    "let pray tell why what how where who do did does is was are were have had shall could would should must "
    "if unless though although whether because till until perhaps indeed surely even only dear poor "
    "whole all every each both such many several some any neither either "  # "Whole Atlantics and Pacifics"
    # prepositions, adverbs and heading words that a capital after a dash or an italic's "_" made look like one:
    # taken for people, they drew the "he" of whole chapters of Moby Dick ("In", "As", "There", "CHAPTER")
    "in on at as to of for from with by into upon onto there here when while after before since not soon once "
    "again besides meanwhile chapter book "
    # what starts a line of verse, capitalised mid-sentence: "I have letters sent me, / That set him high"
    "my our your mine one give go come can stand make take see look hear speak say know think unto lest".split()
)
_NOT_NAMES = STOPWORDS | _NEVER_NAMES
PRONOUNS = ("he", "she", "He", "She")
_PLACE_WORDS = frozenset(
    "park hall house street square lodge castle abbey church chapel road lane island river bay harbour harbor "
    "hill mountain lake forest wood woods court place manor cottage inn bridge city town village farm "
    "county shire sea ocean cape point port".split()
)
MAX_RELATION_WORDS = 4
MAX_PHRASE_WORDS = 6  # an object phrase under a relation vocabulary
MAX_OBJECT_WORDS = 8  # a copied line's object: "moved | the violin to the chapel of Arles" whole
_WORD = re.compile(r"[A-Za-z0-9][\w'\u2019-]*")
# a title may come second ("When Mrs. Bennet"): any word may end with a dot, and _split_at_sentence_end cuts
# the name where a dot ends a sentence instead ("Melk. But")
_NAME = re.compile(r"[A-Z][\w'\u2019-]*\.?(?: (?:de |van |von )?[A-Z][\w'\u2019-]+\.?){0,3}")
# a clause a subject opens; not one after "if": "if Mr. Bennet were dead" states nothing that happened
_CLAUSE_START = re.compile(
    r"(?:^|[.!?;,:\"\u201c\u201d(\u2018\u2019]|\b(?:and|but|then|when|while|as|that|because|since|after|before|until))\s*$"
)
# a sentence's opening phrase, one to four lowercase words after a preposition, whose end is its subject's start:
# "In a few days Mr. Bingley returned", "At length Darcy spoke"; not the phrase's own noun ("of Mr. Darcy")
_INTRODUCED = re.compile(
    r"(?:^|[.!?;:\"\u201c\u201d]\s*)(?:In|At|On|After|Before|During|For|Within|By|To|With|From|Upon)"
    r"(?:\s+[a-z]+){1,4}(?<!\bof)(?<!\bthe)(?<!\ba)(?<!\ban)(?<!\band)(?<!\bto)(?<!\bwith)(?<!\bby)\s+$"
)
_PAST_VERBS = frozenset(
    "was had did could would should might must may will shall spoke began took made said saw came went felt "
    "thought knew found gave told sat stood rose ran left kept heard meant became bore drew fell got grew held "
    "lay led put read rode sang shook slept struck swam threw wept won wrote".split()
)
_BE = frozenset("is are was were".split())
# a god's wish, not a fact: "God bless you", "God keep us", "God knows"
_WISH = re.compile(r"\s+(?:bless|keep|help|save|forbid|forgive|grant|send|defend|preserve|knows|be)\b")
_NARRATOR = re.compile(r"I['\u2019]")  # "I've", "I'm" name no one
_LONGER_NAME = re.compile(r" (?:de |van |von )?[A-Z][a-z]")  # a name's next word that makes it a longer one
_CAPITALS = re.compile(r"[A-Z]{2,}")
_ROMAN = re.compile(r"[IVXLC]{2,}")
# "a wit.' But", "didst thou?—Dost not think"
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\"\u201c\u201d(][\'\u2019\"\u201d\u2014]?\s*|\n\s*)$")
# a clause: to its punctuation, "--", a table cell's "|" or a code span's "`", or a line break that ends a
# paragraph or starts a list item, table row or heading (a line break inside a sentence is only wrapping)
_SENTENCE = re.compile(
    r"(?:[^.!?;:,_\"\u201c\u201d()\u2014|`\n-]|-(?!-)|\n(?![ \t]*(?:\n|[|#>*+-]|\d+[.)])))+"
)
# words a relation does not end with: a modal, a negation or an adverb says nothing without its verb
# ("Jane | could | not help saying", "Stubb | now | cried to the bowsman"); most words in -ly are adverbs
_BEFORE_A_VERB = frozenset(
    "can could will would shall should may might must not never also still now here then there thereby thus "
    "sometimes often always soon only even just already again once yet ever seldom rarely hardly scarcely "
    "almost quite rather too very so".split()
)
_VERBS_IN_LY = frozenset(
    "reply rely apply supply imply comply multiply fly ally rally tally sully bully".split()
)
# words a relation does not end with: they open the noun phrase after them ("made no | answer")
_DETERMINERS = frozenset(
    "the a an his her their its my your our this that these those no some any every each".split()
)
# words that open a clause inside an object: an object the cap cuts ends before the last of them ("for Wickham's
# absence | than if her first surmise"; "happy manners | as may ensure")
_SUBORDINATORS = frozenset(
    "than as that which who whom whose if whether because though although unless whereas when where while whilst "
    "until till".split()
)
_COMPARATIVES = frozenset("more less rather other sooner fewer".split())  # what "than" completes
_PREPOSITIONS = frozenset(
    "of in on at to for from with by into upon during about over under through within without between among "
    "against toward towards".split()
)
# words an object does not end with ("in the", "of", "than if"): a phrase cut there says nothing
_OPEN_WORDS = _SUBORDINATORS | _PREPOSITIONS | frozenset(
    "the a an and or but nor his her their its my your our after before like this these those".split()
)
# a fenced code block of Markdown runs from a line that opens with ``` to the next (or the passage's end: it
# may close in the next chunk)
_FENCE_LINE = re.compile(r"[ \t]*```")
_LINE_LEAD = "\"'\u201c\u2018("  # what may come before a line's first word: an opening quote or bracket
_LINE_START = re.compile(rf"[{_LINE_LEAD}]*(\w)")  # a line's first letter
_ENDS_SENTENCE = re.compile(r"[.!?:][\"'\u201d\u2019)]*$")
VERSE_LINES = 8
_MARKDOWN_HEADING = re.compile(r"[ \t]{0,3}#{1,6}[ \t]")
_TITLE_SMALL_WORDS = frozenset("a an the and or nor but of to in on at by for with from as into upon".split())
_QUOTE_MARK = re.compile("[\"\u201c\u201d\u2018]|(?<!\\w)'|'(?!\\w)")
_LINE = re.compile(r"[^\n]*\n|[^\n]+$")
_CONJUNCTIONS = frozenset("and or nor but".split())
_CLAUSE_OPENERS = _SUBORDINATORS - {"than", "as"}  # "is as tall as", "is more than" stay relations
_SPLIT_WORDS = MAX_RELATION_WORDS + MAX_OBJECT_WORDS + 1  # one word past the longest line: was the object cut?
# a clause's first word after its subject that says the name is no subject: "with Captain Bildad, to see the
# Pequod", "Jane, his sister", "Mr. Darcy, in the garden"; a subject pronoun: the name is put first as the
# object ("Mr. Darcy they had seen only at church"); "there": the name ends a phrase before the clause
# ("Between him and Darcy there was a very steady friendship"); "being", "having": a phrase of its own, no
# clause ("Were the world mine, Demetrius being bated, ...", "Mr. Darcy having left the room, they ...")
_NO_PREDICATE = _DETERMINERS | _PREPOSITIONS | frozenset("i we you he she they there being having".split())
# titles that are abbreviations: an object ending on one ("kind to Mr.") is a name cut off ("her father" is not)
_ABBREVIATIONS = frozenset("mr mrs ms messrs dr st mme mlle".split())
_POSSESSIVE = re.compile(r"['\u2019]s$")
_FREE = r"[^| \n]+( [^| \n]+){0,7}"  # one to eight words without "|" or a line break
_RELATION = r"[a-z]+( [a-z]+){0,3}"


def names_in(text: str) -> list[str]:
    """Capitalised names in `text` ("Mr. Darcy", "Elizabeth Bennet").

    A capital tells a name only inside a sentence: at a sentence's start, a first word the text also writes in
    lower case ("To", "My") is dropped, and a single word seen only there ("Since") is no name. In verse, where
    every line starts with a capital, so is a first word at a line's start that the text never capitalises
    inside a line ("Seem'd Athens as a paradise to me" names Athens)."""
    lowercase = {w.casefold() for w in _WORD.findall(text) if w[0].islower()}
    midline = _capitalised_inside_lines(text) if _is_verse(text) else None
    found, inside = set(), set()
    for m in _NAME.finditer(text):
        # _italics_; "--" is a dash, not part of the name ("London--his")
        words = _split_at_sentence_end([w.strip("_") for w in m.group().split("--")[0].split()])
        # a passage (a chunk) may start with a space before its first sentence
        at_start = (
            bool(_SENTENCE_START.search(text[max(0, m.start() - 3) : m.start()]))
            or not text[: m.start()].strip()
        )
        opened = False  # after "Till", "Let", "If": the name does not start the sentence ("Till Elizabeth")
        while words and (
            _POSSESSIVE.sub("", words[0]).casefold() in _NOT_NAMES  # "That's", "What's"
            or (at_start and (words[0].casefold() in lowercase or words[0] in OPENERS))
            or (midline is not None and _at_line_start(text, m.start()) and words[0] not in midline)
        ):  # a sentence's opener is no part of a name ("When Mrs. Bennet")
            opened = opened or words[0].casefold() in _NEVER_NAMES
            words.pop(0)
        # "Dame Isabella's Inquisition" is Dame Isabella's: a possessive ends the name
        ends = next((i + 1 for i, w in enumerate(words[:-1]) if _POSSESSIVE.search(w)), len(words))
        words = words[:ends]
        if not words or words[-1].rstrip(".").casefold() in TITLES or _NARRATOR.match(words[0]):
            continue
        if len(words) == 1 and _ROMAN.fullmatch(words[0].rstrip(".")):  # "IV" of "CHAPTER IV"
            continue
        if any(_CAPITALS.fullmatch(w.rstrip(".")) and w.rstrip(".").casefold() in lowercase for w in words):
            continue  # a word the text also writes in lower case, in capitals: a heading ("CHAPTER IV"), not "NASA"
        name = _POSSESSIVE.sub("", " ".join(words)).rstrip("'\u2019")  # "Jane's" is Jane
        found.add(name)
        if not at_start or len(words) > 1 or opened:
            inside.add(name)
    return sorted(n for n in found if n in inside)


def _is_verse(text: str) -> bool:
    """Whether `text` is verse: of its lines that go on from a line ending no sentence, at least VERSE_LINES,
    nearly all start with a capital. Such a line of prose starts in lower case, whether wrapped at a fixed width
    or at each clause ("we read the file,\nthen write it")."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    starts = [
        m.group(1)
        for before, line in zip(lines, lines[1:], strict=False)
        if not _ENDS_SENTENCE.search(before) and (m := _LINE_START.match(line))
    ]
    return len(starts) >= VERSE_LINES and sum(c.isupper() for c in starts) >= 0.8 * len(starts)


def _capitalised_inside_lines(text: str) -> set[str]:
    """The capitalised words of `text` that some line has after its start ("Stand forth , Demetrius")."""
    return {m.group(1) for m in re.finditer(r"\S[ \t]+([A-Z][\w'\u2019-]*)", text)}


def _at_line_start(text: str, at: int) -> bool:
    return not text[text.rfind("\n", 0, at) + 1 : at].strip(" \t" + _LINE_LEAD)


def _split_at_sentence_end(words: list[str]) -> list[str]:
    """The words up to the first that ends a sentence ("Melk." in "Melk. But"); a title's dot does not."""
    for i, w in enumerate(words):
        if w.endswith(".") and w.rstrip(".").casefold() not in TITLES:
            return words[:i] + [w.rstrip(".")]
    return words


def phrases_in(text: str, max_words: int = MAX_PHRASE_WORDS) -> list[str]:
    """Every run of 1..max_words consecutive words inside a sentence of `text`."""
    phrases = set()
    for sentence in _SENTENCE.findall(text):
        words = _WORD.findall(sentence)
        for i in range(len(words)):
            for n in range(1, min(max_words, len(words) - i) + 1):
                phrases.add(" ".join(words[i : i + n]))
    return sorted(phrases)


def fact_grammar(
    mode: str,
    max_lines: int,
    passage: str = "",
    known: list[str] | tuple[str, ...] = (),
    relations: tuple[str, ...] | None = None,
    antecedents: dict[int, str] | None = None,
    places: frozenset[str] | set[str] = frozenset(),
) -> str:
    """The llguidance grammar of fact lines about `passage` (see the module docstring); `known`: names met
    before it, which its pronouns may resolve to; `antecedents`: the one name a pronoun at that offset of the
    passage resolves to, where it is known (text mode without a vocabulary); `places`: names the document has
    shown to be places ("at Rosings"), never a line's subject.

    At most `max_lines` lines, except in text mode without a vocabulary, where the lines follow the passage's
    order, each place of it used once (so no line repeats), and GrammarProcessor enforces the bound."""
    if mode not in ("text", "lines"):
        raise ValueError(f"facts_grammar must be one of {GRAMMARS}, got {mode!r}")
    # the delimiter goes inside each lexeme: llguidance's lexer is greedy, so a field that may go on with a
    # space ("Maria" / "Maria Lopez") must not be followed by a separate " | " token
    relation = _one_of(relations, " | ") if relations else rf"/{_RELATION} \| /"
    subject, obj = rf"/{_FREE} \| /", rf"/{_FREE}\n/"
    if mode == "text":
        names = sorted((set(names_in(passage)) | set(known)) - set(places))
        if not relations:  # one line for each sentence with a subject, in order: every sentence is covered
            anchors = copied_anchors(passage, names, antecedents, known)[:max_lines] if names else []
            rules = [f"L{k}: {_one_of(lines, '')}" for k, lines in enumerate(anchors)]
            start = " ".join(f"L{k}" for k in range(len(anchors))) or NO_LINES
            return llguidance.grammar_from("lark", f"start: {start}\n" + "".join(f"{r}\n" for r in rules))
        if not names:  # no name to be a subject: nothing to copy, and free words would be invented ones
            return llguidance.grammar_from("lark", f"start: {NO_LINES}\n")
        subject = _one_of(names, " | ")
        obj = _one_of(sorted(set(phrases_in(passage)) | set(names)), "\n")
    lark = f"start: line{{1,{max_lines}}}\nline: SUBJECT RELATION OBJECT\n"
    lark += f"SUBJECT: {subject}\nRELATION: {relation}\nOBJECT: {obj}\n"
    return llguidance.grammar_from("lark", lark)


def prose_grammar(names: list[str] | tuple[str, ...]) -> str:
    """Prose whose capitalised words are those of `names` (the names the document has said) or a common
    sentence opener: a summary can then name no one the document did not. Words are separate lexemes, so
    "Elizabeth" may end a name or go on to "Elizabeth Bennet"."""
    capitals = sorted({w for n in names for w in n.split() if w[:1].isupper()} | set(OPENERS))
    word = f"{_one_of(capitals, '')} | /[a-z][a-z'-]*/ | /[0-9]+/"
    lark = f"start: WORD (GAP WORD)* GAP?\nWORD: {word}\nGAP: /[ .,;:!?\"'()\\n-]+/\n"
    return llguidance.grammar_from("lark", lark)


def prose_of(passage: str, in_code: bool = False) -> tuple[str, bool]:
    """`passage` with its fenced code blocks blanked (spaces: its offsets and line breaks stay), and whether it
    ends inside one. `in_code`: it starts inside one, opened in an earlier chunk; a chunk cut inside a code
    block would otherwise read the rest of it as prose ("# local Ray, CPU" then a command: "CPU | python | m jobs")."""
    out = []
    lines = [m.group() for m in _LINE.finditer(passage)]
    for i, line in enumerate(lines):
        fence = _FENCE_LINE.match(line) is not None
        alone = (i == 0 or not lines[i - 1].strip()) and (i + 1 == len(lines) or not lines[i + 1].strip())
        heading = not in_code and alone and _is_heading(line)
        out.append(re.sub(r"[^\n]", " ", line) if in_code or fence or heading else line)
        in_code ^= fence
    return "".join(out), in_code


def _is_heading(line: str) -> bool:
    """Whether a line that stands alone is a heading, no prose: a Markdown heading, or up to 16 words, no quote,
    every word capitalised but numbers and the small words of a title ("CHAPTER 100. Leg and Arm."; "The Pequod,
    of Nantucket, Meets the Samuel Enderby, of London.": "Meets" is no one who acts)."""
    if _MARKDOWN_HEADING.match(line):
        return True
    words = _WORD.findall(line)
    capitalised = [w for w in words if not w[0].isdigit() and w.casefold() not in _TITLE_SMALL_WORDS]
    return (
        len(capitalised) >= 2
        and len(words) <= 16
        and not _QUOTE_MARK.search(line)
        and all(w[0].isupper() for w in capitalised)
    )


def subject_spans(
    passage: str, names: list[str], opener: re.Pattern | None = None
) -> list[tuple[int, int, str | None]]:
    """(start, end, name) of each clause subject of `passage`, in no order: a name of `names` that opens a
    clause (or follows a match of `opener` ending just before it: "When Mrs. Bennet"), and "he"/"she"
    opening one (name None). The one definition of a subject, for the fact lines and the entity states. Text
    in a fenced code block is no prose: a shell comment's "CPU" is no subject of the command after it."""
    prose, _ = prose_of(passage)
    found = []
    longest_first = sorted(names, key=len, reverse=True)  # "Mrs. Hurst" before "Hurst"
    for name in names:
        # a name with a possessive ("Bingley's first choice") or in a compound ("GPU-only tests") is not the
        # subject, the phrase it opens is
        for m in re.finditer(rf"(?<![\w.]){re.escape(name)}(?![\w'\u2019]|-\w)", passage):
            if _after_title(passage, m.start()):  # "Darcy" of "Mr. Darcy": the title's dot ends no sentence
                continue
            if name in GODS and _WISH.match(passage, m.end()):
                continue
            if _LONGER_NAME.match(passage, m.end()):  # "Ray" of "Ray Train": the longer name is the subject
                continue
            if _last_of_a_compound_in_no_clause(passage, m.start(), longest_first):  # "Atlantics and Pacifics"
                continue
            if _after_a_title_alone(passage, m.start(), name):  # "Mr. and Mrs. Collins have": two people, not one
                continue
            if (
                _opens_clause(passage, m.start())
                or (opener is not None and opener.search(passage, max(0, m.start() - 10), m.start()))
                or _after_an_opening_phrase(passage, m.start(), m.end())
            ):
                found.append((m.start(), m.end(), name))
    # "he's left his tambourine" is no clause of "he": its words would start with "s"
    for m in re.finditer(r"(?<!\w)(?:he|she|He|She)(?![\w'\u2019])", passage):
        if _opens_clause(passage, m.start()):
            found.append((m.start(), m.end(), None))
    return [f for f in found if prose[f[0]] == passage[f[0]]]  # in code its first letter is blanked


def copied_anchors(
    passage: str,
    names: list[str],
    antecedents: dict[int, str] | None = None,
    known: list[str] | tuple[str, ...] | None = None,
) -> list[list[str]]:
    """The fact lines each sentence of the passage allows, in reading order: where a name opens a clause, that
    name and the words that follow it, split into relation and object; where "he"/"she" does, its antecedent
    (by offset) if known, else any of `names` said before it (in `known`, the names of the chunks before, or
    earlier in the passage; all of `names` when `known` is None; where `antecedents` are given, only those whose
    title or given name has the pronoun's gender), and what follows. A sentence without such a subject has no
    line."""
    found = []
    places = {n.split()[0] for n in names if is_place(n)}  # "Rosings" of "Rosings Park" is a place too
    for start, end, name in subject_spans(passage, names):
        if name is not None:
            found.append((start, _splits(name, _words_after(passage, end, _SPLIT_WORDS))))
            continue
        rests = [line.split(" | ", 1)[1] for line in _splits("x", _words_after(passage, end, _SPLIT_WORDS))]
        chosen = (antecedents or {}).get(start)
        if chosen == "":  # the entity states know no one it can mean: no line rather than a guess
            continue
        pronoun = passage[start:end].casefold()
        # "he" means someone said before it: "She has only one daughter" is not the Inspector named after it
        said = [n for n in names if known is None or n in known or -1 < passage.find(n) < start]
        said = [n for n in said if not is_place(n) and n not in places]
        if chosen:
            fits = [chosen]
        elif antecedents is not None:  # the entity states know no one of its gender: a name that says it is one
            fits = [n for n in said if (_title_gender(n) or given_name_gender(n)) == pronoun]  # not "Syracuse"
        else:  # the model chooses among the names said
            fits = [n for n in said if _title_gender(n) in ("", pronoun)]
        found.append((start, [f"{n} | {rest}" for n in fits for rest in rests]))
    ends = [m.end() for m in re.finditer(r"[.!?]", passage)]
    sentences: dict[int, list[str]] = {}
    for at, lines in sorted(found, key=lambda x: x[0]):
        sentences.setdefault(bisect.bisect(ends, at), []).extend(lines)
    anchors, seen = [], set()
    for _, lines in sorted(sentences.items()):
        lines = [line for line in dict.fromkeys(lines) if line not in seen]  # a line is allowed once
        seen.update(lines)
        if lines:
            anchors.append(lines)
    return anchors


def is_place(name: str) -> bool:
    """Whether a name of two words or more ends with a word that makes it a place ("Rosings Park"): never the
    "he" or "she" of a clause."""
    words = name.split()
    titled = words[0].rstrip(".").casefold() in TITLES  # "Mr. Park" is a person
    return len(words) > 1 and not titled and words[-1].casefold() in _PLACE_WORDS


def _title_gender(name: str) -> str:
    """ "he" or "she" when the name's title says so ("Mrs. Bennet", "Captain" says nothing), else ""."""
    title = name.split()[0].rstrip(".").casefold() if " " in name else ""
    return "he" if title in HE_TITLES else "she" if title in SHE_TITLES else ""


def _after_title(passage: str, at: int) -> bool:
    """Whether the word before position `at` is a title ("Mr. " before "Darcy")."""
    before = re.search(r"([A-Za-z]+)\.?\s+$", passage[max(0, at - 14) : at])
    return before is not None and before.group(1).casefold() in TITLES


def _after_a_title_alone(passage: str, at: int, name: str) -> bool:
    """Whether the titled `name` at `at` follows a title of its own joined by "and" ("Mr. and Mrs. Gardiner",
    "Colonel and Mrs. Forster"): a couple ("the Captain and Mrs. Hussey" are two people, the last of them a
    subject as in any compound)."""
    before = re.search(r"(\S*\s+)?\b([A-Za-z]+)\.?\s+(?:and|&)\s+$", passage[max(0, at - 24) : at])
    return (
        before is not None
        and before.group(2).casefold() in TITLES
        and (before.group(1) or "").strip().casefold() != "the"
        and name.split()[0].rstrip(".").casefold() in TITLES
    )


def _last_of_a_compound_in_no_clause(passage: str, at: int, longest_first: list[str]) -> bool:
    """Whether the name at `at` ends a compound of names (`longest_first`) whose first opens no clause: "with Jane
    and Elizabeth", "Whole Atlantics and Pacifics seemed passed" name no one who acts ("Mary and Tom sold the
    mill" does)."""
    window = max(0, at - 8)
    joined = re.search(r"\s+(?:and|or)\s+$", passage[window:at])
    if joined is None:
        return False
    end = window + joined.start()  # where the word before "and" ends
    for name in longest_first:
        start = end - len(name)
        if start >= 0 and passage[start:end] == name and (start == 0 or not passage[start - 1].isalnum()):
            return not _opens_clause(passage, start)
    return False


def _opens_clause(passage: str, at: int) -> bool:
    """Whether position `at` starts a sentence or clause, where a name or pronoun is its subject."""
    return _CLAUSE_START.search(passage, max(0, at - 10), at) is not None


def _after_an_opening_phrase(passage: str, at: int, end: int) -> bool:
    """Whether the name at `at:end` is the subject after a sentence's opening phrase ("In a few days Mr. Bingley
    returned"): only before a verb of one person in the past ("In old England the greatest lords", "For some of
    these same Quakers are" are no such clause)."""
    if _INTRODUCED.search(passage, max(0, at - 60), at) is None:
        return False
    verb = re.match(r" ([a-z]+)\b", passage[end : end + 20])
    return verb is not None and (verb[1] in _PAST_VERBS or verb[1].endswith("ed"))


def _words_after(passage: str, at: int, limit: int = MAX_RELATION_WORDS + MAX_OBJECT_WORDS) -> list[str]:
    """The words from `at` to the end of its clause, at most `limit` of them."""
    clause = _SENTENCE.match(passage, at)
    words = _WORD.findall(clause.group()) if clause else []
    return words[:limit]


def _splits(subject: str, words: list[str]) -> list[str]:
    """The lines of one clause: where the relation ends is the model's choice; the object then runs on to the
    clause's end (at most MAX_OBJECT_WORDS words), for a short object ("keeps | the telescope") drops the place
    that follows it."""
    out = []
    # "Mrs. Hurst and Miss Bingley", "JSONL or Parquet": the first of a compound or a list says nothing alone
    if words and (words[0].casefold() in _NO_PREDICATE or words[0].casefold() in _CONJUNCTIONS):
        return out
    # "Her feelings as she read were scarcely to be defined": the subject's clause ended at its verb, and the
    # sentence's own verb follows it; no line ("she | read | were scarcely to be defined")
    if len(words) > 1 and words[1].casefold() in _BE:
        if not (words[0].casefold() in _BE or _before_a_verb(words[0])):
            return out
    for i in range(1, min(MAX_RELATION_WORDS, len(words) - 1) + 1):
        if words[i - 1].casefold() in _DETERMINERS:  # "keeps the | green journal" splits a noun phrase
            continue
        if _before_a_verb(words[i - 1]):  # "could | not help saying": the relation goes on to its verb
            continue
        if words[i].casefold() in ("not", "never"):  # "does | not know": the negation goes with its verb
            continue
        if words[i - 1].casefold() in ("and", "or", "nor"):  # "smiled and | said nothing": cut mid-list
            continue
        if words[i].casefold() == "but":  # "being | but its arms": "but" is "only" there, part of the relation
            continue
        if _CLAUSE_OPENERS.intersection(w.casefold() for w in words[1:i]):  # "asked her if she | and her ..."
            break  # a relation ends before a clause it opens: the longer ones go past it too
        if words[i - 1][:1].isupper() and words[i][:1].isupper():  # "returned to Charlotte | Lucas"
            continue  # cuts a name
        j = min(i + MAX_OBJECT_WORDS, len(words))
        if j < len(words):  # the clause goes on past the cap: end before the last clause it opened (2+ words on)
            j = next((k for k in range(j - 1, i + 1, -1) if words[k].casefold() in _SUBORDINATORS), j)
            if j == i + MAX_OBJECT_WORDS and _goes_on(words[j]):
                # the cap cut a phrase ("into the blessed | light"): end before its preposition
                j = next((k for k in range(j - 1, i + 1, -1) if words[k].casefold() in _PREPOSITIONS), j)
        # nor does it end on "in the", on a title ("kind to Mr."), or on a comparison cut from its "than"
        while j > i and (words[j - 1].casefold() in _OPEN_WORDS or words[j - 1].casefold() in _ABBREVIATIONS
                         or _cut_name(words, j) or _cut_comparison(words, j)):  # fmt: skip
            j -= 1
        if j > i:
            out.append(f"{subject} | {' '.join(words[:i])} | {' '.join(words[i:j])}\n")
    return out


def _before_a_verb(word: str) -> bool:
    """Whether `word` needs a verb after it in a relation: a modal, a negation, an adverb."""
    word = word.casefold()
    return word in _BEFORE_A_VERB or (len(word) > 4 and word.endswith("ly") and word not in _VERBS_IN_LY)


def _goes_on(word: str) -> bool:
    """Whether the phrase before `word` goes on in it: a lower-case word that neither opens a phrase or clause
    nor is an adverb ("the blessed | light", not "the drawing-room | again")."""
    return word[:1].islower() and word.casefold() not in _OPEN_WORDS and not _before_a_verb(word)


def _cut_name(words: list[str], j: int) -> bool:
    """Whether words[:j] ends on a title whose name follows ("to their carriage Miss | Bennet")."""
    return words[j - 1].rstrip(".").casefold() in TITLES and j < len(words) and words[j][:1].isupper()


def _cut_comparison(words: list[str], j: int) -> bool:
    """Whether words[:j] ends on the first half of a comparison ("called at the Parsonage more | than once")."""
    return words[j - 1].casefold() in _COMPARATIVES and j < len(words) and words[j].casefold() == "than"


def _one_of(options, end: str) -> str:
    alternatives = "(" + " | ".join(json.dumps(o) for o in options) + ")"
    return f"{alternatives} {json.dumps(end)}" if end else alternatives


class FactsGrammar:
    """The tokenizer converted once for llguidance (about a second); a processor per generate call."""

    def __init__(self, tokenizer, vocab_size: int):
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)
        self.hf_tokenizer, self.vocab_size = tokenizer, vocab_size

    def processor(self, grammars: list[str], max_lines: int) -> "GrammarProcessor":
        return GrammarProcessor(self.tokenizer, grammars, self.vocab_size, max_lines, self.newlines)

    @cached_property
    def newlines(self) -> torch.Tensor:
        """(V,) bool: the tokens whose text holds a line break."""
        ends = torch.zeros(self.vocab_size, dtype=torch.bool)
        for i in range(min(self.vocab_size, len(self.hf_tokenizer))):
            ends[i] = "\n" in self.hf_tokenizer.decode([i])
        return ends


class GrammarProcessor(LogitsProcessor):
    """One llguidance matcher per batch row: tokens the row's grammar does not allow get -inf.

    EOS is allowed only after a whole line, and is the only choice after `max_lines` lines. For one call: as
    transformers' processor, or as the `Constraint` of lookup decoding (memgpt/lookup.py), not both."""

    def __init__(
        self, tokenizer, grammars: list[str], vocab_size: int, max_lines: int, newlines: torch.Tensor
    ):
        self.matchers = [llguidance.LLMatcher(tokenizer, g, log_level=0) for g in grammars]
        for m in self.matchers:
            if m.is_error():
                raise ValueError(f"fact grammar does not compile: {m.get_error()}")
        self.bitmask = llguidance.torch.allocate_token_bitmask(len(grammars), vocab_size)
        self.bits = torch.arange(32, dtype=torch.int32)
        self.eos = tokenizer.eos_token
        self.max_lines, self.newlines = max_lines, newlines
        self.lines = torch.zeros(len(grammars), dtype=torch.long)
        self.started = False
        self._mask: dict[int, torch.Tensor | None] = {}  # row -> its mask until it accepts a token (lookup)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.started:  # the token chosen at the last step
            for row, token in enumerate(input_ids[:, -1].tolist()):
                self.accept(row, token)
        self.started = True
        allowed = torch.stack([self.allowed(row) for row in range(len(self.matchers))])  # (B, V)
        return scores.masked_fill(~allowed[:, : scores.shape[-1]].to(scores.device), float("-inf"))

    # ---- the Constraint of lookup decoding (memgpt/lookup.py), a row at a time; __call__ uses it too ----

    def allowed(self, row: int) -> torch.Tensor:
        """(V,) bool: what the row's grammar allows next (llguidance's mask: of the tokens that spell a forced
        text, only the one that spells most of it, where `validate_tokens` takes any)."""
        if self._mask.get(row) is None:
            if self.lines[row] >= self.max_lines:
                only = torch.zeros(self.bitmask.shape[1] * 32, dtype=torch.bool)
                only[self.eos] = True
                self._mask[row] = only
            else:
                llguidance.torch.fill_next_token_bitmask(self.matchers[row], self.bitmask, row)
                self._mask[row] = ((self.bitmask[row].unsqueeze(-1) >> self.bits) & 1).bool().view(-1)
        return self._mask[row]

    def allows(self, row: int, token: int) -> bool:
        return bool(self.allowed(row)[token])

    def accept(self, row: int, token: int) -> None:
        self._mask[row] = None
        self.lines[row] += bool(self.newlines[min(token, len(self.newlines) - 1)])
        if not self.matchers[row].is_stopped():
            self.matchers[row].consume_token(token)

    def valid_prefix(self, row: int, draft: list[int]) -> int:
        """How many tokens of `draft` the grammar allows in turn (none past the line that fills `max_lines`,
        but its end), as `validate_tokens` does: a draft token the mask leaves out is rejected when verified."""
        n = self.matchers[row].validate_tokens(draft) if draft else 0
        lines = int(self.lines[row])
        for i, token in enumerate(draft[:n]):
            if lines >= self.max_lines:
                return i + (token == self.eos)
            lines += bool(self.newlines[min(token, len(self.newlines) - 1)])
        return n

    def forced(self, row: int) -> list[int]:
        """The tokens the row's grammar allows one way only, next."""
        m = self.matchers[row]
        return [] if m.is_stopped() or self.lines[row] >= self.max_lines else list(m.compute_ff_tokens())
