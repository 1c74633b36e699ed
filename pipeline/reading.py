"""Reading: what the actor knows of one document while it reads it, chunk by chunk; checkpointed as it is."""

from dataclasses import asdict, dataclass, field

from pipeline.entity_states import EntityStates

ROSTER = 24  # names met in earlier chunks that a chunk's pronouns may resolve to


@dataclass
class Reading:
    facts: list[dict] = field(default_factory=list)  # fact rows so far
    unparsed: int = 0  # generated fact lines that did not parse
    generated: int = 0  # tokens generated for it: facts, notes, summary
    notes: str = ""  # the running notes (a summary so far)
    noted: int = 0  # the character of the text the notes reach
    names: list[str] = field(default_factory=list)  # names met, most recent last (at most ROSTER)
    seen: list[str] = field(default_factory=list)  # every name met (what the notes and summary may name)
    entities: EntityStates = field(default_factory=EntityStates)  # who did what: the people pronouns mean
    in_code: bool = False  # the text read so far ends inside a fenced code block (no prose, no facts)

    def meet(self, said: list[str]) -> None:
        """The names a chunk said: the roster stays bounded, so a chunk's grammar costs the same at any depth."""
        self.names = ([n for n in self.names if n not in said] + said)[-ROSTER:]
        self.seen += [n for n in said if n not in self.seen]

    def add_facts(self, rows: list[dict], unparsed: int, generated: int) -> None:
        self.facts += rows
        self.unparsed += unparsed
        self.generated += generated

    def to_dict(self) -> dict:
        return {**asdict(self), "entities": self.entities.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> "Reading":
        entities = data.get("entities")
        return cls(
            **{**data, "entities": EntityStates() if entities is None else EntityStates.from_dict(entities)}
        )
