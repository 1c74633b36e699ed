"""Generated prose without loops: a small greedy model repeats its last sentence until the token limit
("It is a machine learning model ... ." five times, then cut off). Three guards, used for summaries and notes:

- `NoRepeatInGenerated`: while generating, a token that would repeat an n-gram of the text generated so far
  is banned. Unlike transformers' `no_repeat_ngram_size`, the prompt does not count: a summary may copy the
  passage's phrases ("Inspector Halvorsen keeps the ledger"), it only may not copy itself.
- `PenalizeGenerated`: a token generated before is made less likely (transformers' repetition penalty, on
  the generated tokens only): the n-gram ban alone turns a loop into a list of variants ("the offline
  pipeline, the offline model, the offline training, ...").
- `tidy_prose`: afterwards, a sentence (or line) that adds no content word to what was said before it is
  dropped: an exact repeat, and the near repeats the ban leads to ("The Captain, the Captain of the ship." /
  "The Captain of the Captain, a pirate." / "The Captain is a pirate."). When the token limit cut the text,
  so is its unfinished last sentence, if a finished one comes before it.
"""

import re

import torch
from transformers import LogitsProcessor

REPETITION_PENALTY = 1.3  # on generated tokens only; 1.2 on the prompt too made the model avoid its names
NO_REPEAT_NGRAM = 4  # tokens: "It is a machine" may be written once; 3 would ban "of the" + one word twice
_SENTENCE_END = re.compile(r"[.!?][\"')\u201d\u2019]*(\s+)|(\s*\n\s*)")
# ends with an end mark, but not with a title's dot ("... at Netherfield; Mrs." was cut off) or an initial's
# ("... at the forefront of A." was "A.I." cut off)
_FINISHED = re.compile(r"(?<!\b(?:Mr|Ms|Dr|St))(?<!\bMrs)(?<!\b[A-Z])[.!?][\"')\u201d\u2019]*$")
_WORD = re.compile(r"[^\W_]+")
# words that carry no content: a sentence made only of these and of words said before says nothing new
FUNCTION_WORDS = frozenset(
    "a an the this that these those his her its their my your our he she it they i we you him them me us who "
    "which what is are was were be been being has have had do does did will would can could shall should may "
    "might must not no and or but so of in on at to for from with by as into about than then there here also "
    "very too just all any some each every one s".split()
)


class OnGenerated(LogitsProcessor):
    """A processor that looks at the tokens generated only: its first call sees the prompt alone, so that
    call's length marks where generation starts. For one generate call."""

    start: int | None = None

    def generated(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.start is None:
            self.start = input_ids.shape[1]
        return input_ids[:, self.start :]


class NoRepeatInGenerated(OnGenerated):
    """Bans, per row, every token that would complete an n-gram already present in that row's generated
    tokens. A row whose every allowed token (after other processors, e.g. a grammar) would be banned keeps
    its scores: the ban never leaves a row without a choice."""

    def __init__(self, ngram_size: int = NO_REPEAT_NGRAM):
        if ngram_size < 2:
            raise ValueError(f"ngram_size must be >= 2, got {ngram_size}")
        self.n = ngram_size

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        generated = self.generated(input_ids).tolist()
        banned = scores.clone()
        for row, tokens in enumerate(generated):
            for token in _repeating_tokens(tokens, self.n):
                if token < banned.shape[1]:
                    banned[row, token] = float("-inf")
            if torch.isinf(banned[row]).all():
                banned[row] = scores[row]
        return banned


class PenalizeGenerated(OnGenerated):
    """transformers' repetition penalty (a token's score divided by `penalty` when positive, multiplied when
    negative) for the tokens a row has *generated* only: the prompt's names stay as likely as they were, while
    a word written again and again ("the offline model, the offline corpus, the offline text, ...") becomes
    less likely each time it would come back."""

    def __init__(self, penalty: float = REPETITION_PENALTY):
        if penalty < 1.0:
            raise ValueError(f"penalty must be >= 1, got {penalty}")
        self.penalty = penalty

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        generated = self.generated(input_ids).clamp(max=scores.shape[1] - 1)
        if generated.shape[1] == 0:
            return scores
        picked = scores.gather(1, generated)
        picked = torch.where(picked > 0, picked / self.penalty, picked * self.penalty)
        return scores.scatter(1, generated, picked)


def no_loops() -> list[LogitsProcessor]:
    """The processors that keep prose from looping, to put after any grammar (they see what it allows)."""
    return [PenalizeGenerated(), NoRepeatInGenerated()]


def _repeating_tokens(tokens: list[int], n: int) -> set[int]:
    """The tokens that, appended to `tokens`, would repeat one of its n-grams."""
    if len(tokens) < n:
        return set()
    prefix = tuple(tokens[len(tokens) - n + 1 :])
    return {tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i : i + n - 1]) == prefix}


def sentences(text: str) -> list[tuple[str, str]]:
    """`text` as (sentence, the whitespace after it), split after each ".", "!" or "?" that whitespace follows
    (closing quotes stay with their sentence) and at line breaks; the separators are kept, so line breaks
    survive."""
    text, out, at = text.strip(), [], 0
    for m in _SENTENCE_END.finditer(text):
        gap = 1 if m.group(1) is not None else 2
        if m.start(gap) > at:
            out.append((text[at : m.start(gap)], m.group(gap)))
        at = m.end()
    if at < len(text):
        out.append((text[at:], ""))
    return out


def tidy_prose(text: str, cut_off: bool = False) -> str:
    """`text` without a sentence that adds no content word to those before it (a repeat, case and
    punctuation aside, or a near repeat) and, when generation was `cut_off` by its token limit, without its
    unfinished last sentence (if a finished one precedes it). The first sentence always stays."""
    kept, said = [], set()
    for sentence, gap in sentences(text):
        words = {w for w in _WORD.findall(sentence.casefold()) if w not in FUNCTION_WORDS}
        if not kept or words - said:
            said |= words
            kept.append((sentence, gap))
    while cut_off and len(kept) > 1 and not _FINISHED.search(kept[-1][0]):
        kept.pop()  # "... of A. I" cut at the limit: "I", then "... of A." (an initial's dot ends no sentence)
    return "".join(s + gap for s, gap in kept).strip()
