"""Doc extensions that adaptner sets and reads (installed idempotently)."""

from spacy.tokens import Doc

#: Extensions on Doc: name -> default.
DOC_EXTENSIONS = {
    "ner_probs": None,  # float32 array (n_tokens x n_tags) set by bio_ner
    "domain": None,  # domain slug, e.g. "news"
    "source": None,  # DAGW source, e.g. "danavis"
    "teacher_probs": None,  # float32 array (n_tokens x n_tags): a teacher's BIO probabilities
    "teacher_tags": None,  # the tags of teacher_probs' columns, in order (bio_ner's tag order)
}


def install_extensions() -> None:
    """Register adaptner's Doc extensions once; later calls do nothing."""
    for name, default in DOC_EXTENSIONS.items():
        if not Doc.has_extension(name):
            Doc.set_extension(name, default=default)


# Any module that imports this one can rely on the extensions (see adaptner/__init__.py).
install_extensions()
