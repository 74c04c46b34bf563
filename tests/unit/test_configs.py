"""Every config in configs/ and configs/test/ loads, assembles and resolves offline."""

import socket
from pathlib import Path

import pytest
from spacy.schemas import ConfigSchemaInit, ConfigSchemaTraining
from spacy.util import load_config, load_model_from_config, registry

import adaptner  # noqa: F401 - registers adaptner's functions
from adaptner.labels import ONTONOTES_LABELS

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "configs"
CONFIGS = sorted([*CONFIG_DIR.glob("*.cfg"), *(CONFIG_DIR / "test").glob("*.cfg")])
TWINS = sorted((CONFIG_DIR / "test").glob("*.cfg"))


def _id(path: Path) -> str:
    return str(path.relative_to(CONFIG_DIR))


@pytest.fixture
def no_hub(monkeypatch):
    """Fail loudly if anything opens a socket or asks spacy-transformers for pretrained weights.

    spacy-transformers builds ``TransformerModel`` without touching the hub: the Hugging Face
    tokenizer and weights are fetched by the model's ``init`` (``nlp.initialize``), or restored
    from bytes by ``spacy.load``. Assembling a config (``load_model_from_config``) must therefore
    work offline; this fixture makes the test prove it instead of relying on a cache.
    """
    import spacy_transformers.layers.transformer_model as trf_model
    import spacy_transformers.pipeline_component as trf_pipe

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access during config assembly: {args!r}")

    def no_weights(source, *args, **kwargs):
        raise AssertionError(f"spacy-transformers tried to load {source!r} at assembly")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(trf_model, "huggingface_from_pretrained", no_weights)
    monkeypatch.setattr(trf_pipe, "huggingface_from_pretrained", no_weights)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _keys(config: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in config.items():
        name = f"{prefix}{key}"
        out.add(name)
        if isinstance(value, dict) and not any(k.startswith("@") for k in value):
            out |= _keys(value, name + ".")
    return out


def test_configs_found():
    names = {_id(p) for p in CONFIGS}
    assert {"bio_cnn.cfg", "bio_trf.cfg", "test/bio_cnn.cfg", "test/bio_trf.cfg"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=_id)
def test_config_assembles_and_resolves(path: Path, no_hub):
    config = load_config(path)
    if "nlp" not in config:
        pytest.skip(f"{_id(path)} is not a pipeline config (no [nlp] section)")
    nlp = load_model_from_config(config, auto_fill=True, validate=True)
    assert nlp.pipe_names == config["nlp"]["pipeline"]
    filled = nlp.config.interpolate()
    training = registry.resolve(filled["training"], schema=ConfigSchemaTraining)
    assert training["optimizer"] is not None and callable(training["batcher"])
    corpora = registry.resolve(filled["corpora"])
    for dot_name in (filled["training"]["train_corpus"], filled["training"]["dev_corpus"]):
        assert callable(corpora[dot_name.split(".", 1)[1]])
    init = registry.resolve(filled["initialize"], schema=ConfigSchemaInit)
    for name, settings in init["components"].items():
        assert name in nlp.pipe_names
        if "labels" in settings and "bio_ner" in name:
            assert settings["labels"] == ONTONOTES_LABELS
    if "transformer" in nlp.pipe_names:
        # Weights load only at initialize (or from disk): none are present after assembly.
        assert nlp.get_pipe("transformer").model.attrs["has_transformer"] is False


@pytest.mark.parametrize("twin", TWINS, ids=_id)
def test_test_twin_has_the_same_structure(twin: Path):
    """A tiny twin differs only in values, so tests run the real config's code path."""
    full = CONFIG_DIR / twin.name
    assert full.exists(), f"{_id(twin)} has no full config {full.name} in configs/"
    twin_keys = _keys(load_config(twin, interpolate=False))
    full_keys = _keys(load_config(full, interpolate=False))
    only_twin, only_full = sorted(twin_keys - full_keys), sorted(full_keys - twin_keys)
    assert twin_keys == full_keys, f"only in twin: {only_twin}; only in full: {only_full}"


def test_bio_trf_is_the_paper_setup():
    config = load_config(CONFIG_DIR / "bio_trf.cfg", interpolate=True)
    assert config["nlp"]["pipeline"] == ["transformer", "bio_ner"]
    trf = config["components"]["transformer"]["model"]
    assert trf["@architectures"] == "spacy-transformers.TransformerModel.v3"
    assert trf["name"] == "bert-base-multilingual-cased"
    assert trf["tokenizer_config"]["use_fast"] is True
    assert trf["mixed_precision"] is False
    assert trf["get_spans"] == {
        "@span_getters": "spacy-transformers.strided_spans.v1",
        "window": 128,
        "stride": 96,
    }
    head = config["components"]["bio_ner"]["model"]
    assert head["@architectures"] == "adaptner.BioTagger.v1"
    assert head["dropout"] == 0.1
    assert head["tok2vec"]["@architectures"] == "spacy-transformers.TransformerListener.v1"
    assert head["tok2vec"]["pooling"] == {"@layers": "reduce_mean.v1"}
    opt = config["training"]["optimizer"]
    assert opt["@optimizers"] == "Adam.v1"
    assert (opt["L2_is_weight_decay"], opt["L2"], opt["grad_clip"]) == (True, 0.01, 1.0)
    assert opt["learn_rate"]["@schedules"] == "warmup_linear.v1"
    assert opt["learn_rate"]["initial_rate"] == 5e-5
    assert opt["learn_rate"]["warmup_steps"] == 250
    batcher = config["training"]["batcher"]
    assert batcher["@batchers"] == "spacy.batch_by_padded.v1"
    assert (batcher["size"], batcher["buffer"]) == (2000, 256)
    assert config["system"]["gpu_allocator"] == "pytorch"


def test_bio_trf_twin_reads_the_model_from_paths(no_hub, tmp_path):
    raw = load_config(CONFIG_DIR / "test" / "bio_trf.cfg", interpolate=False)
    assert raw["components"]["transformer"]["model"]["name"] == "${paths.transformer}"
    config = load_config(
        CONFIG_DIR / "test" / "bio_trf.cfg", overrides={"paths.transformer": str(tmp_path)}
    )
    nlp = load_model_from_config(config, auto_fill=True, validate=True)
    assert nlp.get_pipe("transformer").model.attrs["name"] == str(tmp_path)


def test_no_hub_fixture_blocks_the_network(no_hub):
    with pytest.raises(AssertionError, match="network access"):
        socket.create_connection(("huggingface.co", 443), timeout=1)



def _flat(config: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize(
    "name,differences,base_name",
    [
        (
            "bio_cnn_e5vec.cfg",
            {
                "paths.vectors": "assets/e5_vectors",
                "components.tok2vec.model.embed.include_static_vectors": True,
            },
            "bio_cnn.cfg",
        ),
        (
            "bio_cnn_distil.cfg",
            {
                "paths.train": "corpus/teacher/train",
                "components.bio_ner.distill_weight": 0.5,
                "components.bio_ner.temperature": 1.0,
            },
            "bio_cnn.cfg",
        ),
        (
            "bio_cnn_e5sub_distil.cfg",
            {
                "paths.train": "corpus/teacher/train",
                "components.bio_ner.distill_weight": 0.5,
                "components.bio_ner.temperature": 1.0,
            },
            "bio_cnn_e5sub.cfg",
        ),
    ],
)
def test_lever_configs_differ_from_their_base_only_where_they_say(name, differences, base_name):
    """The lever configs are their base config plus their documented differences, nothing
    else."""
    base = _flat(load_config(CONFIG_DIR / base_name, interpolate=False))
    derived = _flat(load_config(CONFIG_DIR / name, interpolate=False))
    changed = {k: v for k, v in derived.items() if base.get(k, object()) != v}
    assert changed == differences
    assert set(base) - set(derived) == set()
