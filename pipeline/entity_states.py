"""Entity states: what the document has said each person did, kept chunk by chunk, and the person a pronoun means.

Part of a document's memory M_t beside the model's: for every name that has been the subject of a clause
("Inspector Halvorsen keeps the ledger in ..."), the content words of its latest clauses and where it last
acted; and for every word, in how many sentences of the document it has occurred. A clause opened by "he" or
"she" goes to the person whose clauses share the most *rare* words with it (words seen in at most RARE
sentences of the document before it), and among equals, to the one who acted last: "Years later, he moved the ledger to
Tromsø." goes to the one person who kept a ledger, pages later, past the names in between; "He smiled." goes to
the last person who did anything (if a clause named it in the last RECENT sentences: else the person just
named, "they now saw Mr. Darcy. They stood aloof while he was talking", or no one), of the
pronoun's gender where it is known: by the person's title ("Mrs." is not "he"), its titled namesakes ("Darcy" is
a "he" where the text names "Mr. Darcy" at least as often as "Miss Darcy"), its given name ("Jane", "Charles":
English given names of one gender, from Faker's census lists) or its reflexives ("Mary hid herself"). Someone
unnamed who acts ("the whale rose") is in the scene too, as a stand-in: a pronoun that goes to it gets no one.
A one-word name the text puts where something is or someone goes ("at Rosings", "came to Rosings") more often
than it acts is a place and never acts. A pronoun never means a name later in its own clause ("she said very
stiffly to Elizabeth"), one in the quote it tags ("“... Moby Dick ...,” he shouted"), nor, inside a quote, the
quote's speaker or whom it addresses.

Measured (docs/knowledge.md): on facts planted in real book text and changed chunks later by a pronoun
sentence, 51 of 55 follow-ups resolved (the last person who acted: 6); on subject pronouns of the books
themselves, judged by hand, 9 of 20, as many as the last person who acted; then given names and namesakes
took wrong subjects from 116 to 11 among the 139 of 1,150 resolutions they changed. Bounded: WORDS words per person,
PEOPLE people, and the word counts of the document's vocabulary (which grows far slower than its length).
"""

import re
from dataclasses import dataclass, field

from memgpt.archival import SENTENCE_END
from pipeline.entities import GODS, given_name_gender, is_given_name
from pipeline.grammar import (
    _WORD,
    _after_title,
    _title_gender,
    _words_after,
    is_place,
    subject_spans,
)

WORDS = 64  # content words kept per person, the latest
PEOPLE = 512  # people kept, those who acted last
RARE = 3  # a word in at most this many sentences of the document so far is rare enough to tell people apart
SCENE = 10  # a rare word said in the last this many sentences is the scene's topic, not a sign of one person
# with no rare word in common, a pronoun means the one who acted last only if a clause named it at most this
# many sentences before: "he" pages after anyone of his kind was named is someone not named yet, not a guess
RECENT = 12
# a sentence's first word that opens a clause before its subject ("When Mrs. Bennet was told of this, she ...";
# "Let Wickham be your man. He is a pleasant fellow": Wickham is the one in the scene, not the speaker)
_OPENER = re.compile(
    r"\b(?:When|While|As|After|Before|Until|Till|Since|If|Because|Though|Although|Then|But|And|Let)\s+$"
)
# someone unnamed who acts: "the whale rose again; he swam away", "the harpooneer ... he is expected to pull his
# oar". Such a clause's subject is a stand-in of its gender: a "he" or "she" after it goes to no one, not to the
# last person named before it. Nouns that a pronoun of one gender follows in novels; "it" nouns are left out, and
# so are "the gentleman" and "the lady", which are as often a named person again ("The gentleman experienced
# some change of feeling; he drew back his chair" is Mr. Darcy).
UNNAMED_HE, UNNAMED_SHE = "\x00he", "\x00she"
_STAND_INS = frozenset((UNNAMED_HE, UNNAMED_SHE))
_HE_NOUNS = (
    "man boy fellow husband father son brother uncle nephew king prince lord master mate sailor "
    "seaman harpooneer harpooner headsman steersman helmsman captain skipper landlord stranger whale"
)
_SHE_NOUNS = "woman girl wife mother daughter sister aunt niece queen princess maid housekeeper widow"
# what puts a name where something is, or where someone goes: "at Rosings", "in Meryton", "came to Longbourn",
# "her visit to Pemberley" (not "to" alone: "said to Jane")
_LOCATED = (r"(?<!\w)(?i:at|in|into|near|within|(?:came|come|comes|coming|went|go|goes|going|gone|returned|return"
            r"|returning|walked|drove|rode|travell?ed|journey|visit|way|back)\s+to)\s+")
