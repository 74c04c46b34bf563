"""Pipeline components."""

from .bio_ner import BioNER, make_bio_ner

__all__ = ["BioNER", "make_bio_ner"]
