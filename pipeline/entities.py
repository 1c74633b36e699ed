"""Entities: merge the surface names of facts into entities and roll them up into the `entities` table.

Rules (every surface form stays listed in its entity's `aliases`, so a merge can always be undone):

0. Only names and noun phrases are entities (`is_entity`): a bare number ("200"), a pronoun ("he"), a title
   alone ("Mrs") or a piece of a clause ("tests are skipped without CUDA", "m jobs", "of the house", "quite
   young", "danced with her twice") names nothing, so a fact's subject or object of that kind stays in
   `facts` but gives no `entities` row. Without a part-of-speech tagger (none is a well-kept offline
   dependency), closed word lists decide: a phrase is no noun phrase when it holds a verb that needs a subject
   ("is", "were", "can"), a personal pronoun ("him", "they"; "her" only as a possessive, first, and not
   before a preposition: "her with a smile"), a degree adverb ("quite", "twice"), a subordinator ("because")
   or a lowercase one-letter word other than "a"; when it starts with a preposition, conjunction, particle or
   a participle ("seated on ...") or ends with one (or with an article); when a preposition comes before a
   gerund ("by starting the idea"); when it starts or ends with an adverb ("again", "near"); when it is a verb
   form alone ("gone", "says", "better"); when, without a determiner first, it holds an adverb in -ly
   ("generally different"), starts with a gerund ("stirring the fire") or ends with a participle; or when,
   longer than three words or with "and"/"or", it does not start with a determiner ("the house and the
   garden" is one, "brown and brawny" is not). Nor is it one when it runs on into a second phrase: a
   determiner after a word that is no preposition, conjunction or predeterminer ("her the letter", "his chair
   a little", "every sentence conveying the idea"; "half a song" is one), an infinitive ("a story to hear";
   "the road to London" is one), a possessive before a gerund with an object ("her marrying Colonel
   Fitzwilliam"; "his whaling voyage" is one); nor when it holds "it", a possessive or indefinite pronoun
   ("mine", "nothing") or "than"; nor when it ends with an adverb in -ly, a word of degree ("a little", "no
   more", "this last") or, past two words, a participle ("that moment arrived"); nor when it is a number word
   ("fifteen"), ends without a determiner in an adjective in -ous ("ubiquitous"), or is one of a short list
   of adverbs, adjectives and verbs alone ("alone", "well", "say").
1. Surface forms are grouped by `normalize` (case, whitespace, edge punctuation, leading article), as before.
2. A group is a *name* when one of its forms, after the honorifics are stripped, is made of capitalised words
   (lowercase particles such as "de", "van" allowed inside) and does not start with a pronoun or article:
   "Mr. Darcy", "Lady Catherine de Bourgh". Other groups ("the house", "he", "His Majesty", "Captain" alone)
   stay entities of their own, keyed by `normalize` as before.
3. Leading honorifics (Mr, Mrs, Miss, Ms, Dr, Sir, Lady, Lord, Captain, Colonel, ..., with or without a dot)
   become the name's *title*; the rest are its *tokens* (case-folded, a possessive "'s" dropped). Names with
   the same title and tokens are one name: "Mr. Darcy" = "Mr Darcy" = "MR. DARCY".
4. Names are merged longest first (most distinct tokens; titled before untitled; then most mentions). A name
   joins an existing entity only if its tokens are a subset of that entity's longest name; titles decide:
   - a titled name never joins an entity with another title (different titles are different people:
     "Mr. Bennet" vs "Mrs. Bennet"). It joins the one candidate with its own title ("Mr. Darcy" -> "Mr.
     Fitzwilliam Darcy"), or else an untitled only candidate ("Miss Eliza" -> "Eliza Bennet"), but only when
     no other title comes with the same tokens: with "Mr. Bingley" and "Miss Bingley" about, "Caroline
     Bingley" could be either, so neither joins her. Otherwise it stays alone. An untitled entity that a
     titled name joins takes its title;
   - an untitled name joins its only candidate ("Elizabeth" -> "Elizabeth Bennet"), unless that one has a
     woman's title and the name is no woman's given name: "Bingley" is not "Miss Bingley" (a surname alone
     names a man, a woman keeps her title), "Eliza" is "Miss Eliza"; among several it joins one
     only when that one clearly dominates: at least DOMINANCE times the mentions of all the others (plus one,
     so that a handful of mentions never decides), counting only names that contain the short name's tokens.
     So "Darcy" joins Mr. (Fitzwilliam) Darcy (~270 mentions) despite Georgiana Darcy, Miss Darcy and Lady
     Anne Darcy (~40), while "Bennet" (Mrs. 150, Mr. 85, Miss 65 ...) stays on its own.
   Different given names never merge: "Jane Bennet" and "Elizabeth Bennet" are not subsets of each other.
5. The canonical name is the entity's longest full form (its first name in rule 4's order; its most frequent
   spelling): every alias is a subset of it, so it is the most specific, and unlike the most frequent form
   ("Darcy", "Elizabeth") it is never also the key of another, unmerged entity. The `entity` column is its
   `normalize`d form.

Not handled (on purpose, no fuzzy matching): nicknames ("Lizzy"), misspellings, a change of title on marriage.
Merging is corpus-wide, like the roll-up it replaces: one name in two documents is one entity.
"""

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache

