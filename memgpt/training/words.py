"""The words of planted documents: people, places and the sentences that plant facts about them."""

# Names and places that are one token (with their leading space) in the shipped tokenizer; targets write them
# after "- " so the summary uses the same tokens as the text.
NAMES = {
    "Jane": "she", "Mary": "she", "Kate": "she", "Anne": "she", "Helen": "she", "Grace": "she",
    "John": "he", "William": "he", "Hector": "he", "Dick": "he", "Pip": "he", "Antonio": "he",
}  # fmt: skip
LOCATIONS = ("church", "house", "office", "school", "island", "court", "cabin", "city")
PRONOUNS = {"she": ("She", "Her"), "he": ("He", "His")}

MOVE = (
    "{s} moved to the {o}.",
    "{s} went to the {o}.",
    "{s} walked to the {o}.",
    "{s} went back to the {o}.",
)
BADGE_NAMED = "{s}'s badge number is {o}."
BADGE_PRONOUN = "{p} badge number is {o}."
DISTRACTORS = (
    "A stranger moved to the {o}.",
    "The porter went to the {o}.",
    "{s} thought about the {o}.",
    "{s} wrote a letter to the {o}.",
    "The clerk's badge number is {n}.",
)