_UNNAMED = re.compile(
    r"(?:^|[.!?;:\"\u201c\u201d]\s*|\b(?:and|but|then|when|while|as|till|until)\s+)"
    r"(?:[Tt]he|[Tt]his|[Tt]hat)\s+(?:[a-z]+\s+)?"
    rf"(?:(?P<he>{'|'.join(_HE_NOUNS.split())})|(?P<she>{'|'.join(_SHE_NOUNS.split())}))(?=\s+[a-z])"
)
# a name that something is likened to, not someone in the scene: "Like Mark Antony, ... he floats", "a Perseus"
_LIKENED = r"\b(?:[Ll]ike|an?)\s+"
# the speaker after a quote: "said Elizabeth", "cried Mr. Bennet"
_SAYS = "said|cried|replied|answered|asked|continued|added|returned|exclaimed|thought|observed"
_SAID = re.compile(rf"\b(?:{_SAYS})\s+$")
_QUOTED = re.compile('\u201c[^\u201d]*(?:\u201d|$)|"[^"]*(?:"|$)')
_QUOTE = re.compile("[\"\u201c\u201d]")
# a pronoun's own clause ends at the latest here; a quote closing just before the pronoun is the one it tags; and
# its tag may go on to a quote: "he cried, “which does one good"
_CLAUSE_END = re.compile("[,;:.!?\"\u201c\u201d\u2014()]|\n\n")
_TAGGED_QUOTE = re.compile("(?:\u201d|(?<=[,.!?\u2014])\")\\s*$")
_QUOTE_OPENED = re.compile("[^.!?\"\u201c\u201d\n]*?[,:\u2014]\\s*[\"\u201c]")
# a person's own pronouns in its clause: "Mary hid herself" ("his" and "her" are as often someone else's:
# "Elizabeth looked at his face" made Elizabeth a "he")
_HE_WORDS, _SHE_WORDS = frozenset(("himself",)), frozenset(("herself",))
# a sentence ends at . ! ? (and a closing quote), not after a title ("Mrs. Bennet") or an initial
_SENTENCE = re.compile(r".+?(?:" + SENTENCE_END.pattern + r"|$)", re.S)
# words that say nothing of what a clause is about: they never tell two people apart
_FUNCTION_WORDS = frozenset(
    "a an the and or but of in on at to for from with by as is was were be been had has have did do does not "
    "no it its he she his her him they them their this that then there so very all any some into upon out up "
    "would could should will shall may might must which who whom what when where how".split()
)


def _interrupted_after_opener(passage: str, start: int, end: int) -> bool:
    """Whether the name at `start:end` follows an opener and a comma interrupts its clause ("If Elizabeth, when
    ..."): not a name addressed or put beside another ("Captain Mayhew, stand by"; "his friend, Mr. Wickham, who
    ..."). The opener is found as `subject_spans` finds it; a place in `here` is left out by `_may_be`."""
    return passage[end : end + 1] == "," and _OPENER.search(passage, max(0, start - 10), start) is not None


def _mentions(passage: str, names: list[str], subjects: set[int]) -> list[tuple[int, str, bool]]:
    """(offset, name, spoke) of each mention of a name that opens no clause ("saw Mr. Darcy", "Bingley's
    sisters"), leaving out where it is put as a place ("at Rosings", "came to Longbourn"); `spoke`: it is the
    speaker after a quote ("cried Elizabeth, when she had finished"), the subject of its sentence."""
    found = []
    for name in names:
        for m in re.finditer(rf"(?<![\w.]){re.escape(name)}(?![\w]|-\w)", passage):
            before = passage[max(0, m.start() - 20) : m.start()]
            if (
                m.start() not in subjects
                and not _after_title(passage, m.start())
                and not re.search(rf"(?:{_LOCATED}|{_LIKENED})$", before)
            ):
                found.append((m.start(), name, _SAID.search(before) is not None))
    return found