import pyarrow as pa

from memgpt.repetition import FUNCTION_WORDS
from pipeline.facts import normalize
from pipeline.schemas import ENTITIES, FINAL_STATE

FINAL_FACTS = 4  # facts nothing later changed, the latest, kept in an entity's final state in a document
FINAL_CHANGES = 2  # and changes (with what they superseded), the latest, however long ago
# verbs of speech and coming and going: saying one again is no change of what a person has or is
_NO_CHANGE = frozenset("said says say asked replied cried answered added went came thought".split())
TITLES = frozenset(
    "mr mrs miss ms mx master madam madame mme mlle mademoiselle monsieur dr doctor prof professor sir dame "
    "lady lord captain capt colonel col general gen major lieutenant lt sergeant sgt admiral commander "
    "commodore rev reverend father king queen prince princess duke duchess earl count countess baron "
    "baroness".split()
)
# the titles of one gender ("Mrs." is no "he"; "Captain" says nothing)
HE_TITLES = frozenset("mr sir lord king prince duke earl count baron master monsieur father brother".split())
SHE_TITLES = frozenset(
    "mrs miss ms lady madam madame mme mlle queen princess duchess countess baroness dame".split()
)
PARTICLES = frozenset("de del della der di du da la le van von ten ter bin ibn al st".split())
# capitalised at a sentence's start, but a name does not start with them ("He", "His Majesty")
STOPWORDS = frozenset(
    "i me he him his she her hers it its we us they them their you your this that the a an".split()
)
# words that make a phrase a clause or a piece of one: verbs that need a subject, subordinators, negation
CLAUSE_WORDS = frozenset(
    "am is are was were be been being has have had having do does did will would shall should can could may "
    "might must not isn't aren't wasn't weren't don't doesn't didn't won't can't couldn't which who whom if "
    "because although though unless whether".split()
)
# personal pronouns and degree adverbs: a phrase with one is a piece of a clause ("for her to hear")
PRONOUNS_AND_DEGREES = frozenset(
    "i me he him she we us they them it myself himself herself ourselves themselves itself mine yours hers ours "
    "theirs nothing something anything everything nobody somebody anybody everybody someone anyone everyone "
    "he's she's it's that's there's what's who's i'm you're we're they're "  # a pronoun and its verb: a clause
    "quite rather somewhat almost enough twice once least than".split()
)
# words a noun phrase neither starts nor ends with: "of the house", "the house in", "there a tiller"
EDGE_WORDS = frozenset(
    "of in on at to for from with by into onto upon about over under than as and or but nor then so only also "
    "very too just not there here off up down out away back within without through throughout across along "
    "among amongst against toward towards beneath beside besides between beyond during till until unto amid "
    "concerning regarding despite except".split()
)
DETERMINERS = frozenset(
    "the a an his her their its my your our this that these those some any many several each every no all both "
    "few one two three four five six seven eight nine ten".split()
)
# adverbs a noun phrase neither starts nor ends with ("again immediately", "a chair near", "nobody else")
ADVERBS = frozenset("again aside near ago else indeed instead together".split())
# verb forms and comparatives that are no noun phrase alone ("gone", "made", "says", "better")
VERB_FORMS = frozenset(
    "gone made done been seen said says speak speaks spoke going doing being having saying better worse "
    "say think know see tell swear go come look alone well fast little much more less ill yesterday today "
    "tomorrow tonight now soon ever never always often still yet already afterwards".split()
)
# number words: "fifteen" names nothing, as "15" does not
NUMBER_WORDS = frozenset(
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million".split()
)
# determiners that open a noun phrase of their own: after a noun with no preposition between, a second phrase
# starts ("her the letter", "his chair a little", "conveying the idea"); numbers are left out ("chapter one")
_OPENERS = frozenset(
    "the a an this that these those his her their its my your our any some every each no".split()
)
# words a determiner may follow inside one noun phrase: "half a song", "all the day", "such a man"
_PREDETERMINERS = frozenset("all both half such many what double".split())
_POSSESSIVES = frozenset("his her their its my your our".split())
# past participles not in -ed that are seldom a noun ("left", "set", "found" and "thought" often are)
_IRREGULAR_PARTICIPLES = frozenset(
    "taken given written known seen done gone born brought sent kept held told become grown shown drawn driven "
    "spoken broken chosen forgotten forgiven hidden stolen sworn thrown beaten fallen".split()
)
# adverbs by their endings ("generally", "immediately", "perfectly", "uncommonly"), not "family", "assembly",
# "elderly", "daily", "melancholy"
_ADVERB_ENDINGS = tuple(
    "ally ately ously ively ently antly fully ctly nly edly ingly rely ibly ably ssly tly".split()
)
# nouns in -ed, not participles: "top speed", "bitter hatred"
_NOUNS_IN_ED = frozenset("speed steed hatred kindred hundred thread sacred seed need deed creed greed breed".split())
# nor ends with a word of degree or order alone: "his chair a little", "no more", "this last", "half so much"
ENDLESS = EDGE_WORDS | DETERMINERS | ADVERBS | {"own", "little", "much", "more", "less", "last"}
MAX_BARE_WORDS = 3  # a longer phrase without a determiner first is a clause's piece, not a noun phrase
# how many times the others' mentions (plus one) the leading candidate needs to take an untitled short name
DOMINANCE = 3
_SPACE = re.compile(r"\s+")
_ARTICLE = re.compile(r"^(?:the|a|an)\s+", re.IGNORECASE)
_EDGE = "\"'`.,;:!?()[]{}<>\u201c\u201d\u2018\u2019"
_POSSESSIVE = re.compile(r"['\u2019]s$", re.IGNORECASE)
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)?")  # "isn't" one word, "jobs.extract" two

