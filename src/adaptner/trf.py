"""The optional transformer stack (the ``trf`` extra): what needs it, and a clear error without it.

CNN pipelines need neither torch nor transformers, so adaptner installs them only with
``pip install "adaptner[trf]"``. This matters for start-up: spaCy's ``Language`` imports every
``spacy_factories`` entry point, so with spacy-transformers installed *every* ``spacy.blank`` /
``spacy.load`` imports torch and transformers (seconds), and thinc imports torch on ``import
spacy`` whenever it is installed. A pipeline needs the stack when its config uses a function
registered by one of :data:`TRF_MODULES` (the ``transformer`` factory, the
``spacy-transformers.*`` architectures, span getters, ...).
"""

import importlib.util
from collections.abc import Iterator
from typing import Any

from .errors import AdaptnerError

#: The distributions of the ``trf`` extra, as top-level module names.
TRF_MODULES: tuple[str, ...] = ("spacy_transformers", "transformers", "torch")
#: The requirement that installs them (what transformer pipeline packages depend on).
TRF_EXTRA = "adaptner[trf]"
INSTALL_HINT = f'pip install "{TRF_EXTRA}"'
#: Registered names that spacy-transformers provides (known without importing it).
_TRF_PREFIX = "spacy-transformers."
_TRF_FACTORIES = ("transformer",)


def missing_trf_modules() -> list[str]:
    """The modules of the ``trf`` extra that are not installed (found without importing them)."""
    return [name for name in TRF_MODULES if importlib.util.find_spec(name) is None]


def registered_names(config: Any) -> Iterator[tuple[str, str]]:
    """(registry, name) of every function the runtime sections of a pipeline config use.

    Like ``spacy package``, only ``[nlp]`` and ``[components]`` count (not training or
    initialization); a component's ``factory`` counts as a name in the ``factories`` registry.
    """

    def walk(node: Any) -> Iterator[tuple[str, str]]:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and key.startswith("@") and isinstance(value, str):
                    yield key[1:], value
                else:
                    yield from walk(value)

    for section in ("nlp", "components"):
        yield from walk(config.get(section, {}))
    for component in (config.get("components") or {}).values():
        if isinstance(component, dict) and isinstance(component.get("factory"), str):
            yield "factories", component["factory"]


def _module_of(registry_name: str, name: str, lang: str | None) -> str | None:
    """The module that registered ``name`` (spaCy's registry lookup), or None if unknown."""
    from catalogue import RegistryError
    from spacy.util import registry

    for candidate in ([f"{lang}.{name}"] if lang else []) + [name]:
        try:
            return registry.find(registry_name, candidate).get("module")
        except (RegistryError, ValueError, KeyError, AttributeError):
            continue
    return None


def config_needs_trf(config: Any, *, lookup: bool = True) -> bool:
    """Whether a pipeline config needs the ``trf`` extra to load.

    Args:
        config: The pipeline config (``nlp.config`` or a confection ``Config``).
        lookup: Also ask spaCy's registry which module registered each name (catches
            third-party names built on torch/transformers; imports them). Without it, only
            the names spacy-transformers is known to register count (cheap, works when the
            stack is not installed).
    """
    lang = (config.get("nlp") or {}).get("lang")
    for registry_name, name in registered_names(config):
        if name.startswith(_TRF_PREFIX) or (
            registry_name == "factories" and name in _TRF_FACTORIES
        ):
            return True
        if lookup:
            module = _module_of(registry_name, name, lang)
            if module and module.split(".")[0] in TRF_MODULES:
                return True
    return False


def check_trf_installed(config: Any, what: str) -> None:
    """Raise a clear error if ``config`` needs the transformer stack and it is missing.

    Args:
        config: A pipeline or training config.
        what: The config's name for the message (e.g. its path).

    Raises:
        AdaptnerError: the config uses spacy-transformers and the ``trf`` extra is missing.
    """
    missing = missing_trf_modules()
    if missing and config_needs_trf(config, lookup=False):
        raise AdaptnerError(
            f"{what} has a transformer component, but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed: {INSTALL_HINT}"
        )


def require_trf(what: str) -> None:
    """Raise a clear error if the transformer stack is missing (``what`` needs it).

    Raises:
        AdaptnerError: a module of the ``trf`` extra is not installed.
    """
    missing = missing_trf_modules()
    if missing:
        raise AdaptnerError(
            f"{what} needs the transformer stack ({', '.join(missing)} not installed): "
            f"{INSTALL_HINT}"
        )
