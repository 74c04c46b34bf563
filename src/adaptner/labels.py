"""The DANSK label scheme (the 18 OntoNotes 5.0 types) and domain names.

No spaCy import here (the CLI reads these names before it needs spaCy): ``get_labels`` is
registered as ``adaptner.labels.v1`` through adaptner's ``spacy_misc`` entry point.
"""

#: The 18 OntoNotes 5.0 entity types as DANSK spells them (note the spaces in "WORK OF ART").
ONTONOTES_LABELS: list[str] = [
    "CARDINAL",
    "DATE",
    "EVENT",
    "FACILITY",
    "GPE",
    "LANGUAGE",
    "LAW",
    "LOCATION",
    "MONEY",
    "NORP",
    "ORDINAL",
    "ORGANIZATION",
    "PERCENT",
    "PERSON",
    "PRODUCT",
    "QUANTITY",
    "TIME",
    "WORK OF ART",
]

#: DAGW domain name (as in the DANSK release) -> slug used in file names. ``None`` -> "unknown".
DOMAIN_SLUGS: dict[str | None, str] = {
    "News": "news",
    "Conversation": "conversation",
    "Legal": "legal",
    "Social Media": "social_media",
    "Web": "web",
    "Wiki & Books": "wiki_books",
    "dannet": "dannet",
    None: "unknown",
}

#: Every domain slug, in a fixed order (used for reports and matrices).
DOMAINS: list[str] = [
    "news",
    "conversation",
    "legal",
    "social_media",
    "web",
    "wiki_books",
    "dannet",
    "unknown",
]

#: Splits of the DANSK release.
SPLITS: list[str] = ["train", "dev", "test"]


def domain_slug(name: str | None) -> str:
    """Map a DANSK ``dagw_domain`` value to its slug; unseen names are slugified."""
    if name is None or (isinstance(name, str) and not name.strip()):
        return "unknown"
    if name in DOMAIN_SLUGS:
        return DOMAIN_SLUGS[name]
    return "".join(c if c.isalnum() else "_" for c in name.strip().lower()).strip("_") or "unknown"


def get_labels(scheme: str = "ontonotes") -> list[str]:
    """Return a fixed label scheme, so every pipeline shares one tag set across domains.

    Args:
        scheme: Only "ontonotes" (the 18 DANSK labels) is known.
    """
    if scheme != "ontonotes":
        raise ValueError(f"Unknown label scheme {scheme!r}; known: 'ontonotes'")
    return list(ONTONOTES_LABELS)