NameKey = tuple[str, tuple[str, ...]]  # (title, tokens); title "" when there is none


def parse_name(surface: str) -> NameKey | None:
    """(title, tokens) of a personal or proper name, or None when `surface` is no name (see rule 2)."""
    words = _ARTICLE.sub("", _SPACE.sub(" ", surface).strip().strip(_EDGE).strip()).split()
    title = []
    while len(words) > 1 and words[0].rstrip(".").casefold() in TITLES:
        title.append(words.pop(0).rstrip(".").casefold())
    if not words or words[0].rstrip(".").casefold() in TITLES:
        return None  # a title alone ("Captain", "Mr. Dr.") names nobody in particular
    words[-1] = _POSSESSIVE.sub("", words[-1])
    tokens = tuple(w.strip(_EDGE).casefold() for w in words)
    if not _looks_like_name(words, tokens):
        return None
    return " ".join(title), tokens


def is_entity(surface: str) -> bool:
    """Whether `surface` is a name or a noun phrase, and so an entity (rule 0): not a number, a pronoun or a
    piece of a clause."""
    if parse_name(surface) is not None:
        return True
    written = _WORD.findall(surface)
    words = [w.casefold() for w in written]
    if not any(sum(c.isalpha() for c in w) >= 2 for w in words):  # "200", "13", "4k", "x"
        return False
    if all(w in STOPWORDS for w in words) or (len(words) == 1 and words[0] in TITLES):  # "he", "Mrs"
        return False
    if words[0] in EDGE_WORDS or words[0] in ADVERBS or _participle(words[0]) or words[-1] in ENDLESS:
        return False
    if words == [words[0]] and (words[0] in VERB_FORMS or words[0] in NUMBER_WORDS):  # "gone", "fifteen"
        return False
    if words[0] == "her" and len(words) > 1 and words[1] in EDGE_WORDS:  # "her with a smile": not "her house"
        return False
    if _two_phrases(written):  # "her the letter", "his chair a little", "a story to hear"
        return False
    inner = words[1:] if words[0] == "her" else words  # "her house": a possessive
    if any(w in CLAUSE_WORDS or w in PRONOUNS_AND_DEGREES or _one_letter(w) for w in inner):
        return False
    after_preposition = [w for p, w in zip(words, words[1:], strict=False) if p in EDGE_WORDS]
    if any(_gerund(w) for w in after_preposition):  # "a little by starting the idea"
        return False
    if _adverb(words[-1]):  # "the place entirely"
        return False
    if len(words) > 2 and _participle(words[-1]) and words[-1] not in _NOUNS_IN_ED:
        return False  # "that moment arrived", "two daughters married"; not "the wounded"
    if words[0] in _POSSESSIVES and len(words) > 2 and _gerund(words[1]) and _opens_object(written[2]):
        return False  # "her marrying Colonel Fitzwilliam", not "his whaling voyage"
    bare = words[0] not in DETERMINERS and not words[0].isdigit()
    # without a determiner, an adverb in -ly, a gerund first or a participle last make a clause's piece:
    # "generally different", "stirring the fire", "daughters married"; an adjective in -ous ends no noun phrase
    if bare and any(_adverb(w) for w in words):
        return False
    if bare and _gerund(words[0]) and len(words) > 1 and (words[1] in DETERMINERS or words[1] in STOPWORDS):
        return False  # "stirring the fire", not "sitting room" or "whaling voyage"
    if bare and len(words) > 1 and _participle(words[-1]) and words[-1] not in _NOUNS_IN_ED:
        return False
    if bare and words[-1].endswith("ous"):  # "ubiquitous", "quite anxious"
        return False
    return not bare or (len(words) <= MAX_BARE_WORDS and not {"and", "or"} & set(words))