def _not_it(passage: str, start: int, end: int, names: list[str]) -> set[str]:
    """The names a subject pronoun at `start:end` cannot mean: one later in its own clause ("she said very stiffly
    to Elizabeth"), and one in the quote its clause tags, just before it or opened in its sentence ("“... Moby
    Dick that brought me to this dead stump,” he shouted": a speaker names whom he speaks to or of, not
    himself)."""
    clause = _CLAUSE_END.search(passage, end)
    spans = [(end, clause.start() if clause else len(passage))]
    before = _TAGGED_QUOTE.search(passage, max(0, start - 4), start)
    if before:  # the quote that closes just before the pronoun
        opened = max(passage.rfind("\u201c", 0, before.start()), passage.rfind('"', 0, before.start()))
        if opened >= 0 and "\n\n" not in passage[opened : before.start()]:
            spans.append((opened, before.start()))
    after = _QUOTE_OPENED.match(passage, end)
    if after:  # "he cried, “which does one good"
        closed = _QUOTE.search(passage, after.end())
        spans.append((after.end(), closed.start() if closed else len(passage)))
    not_it = {n for n in names for a, b in spans
              if re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", passage[a:b])}  # fmt: skip
    quote = _quote_around(passage, start)
    if quote is not None:  # "“Oh, Ahab, Ahab, lo, thy work. ... He turns to meet us!”": not whom it is said to
        outside = _QUOTED.sub(lambda m: " " * len(m.group()), passage[quote[2] : quote[3]])
        for n in names:
            name = re.escape(n)
            if re.search(rf"(?:{_SAYS})\s+{name}(?!\w)|(?<![\w.]){name}\s+(?:{_SAYS})\b", outside) or re.search(
                rf"(?:\u201c|[,!]\s+|\b(?:Oh|O|dear)\s+){name}\s*[,!?.\u201d]", passage[quote[0] : quote[1]]
            ):
                not_it.add(n)
    return not_it


def _quote_around(passage: str, at: int) -> tuple[int, int, int, int] | None:
    """(start, end) of the quote that `at` is inside, and (start, end) of its paragraph; None outside quotes."""
    first = passage.rfind("\n\n", 0, at)
    first = 0 if first < 0 else first + 2
    last = passage.find("\n\n", at)
    last = len(passage) if last < 0 else last
    opened, closed = passage.rfind("\u201c", first, at), passage.rfind("\u201d", first, at)
    if opened <= closed:
        straight = [m.start() for m in re.finditer('"', passage[first:at])]
        if len(straight) % 2 == 0:
            return None
        opened = first + straight[-1]
    end = _QUOTE.search(passage, at, last)
    return opened, end.start() if end else last, first, last


def _joined(between: str) -> bool:
    """Whether the text between a name and a pronoun later in its sentence joins a clause of its own: "Clap eye
    on Captain Ahab, young man, and thou wilt find that he"; not a phrase put before the pronoun's clause, whose
    name is someone else ("Then turning to Mr. Bennet, he offered himself")."""
    return re.search(r"[;:]|\b(?:and|but|that|so|for)\b", between) is not None


def content_words(words: list[str]) -> list[str]:
    return [w.casefold() for w in words if w.casefold() not in _FUNCTION_WORDS and not w.isdigit()]


@dataclass
class EntityStates:
    words: dict[str, list[str]] = field(default_factory=dict)  # person -> latest content words of its clauses
    acted: dict[str, int] = field(default_factory=dict)  # person -> clauses read when it last opened one
    counts: dict[str, int] = field(default_factory=dict)  # word -> sentences of the document that hold it
    last_seen: dict[str, int] = field(default_factory=dict)  # word -> the last sentence that held it
    sentences: int = 0  # sentences read
    clauses: int = 0  # subject clauses read
    genders: dict[str, list[int]] = field(
        default_factory=dict
    )  # person -> [he, his, him] and [she, her] seen
    rare: int = RARE  # 0: the last person who acted, whatever the words and however long ago (the baseline)
    seen: dict[str, int] = field(
        default_factory=dict
    )  # person -> sentences read when it last opened a clause
    titled: dict[str, list[int]] = field(
        default_factory=dict
    )  # a titled name's last word -> passages that named it with a "he" title, with a "she" title
    placed: dict[str, list[int]] = field(
        default_factory=dict
    )  # a one-word name -> clauses it opened, mentions where something is or someone goes (_LOCATED)

    def read(self, passage: str, names: list[str]) -> dict[int, str]:
        """Read `passage` into the states: each clause whose subject is one of `names` or a pronoun, in order,
        and the words of every sentence. Returns the person each subject pronoun was resolved to, by its
        offset in `passage`."""
        # people known from earlier chunks, where this one names them only at a sentence's start (names_in then
        # cannot tell "Elizabeth" from "Since")
        names = list(dict.fromkeys([*names, *(p for p in self.acted if p in passage)]))
        self.name_titles(names)
        subjects = subject_spans(passage, names, _OPENER)
        subjects += [
            (m.start("he") if m["he"] else m.start("she"), m.end(), UNNAMED_HE if m["he"] else UNNAMED_SHE)
            for m in _UNNAMED.finditer(passage)
        ]
        sentences = [(m.end(), m.group()) for m in _SENTENCE.finditer(passage)]
        mentions = _mentions(passage, names, {s[0] for s in subjects})
        # who opened each clause: a name, a stand-in, or the pronoun itself
        openers = [(s, n if n is not None else passage[s:e].casefold()) for s, e, n in subjects]
        counted, resolved, here = 0, {}, []  # here: the people who opened a clause of the current sentence
        for start, end, name in sorted(subjects, key=lambda s: (s[0], -s[1])):
            while counted < len(sentences) and sentences[counted][0] <= start:  # the text before the clause
                self.count(sentences[counted][1])
                counted, here = counted + 1, []
            after = _words_after(passage, end)
            if not after:  # "fought in Egypt and Siberia." names the last item of a list, no one who acts
                if name and _interrupted_after_opener(passage, start, end):
                    here.append(name)  # "If Elizabeth, when he gave her the letter, ..., she": in the sentence
                continue
            pronoun = passage[start:end].casefold() if name is None else None
            if name in _STAND_INS:  # acts, in the scene, and is nobody a line can name
                self.act(name, [])
                self.seen[name] = self.sentences
                here.append(name)
                continue
            if name is not None:
                if " " not in name:  # counted first: a name taken for a place can act its way out of it
                    self.placed.setdefault(name, [0, 0])[0] += 1
                if self.is_place(name):  # "when her inquiries after Rosings were made": no one who acts
                    continue
            if pronoun:
                named = None  # the baseline (rare 0) is the last person who acted and nothing else
                not_it = _not_it(passage, start, end, names) if self.rare else set()
                if self.rare and not here:
                    since = sentences[counted - 2][0] if counted >= 2 else 0  # the sentence before this one
                    this = sentences[counted - 1][0] if counted >= 1 else 0
                    # not a speaker whose quote the pronoun is in: "said Fitzwilliam, “It is because he" is
                    # someone he speaks of
                    window = [(at, n, spoke) for at, n, spoke in mentions if since <= at < start
                              and not (spoke and len(_QUOTE.findall(passage, at, start)) % 2)]  # fmt: skip
                    named = self.named_before(
                        pronoun,
                        [n for at, n, spoke in window if spoke and at >= this and n not in not_it],
                        [who for at, who in openers if since <= at < start],
                        [n for at, n, spoke in window
                         if n not in not_it and (at < this or _joined(passage[at + len(n) : start]))],
                    )  # fmt: skip
                name = self.resolve(pronoun, content_words(after), here, named, not_it)
                if name is None:
                    continue
                resolved[start] = "" if name in _STAND_INS else name
                if not name:  # no one the states know: no one to act
                    continue
                if name == named:  # named just before, never as a subject: stale RECENT sentences from here
                    self.seen.setdefault(name, self.sentences)
            # a resolution may be wrong: it keeps the person in the scene, but adds no words or votes to it,
            # which would draw the next pronouns to the same wrong person
            self.act(name, [] if pronoun else content_words(after))
            if not pronoun:
                self.vote(name, [w.casefold() for w in after])
                self.seen[name] = self.sentences  # named: a pronoun alone does not keep it in the scene
                here.append(name)
        for _, sentence in sentences[counted:]:
            self.count(sentence)
        for name in names:  # "at Rosings", "came to Meryton": counted for the chunks after this one
            if " " not in name:
                at = len(re.findall(rf"{_LOCATED}{re.escape(name)}(?![\w'\u2019])", passage))
                if at:
                    self.placed.setdefault(name, [0, 0])[1] += at
        return resolved

    def count(self, sentence: str) -> None:
        self.sentences += 1
        for w in set(content_words(_WORD.findall(sentence))):
            self.counts[w] = self.counts.get(w, 0) + 1
            self.last_seen[w] = self.sentences

    def resolve(
        self,
        pronoun: str,
        words: list[str],
        here: list[str] = (),
        named: str | None = None,
        not_it: set[str] = frozenset(),
    ) -> str | None:
        """The person a subject pronoun followed by `words` means: the last of its gender to open a clause of
        the same sentence (`here`: "When Mrs. Bennet was told of this, she ..."), else the one with most rare
        words in common, then the latest; where none shares a rare word and the latest was last named more than
        RECENT sentences before, or no one of its gender has acted, the one just `named` (`named_before`: "they
        now saw Mr. Darcy. They stood aloof while he was talking"), else "" (no one) and None. Never one of
        `not_it` (`_not_it`: named in its own clause, or in the quote it tags)."""
        same = [p for p in here if self._may_be(p, pronoun) and p not in not_it]
        # no vote for its gender: "Colonel Fitzwilliam reminded Elizabeth of having promised to play to him; and
        # she sat down" would make him a "she"
        if same:
            return same[-1]
        # rare in the document, and not a word of the scene (said in the last SCENE sentences by anyone about)
        rare = {
            w
            for w in words
            if 0 < self.counts.get(w, 0) <= self.rare and self.last_seen[w] < self.sentences - SCENE
        }
        fits = [p for p in self.acted if self._may_be(p, pronoun) and p not in not_it]
        if not fits:
            return named
        best = max(fits, key=lambda p: (len(rare.intersection(self.words[p])), self.acted[p]))
        stale = self.sentences - self.seen.get(best, self.sentences) > RECENT
        return (named or "") if self.rare and stale and not rare.intersection(self.words[best]) else best

    def named_before(
        self, pronoun: str, speakers: list[str], openers: list[str], mentions: list[str]
    ) -> str | None:
        """The person a pronoun means from the names just before it: the last speaker of its own sentence of the
        pronoun's gender ("cried Elizabeth, when she had finished"); else, where none of `openers` (the
        subjects of that sentence and the one before, pronouns too) may be it, the one person of its gender
        among `mentions` (names there that open no clause): "... that they now saw Mr. Darcy. They stood aloof
        while he was talking" is Mr. Darcy. A name of no known gender counts only if it has acted before (a
        person, not a place or a ship). Else None."""
        speaking = [n for n in speakers if self._may_be(n, pronoun)]
        if speaking:
            return speaking[-1]
        for who in openers:
            if who == pronoun if who in ("he", "she") else self._may_be(who, pronoun):
                return None
        named = {
            n
            for n in mentions
            if self._may_be(n, pronoun)
            and (self.gender(n) == pronoun or n in self.acted)
        }
        return named.pop() if len(named) == 1 else None

    def _may_be(self, person: str, pronoun: str) -> bool:
        """Whether `pronoun` may mean `person`: not of the other gender, no place ("Rosings Park", "Meryton"), no
        god, whom novels name in exclamations ("God keep us!"), not as someone in the scene, and for "she" no
        surname alone."""
        gender = self.gender(person)
        if gender not in ("", pronoun) or person in GODS or is_place(person) or self.is_place(person):
            return False
        # a surname alone names a man, a woman keeps her title: "she" is not "Bingley", "Ahab" or "Queequeg" (a
        # ship, the whale-ship, the sun), where nothing says whose gender they have; "Emma" may be a "she"
        return not (pronoun == "she" and not gender and " " not in person and not is_given_name(person))

    def gender(self, person: str) -> str:
        """ "he" or "she" by the person's title, else by its titled namesakes, else by its given name, else by
        its reflexives."""
        titled = _title_gender(person)
        if titled:
            return titled
        if person in _STAND_INS:
            return person[1:]
        # a surname alone is its titled namesakes' gender, before the given name ("Darcy" is a given name too;
        # "Elizabeth Bennet" has one of her own). English prose names a man by his surname alone and a woman by
        # her title ("Darcy", but "Miss Bingley"), so "Mr." named as often as "Miss" and "Mrs." makes a "he".
        if " " not in person:
            he, she = self.titled.get(person, (0, 0))
            if she >= 2 * he + 1 or (he and he >= she):
                return "she" if she > he else "he"
        # before the votes: one pronoun of someone else in a sentence that opened with "Jane" made her a "he"
        given = given_name_gender(person)
        if given:
            return given
        he, she = self.genders.get(person, (0, 0))
        return "he" if he >= 2 * she + 1 else "she" if she >= 2 * he + 1 else ""

    def is_place(self, name: str) -> bool:
        """Whether a one-word name of no known gender is a place: the text has put it where something is or
        where someone goes ("at", "in", "came to": `_LOCATED`) at least twice, and more often than it has made
        it a clause's subject ("Rosings", "Meryton", "Nantucket"; not "Queequeg", nor "Jane" with her given
        name)."""
        if " " in name or name not in self.placed:
            return False
        clauses, located = self.placed[name]
        return located >= 2 and located > clauses and self.gender(name) == ""

    def places(self) -> set[str]:
        """The names `is_place` says are places."""
        return {name for name in self.placed if self.is_place(name)}

    def name_titles(self, names: list[str]) -> None:
        """Count the passage's titled names ("Mr. Darcy", not "Colonel Forster"), by their last word."""
        for name in names:
            title = _title_gender(name)
            if title:
                self.titled.setdefault(name.split()[-1], [0, 0])[title == "she"] += 1

    def vote(self, person: str, words: list[str]) -> None:
        """The reflexives of a person's own clause ("Mary hid herself"), as votes."""
        he = sum(w in _HE_WORDS for w in words)
        she = sum(w in _SHE_WORDS for w in words)
        if he or she:
            votes = self.genders.setdefault(person, [0, 0])
            votes[0], votes[1] = votes[0] + he, votes[1] + she

    def act(self, person: str, words: list[str]) -> None:
        """`person` opened a clause of `words`: they join its words; it is the one who acted last."""
        self.clauses += 1
        self.words[person] = (self.words.get(person, []) + words)[-WORDS:]
        self.acted.pop(person, None)  # re-inserted last: `acted` stays ordered by recency
        self.acted[person] = self.clauses
        if len(self.acted) > PEOPLE:
            gone = next(iter(self.acted))
            del self.acted[gone], self.words[gone]
            self.genders.pop(gone, None)
            self.seen.pop(gone, None)

    def to_dict(self) -> dict:  # `rare` is a setting, not a state
        return {"words": self.words, "acted": self.acted, "counts": self.counts, "last_seen": self.last_seen,
                "sentences": self.sentences, "clauses": self.clauses, "genders": self.genders,
                "seen": self.seen, "titled": self.titled, "placed": self.placed}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict) -> "EntityStates":
        return cls(dict(data["words"]), dict(data["acted"]), dict(data["counts"]), dict(data["last_seen"]),
                   int(data["sentences"]), int(data["clauses"]), genders={p: list(v) for p, v in data["genders"].items()},
                   seen=dict(data.get("seen", {})), titled={w: list(v) for w, v in data.get("titled", {}).items()},
                   placed=_placed(data))  # fmt: skip


def _placed(data: dict) -> dict[str, list[int]]:
    """The place counts of saved states; states saved before them count everyone who acted as acting often, so
    that a resumed run does not take a person for a place after two mentions of "at Queequeg"."""
    if "placed" in data:
        return {w: list(v) for w, v in data["placed"].items()}
    return {p: [1 << 20, 0] for p in data["acted"] if " " not in p}
