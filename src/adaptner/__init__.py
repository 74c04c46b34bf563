"""adaptner: adapt a Danish spaCy NER pipeline to a new domain with active learning."""

from .about import __version__
from .extensions import install_extensions

install_extensions()

__all__ = ["__version__", "install_extensions"]