def _opens_object(word: str) -> bool:
    """Whether `word` (as written) can open a gerund's object: a determiner, a pronoun or a name."""
    return word.casefold() in DETERMINERS or word.casefold() in STOPWORDS or word[:1].isupper()


def _adverb(word: str) -> bool:
    return word.endswith(_ADVERB_ENDINGS) and len(word) > 4


def _two_phrases(words: list[str]) -> bool:
    """Whether `words` (as written) run on past one noun phrase: a determiner after a word that is no
    preposition, conjunction or predeterminer starts a second one ("her the letter", "every sentence conveying
    the idea"), and "to" before a lowercase word that is no determiner is an infinitive ("a story to hear";
    not "the road to London")."""
    folded = [w.casefold() for w in words]
    for (before, word), written in zip(zip(folded, folded[1:], strict=False), words[1:], strict=True):
        if word in _OPENERS and before not in EDGE_WORDS and before not in _PREDETERMINERS:
            return True
        if before == "to" and written[:1].islower() and word not in DETERMINERS and word not in STOPWORDS:
            return True
    return False


def _participle(word: str) -> bool:
    # "seated on an oaken chair", "acquainted with", "taken from school", "wild-ocean born"
    return (len(word) > 4 and word.endswith("ed")) or word in _IRREGULAR_PARTICIPLES


