"""adaptner: adapt a Danish spaCy NER pipeline to a new domain with active learning.

Importing adaptner does not import spaCy (so ``adaptner --help`` starts in a fraction of a
second). The Doc extensions (``doc._.ner_probs``, ``doc._.domain``, ``doc._.source``) are
registered by every adaptner module that uses them, by loading a pipeline with a ``bio_ner``
component, by :func:`install_extensions`, and here when spaCy is already imported (so
``import spacy`` then ``import adaptner`` keeps registering them, as before).
"""

import sys

from .about import __version__


def install_extensions() -> None:
    """Register adaptner's Doc extensions once (imports spaCy); later calls do nothing."""
    from .extensions import install_extensions as install

    install()


if "spacy" in sys.modules:
    install_extensions()

__all__ = ["__version__", "install_extensions"]