def _gerund(word: str) -> bool:
    return len(word) > 6 and word.endswith("ing")  # after a preposition: "by starting", not "in spring"


def _one_letter(word: str) -> bool:
    return len(word) == 1 and word.isalpha() and word != "a"  # "m jobs" of "python -m jobs.extract"


def _looks_like_name(words: list[str], tokens: tuple[str, ...]) -> bool:
    # capitalised words with lowercase particles only inside ("Catherine de Bourgh", not "de" or "the house")
    capital = [w[:1].isupper() for w in words]
    inner = all(c or t in PARTICLES for c, t in zip(capital, tokens, strict=True))
    return inner and capital[-1] and all(tokens) and tokens[0] not in STOPWORDS


@dataclass
class Entity:
    """One merged entity: its key (the `entity` column), canonical name, title and what it was built from."""

    key: str
    name: str
    title: str
    aliases: set[str]
    n_mentions: int
    docs: set[str]


@dataclass
class _Cluster:
    root: NameKey  # the longest name; every member's tokens are a subset of its tokens
    title: str
    members: list[NameKey] = field(default_factory=list)


# names the books give "he" with no title nor census name: "God bless you" made God the "she" of the next lines
GODS = frozenset("God Jove Jupiter Christ Jesus Satan Lucifer".split())


@cache
def _census_names() -> tuple[frozenset[str], frozenset[str]]:
    """English given names, (male, female), from Faker's census lists; a name may be on both."""
    from faker.providers.person.en import Provider

    return frozenset(Provider.first_names_male), frozenset(Provider.first_names_female)


@cache
def _given_names() -> tuple[frozenset[str], frozenset[str]]:
    """English given names of one gender: ("he" names, "she" names), the "he" names with `GODS`. Faker's lists
    come from census counts; a name on both ("Emma", "Darcy", "Sydney") is on neither here."""
    he, she = _census_names()
    return (he - she) | GODS, she - he


def is_given_name(word: str) -> bool:
    """Whether `word` is an English given name, of either gender ("Emma", "Jane"; not "Bingley", "Ahab")."""
    he, she = _census_names()
    return word in he or word in she


def given_name_gender(person: str) -> str:
    """ "he" or "she" where the person's given name has one gender in English ("Jane", "Colonel Charles
    Brandon"), else ""; the given name is the first word after any title."""
    words = [w for w in person.split() if w.rstrip(".").casefold() not in TITLES]
    if not words:
        return ""
    he, she = _given_names()
    return "he" if words[0] in he else "she" if words[0] in she else ""


class EntityIndex:
    """Surface names merged into entities (module docstring); `entity_of` maps a surface name to one."""

    def __init__(self, mentions: Iterable[tuple[str, str]]):
        """Build from (surface name, document id) mentions; blank names are ignored."""
        counts: Counter[str] = Counter()
        docs: dict[str, set[str]] = defaultdict(set)
        for surface, doc in mentions:
            if surface := _spaced(surface):
                counts[surface] += 1
                docs[surface].add(doc)
        self._build(counts, docs)

    @classmethod
    def from_counts(cls, counts: Mapping[str, int]) -> "EntityIndex":
        """Build from each surface name's number of mentions; the entities' `docs` stay empty."""
        merged: Counter[str] = Counter()
        for surface, n in counts.items():
            if surface := _spaced(surface):
                merged[surface] += n
        index = cls.__new__(cls)
        index._build(merged, defaultdict(set))
        return index

    def _build(self, counts: Counter[str], docs: dict[str, set[str]]) -> None:
        self._counts, self._docs = counts, docs
        self._by_norm = self._norm_to_name()
        self._nodes = self._name_nodes()
        mentions = {name: sum(self._counts[s] for s in forms) for name, forms in self._nodes.items()}
        self._clusters = _Clusters(mentions)
        for name in _Clusters.order(mentions):
            self._clusters.add(name)
        self.entities: dict[str, Entity] = {}
        self._entity_of_norm: dict[str, str] = {}
        self._entity_of_name: dict[NameKey, str] = {}
        self._build_entities()

    def entity_of(self, surface: str) -> str | None:
        """The entity key of a surface name: of a seen form or spelling ("Mr Darcy" for "Mr. Darcy"), or of
        the entity an unseen name would join by rule 4 ("Fitzwilliam Darcy"); None when it belongs to none."""
        norm = normalize(surface)
        if norm in self._entity_of_norm:
            return self._entity_of_norm[norm]
        name = parse_name(surface)
        if name is None:
            return None
        if name in self._entity_of_name:
            return self._entity_of_name[name]
        cluster = self._clusters.find(name)
        return self._entity_of_name[cluster.root] if cluster else None

    def is_alias(self, surface: str) -> bool:
        """Whether `surface` (up to `normalize`) was seen as a form of one of the entities."""
        return normalize(surface) in self._entity_of_norm

    def _norm_to_name(self) -> dict[str, NameKey]:
        # a normalised group is a name when one of its forms is: "captain ahab" goes with "Captain Ahab"
        out: dict[str, NameKey] = {}
        for surface, _ in self._counts.most_common():
            name = parse_name(surface)
            if name:
                out.setdefault(normalize(surface), name)
        return out

    def _name_nodes(self) -> dict[NameKey, list[str]]:
        nodes: dict[NameKey, list[str]] = defaultdict(list)
        for surface in self._counts:
            name = self._by_norm.get(normalize(surface))
            if name:
                nodes[name].append(surface)
        return nodes

    def _build_entities(self) -> None:
        for cluster in self._clusters.all:
            forms = [s for member in cluster.members for s in self._nodes[member]]
            # the root's most frequent spelling; sorting first makes ties deterministic
            name = max(sorted(self._nodes[cluster.root]), key=self._counts.__getitem__)
            key = self._add(normalize(name), name, cluster.title, forms)
            self._entity_of_name.update((member, key) for member in cluster.members)
        for surface in self._counts:
            norm = normalize(surface)
            if norm not in self._by_norm:
                self._add(norm, norm, "", [surface])

    def _add(self, key: str, name: str, title: str, forms: list[str]) -> str:
        # keys never clash: each normalised group belongs to one name, each name to one cluster
        entity = self.entities.setdefault(key, Entity(key, name, title, set(), 0, set()))
        for surface in forms:
            entity.aliases.add(surface)
            entity.n_mentions += self._counts[surface]
            entity.docs |= self._docs[surface]
            self._entity_of_norm[normalize(surface)] = key
        return key


def _spaced(surface: str) -> str:
    """`surface` with its whitespace collapsed, or "" when it names nothing (blank, punctuation alone)."""
    surface = _SPACE.sub(" ", surface).strip()
    return surface if normalize(surface) else ""


class _Clusters:
    """Names clustered by rule 4; fed longest first (`order`)."""

    def __init__(self, mentions: dict[NameKey, int]):
        self.mentions = mentions
        self.titles: dict[frozenset[str], set[str]] = defaultdict(set)  # the titles seen with a set of tokens
        for title, tokens in mentions:
            self.titles[frozenset(tokens)].add(title)
        self.all: list[_Cluster] = []
        self.by_token: dict[str, list[_Cluster]] = defaultdict(list)  # clusters whose root holds a token

    @staticmethod
    def order(mentions: dict[NameKey, int]) -> list[NameKey]:
        return sorted(mentions, key=lambda n: (-len(set(n[1])), not n[0], -mentions[n], n[1], n[0]))

    def find(self, name: NameKey) -> _Cluster | None:
        """The cluster `name` would join, or None when it has none or is ambiguous."""
        title, candidates = name[0], _candidates(name, self.by_token)
        if title:
            same = [c for c in candidates if c.title == title]
            if len(same) == 1:
                return same[0]
            # "Mr. Bingley" and "Miss Bingley" are two people: neither may claim untitled "Caroline Bingley"
            alone = (self.titles.get(frozenset(name[1]), set()) | {title}) - {""} == {title}
            only = candidates[0] if len(candidates) == 1 else None
            return only if only and not only.title and alone else None
        # a surname alone names a man, a woman keeps her title: "Bingley" is not "Miss Bingley" ("Eliza" is)
        woman = len(candidates) == 1 and candidates[0].title in SHE_TITLES
        if woman and given_name_gender(name[1][0].title()) != "she":
            return None
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        return _dominant(set(name[1]), candidates, self.mentions)

    def add(self, name: NameKey) -> None:
        target = self.find(name)
        if target is None:
            target = _Cluster(root=name, title=name[0])
            self.all.append(target)
            for token in set(name[1]):
                self.by_token[token].append(target)
        target.members.append(name)
        target.title = target.title or name[0]


def _candidates(name: NameKey, by_token: dict[str, list[_Cluster]]) -> list[_Cluster]:
    tokens = set(name[1])
    rarest = min((by_token.get(t, []) for t in tokens), key=len)
    return [c for c in rarest if tokens <= set(c.root[1])]


def _dominant(tokens: set[str], candidates: list[_Cluster], mentions: dict[NameKey, int]) -> _Cluster | None:
    # count only the members that contain the short name: "Georgiana" alone is no evidence about "Darcy"
    support = [sum(mentions[m] for m in c.members if tokens <= set(m[1])) for c in candidates]
    best = max(range(len(candidates)), key=support.__getitem__)
    others = sum(support) - support[best]
    return candidates[best] if support[best] >= DOMINANCE * (others + 1) else None


def merge_aliases(names: Iterable[str]) -> dict[str, str]:
    """Each distinct surface name (repeats count as mentions) mapped to its entity key."""
    names = list(names)
    index = EntityIndex((n, "") for n in names)
    return {n: index._entity_of_norm[normalize(n)] for n in dict.fromkeys(names) if normalize(n)}


def entity_rows(facts: Iterable[dict], run_id: str) -> list[dict]:
    """The `entities` table as rows: subjects and objects that are entities (`is_entity`) merged into entities,
    with aliases, document and mention counts, and per document the entity's final state there (`final_state`).

    Facts are in reading order within a document (chunk by chunk, lines in the order of the chunk's sentences);
    rows without the evidence columns give no final state. A whole run's table is rolled up slice by slice
    instead (`pipeline/rollup.py`), with the same result."""
    facts = list(facts)
    index = EntityIndex(_mentions(facts))
    states, n_documents = document_states(facts, index)
    entities = sorted(index.entities.values(), key=lambda e: e.key)
    return entities_table(entities, n_documents, [states], run_id).to_pylist()


# one row per fact of an entity's final state in a document
STATES = pa.schema([pa.field("entity", pa.string()), *ENTITIES.field("final_states").type.value_type])


def document_states(facts: Iterable[dict], index: EntityIndex) -> tuple[pa.Table, Counter[str]]:
    """Each entity's final state in each document (`STATES`), and how many of the documents mention it, from
    the facts of whole documents, each document's in reading order."""
    said: dict[tuple[str, str], list[dict]] = defaultdict(list)  # (entity, doc_id) -> its facts there
    mentioned: set[tuple[str, str]] = set()
    key_of: dict[str, str | None] = {}  # surface -> entity key, None for no entity

    def key(surface: str) -> str | None:
        if surface not in key_of:
            key_of[surface] = index.entity_of(surface) if is_entity(surface) else None
        return key_of[surface]

    for row in facts:
        mentioned.update((k, row["doc_id"]) for k in map(key, (row["subject"], row["object"])) if k)
        subject = key(row["subject"])
        if subject is not None and all(k in row for k in FINAL_STATE):
            said[subject, row["doc_id"]].append(row)
    states = [{"entity": e, **s} for (e, _), rows in said.items() for s in final_state(rows)]
    return pa.Table.from_pylist(states, schema=STATES), Counter(e for e, _ in mentioned)


def entities_table(
    entities: list[Entity], n_documents: Counter[str], states: list[pa.Table], run_id: str
) -> pa.Table:
    """The `entities` table's rows (`ENTITIES`) of `entities`, sorted by key, from their final states (`states`,
    each document's in reading order, documents whole): sorted by document. Assembled in Arrow."""
    all_states = pa.concat_tables(states) if states else STATES.empty_table()
    order = pa.array(range(all_states.num_rows), pa.int64())  # reading order within an entity's document
    all_states = all_states.append_column("order", order).sort_by(
        [("entity", "ascending"), ("doc_id", "ascending"), ("order", "ascending")]
    )
    grouped = all_states.group_by("entity").aggregate([("entity", "count")])
    counts = dict(zip(grouped["entity"].to_pylist(), grouped["entity_count"].to_pylist(), strict=True))
    offsets = [0]
    for e in entities:
        offsets.append(offsets[-1] + counts.get(e.key, 0))
    struct = ENTITIES.field("final_states").type.value_type
    values = pa.StructArray.from_arrays(
        [all_states.column(f.name).combine_chunks() for f in struct], fields=list(struct)
    )
    columns = {
        "entity": pa.array([e.key for e in entities], pa.string()),
        "aliases": pa.array([sorted(e.aliases) for e in entities], pa.list_(pa.string())),
        "n_documents": pa.array([n_documents[e.key] for e in entities], pa.int64()),
        "n_mentions": pa.array([e.n_mentions for e in entities], pa.int64()),
        "final_states": pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values),
        "run_id": pa.array([run_id] * len(entities), pa.string()),
    }
    return pa.Table.from_pydict(columns, schema=ENTITIES)


def final_state(rows: list[dict]) -> list[dict]:
    """An entity's state at the end of a document, from its facts there in reading order: the latest
    `FINAL_FACTS` facts that nothing later changed, and its latest `FINAL_CHANGES` changes of those before them,
    in reading order, each change with the fact it superseded ("moved the ledger to | the lighthouse at
    Tromsø", superseding "keeps the ledger in | the observatory of Bergen"). A state is more than the last thing
    said: where the ledger is still holds after "he bowed as they passed", and what was changed is no more."""
    pairs = changed(rows)
    superseded = {i for i, _ in pairs}
    by_change = {j: i for i, j in pairs}
    live = [k for k in range(len(rows)) if k not in superseded]  # the last fact is always live
    kept = [j for j in live if j in by_change][-FINAL_CHANGES:]
    return [
        {
            **{k: rows[j][k] for k in FINAL_STATE},
            "supersedes": f"{rows[by_change[j]]['relation']} {rows[by_change[j]]['object']}"
            if j in by_change
            else None,
        }
        for j in sorted({*kept, *live[-FINAL_FACTS:]})
    ]


def changed(rows: list[dict]) -> list[tuple[int, int]]:
    """(the earlier fact, the one that changes it) for each fact of one subject (in reading order) that
    changes an earlier one: it says again a lowercase word of what that one did or had, the latest such
    ("keeps the ledger in Bergen" -> "moved the ledger to Tromsø", "was happy" -> "was not happy")."""
    pairs, latest = [], {}  # latest: word -> the last fact that said it
    for j, row in enumerate(rows):
        said = _what(row)
        before = [latest[w] for w in said if w in latest]
        if before:
            pairs.append((max(before), j))
        latest.update(dict.fromkeys(said, j))
    return pairs


def _what(row: dict) -> set[str]:
    """The lowercase content words of a fact's relation and object but its verb (the relation's first word):
    what it is about, not who, nor what was done ("keeps the violin in the vault" and "keeps a man-servant" are
    about two things), nor that it was said ("said", "replied": speech is no change)."""
    words = re.findall(r"[^\W_]+", f"{row['relation']} {row['object']}")[1:]
    return {w for w in words if w.islower() and w not in FUNCTION_WORDS and w not in _NO_CHANGE}


def _mentions(facts: Iterable[dict]) -> Iterator[tuple[str, str]]:
    for row in facts:
        for surface in (row["subject"], row["object"]):
            if is_entity(surface):
                yield surface, row["doc_id"]
