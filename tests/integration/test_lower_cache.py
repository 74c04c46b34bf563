"""Cached lower layers on a tiny BERT and real DANSK: the same outputs as the full model, gradients
only in the top layers, a cache tied to the frozen weights, a damaged shard named."""

from pathlib import Path

import numpy
import pytest
import spacy
from spacy.tokens import DocBin

from adaptner.encoders.lower_cache import LowerLayerCache, attach, detach, frozen_digest
from adaptner.encoders.training import transformer_modules
from adaptner.errors import AdaptnerError

pytestmark = pytest.mark.integration
torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]


def dev_texts(corpus_dir: Path, n: int = 60) -> list[str]:
    nlp = spacy.blank("da")
    docs = list(DocBin().from_disk(corpus_dir / "dev" / "all.spacy").get_docs(nlp.vocab))
    return [d.text for d in docs[:n]]


def pipeline_outputs(nlp, texts):
    """The encoder's output at every real word piece, and bio_ner's probabilities."""
    trf, ner = nlp.get_pipe("transformer"), nlp.get_pipe("bio_ner")
    docs = [nlp.make_doc(t) for t in texts]
    batch = trf.model.predict(docs)
    mask = batch.wordpieces.attention_mask.astype(bool)
    hidden = batch.model_output.last_hidden_state.detach().numpy()[mask]
    trf.set_annotations(docs, batch)
    return hidden, [numpy.asarray(p) for p in ner.model.predict(docs)]


def test_cached_path_equals_the_full_model(tiny_trf, corpus_dir, tmp_path):
    nlp = spacy.load(tiny_trf["best"])
    module = transformer_modules(nlp)[0]
    texts = dev_texts(corpus_dir)
    full_h, full_p = pipeline_outputs(nlp, texts)
    cache = attach(module, 1, tmp_path / "cache")
    first_h, first_p = pipeline_outputs(nlp, texts)  # fills the cache
    assert cache.misses > 0 and cache.hits == 0
    misses = cache.misses
    again_h, again_p = pipeline_outputs(nlp, texts)  # reads it
    assert cache.misses == misses and cache.hits == misses
    for h, p in ((first_h, first_p), (again_h, again_p)):
        assert numpy.abs(h - full_h).max() <= 1e-5
        assert max(numpy.abs(a - b).max() for a, b in zip(p, full_p, strict=True)) <= 1e-5
    detach(module)  # writes the rows: a second process reads them without computing
    fresh = LowerLayerCache(cache.digest, 1, tmp_path / "cache")
    assert len(fresh) == len(cache) and fresh.shards()
    # detached, the module is the plain model again
    assert numpy.abs(pipeline_outputs(nlp, texts)[0] - full_h).max() == 0


def test_only_the_top_layers_learn_in_training(corpus_dir, tmp_path):
    from transformers import AutoModel

    from adaptner.tiny_bert import build_tiny_bert, corpus_texts
    from adaptner.training import train_pipeline

    texts = corpus_texts(corpus_dir / "train", domains="news", limit=200, seed=0)
    bert = build_tiny_bert(tmp_path / "bert", texts, seed=0)
    before = AutoModel.from_pretrained(str(bert)).state_dict()
    after_init = {
        "@callbacks": "adaptner.freeze_transformer.v2",
        "patterns": [],
        "cache_layers": 1,
        "cache_dir": str(tmp_path / "cache"),
    }
    best = train_pipeline(
        ROOT / "configs" / "test" / "bio_trf.cfg",
        tmp_path / "model",
        train_path=corpus_dir / "train",
        dev_path=corpus_dir / "dev",
        train_domains="news",
        overrides={
            "paths.transformer": str(bert),
            "initialize.after_init": after_init,
            "training.max_steps": 6,
            "training.eval_frequency": 3,
            "corpora.dev.limit": 20,
        },
        verbose=False,
    )
    after = transformer_modules(spacy.load(best.parent / "model-last"))[0].state_dict()
    bottom = [k for k in before if k.startswith(("embeddings.", "encoder.layer.0."))]
    top = [k for k in before if k.startswith("encoder.layer.1.") and k.endswith("weight")]
    assert bottom and top
    assert all(torch.equal(before[k], after[k]) for k in bottom)
    assert any(not torch.equal(before[k], after[k]) for k in top)
    shards = list((tmp_path / "cache").glob("*-k1/shard-*.npz"))
    assert shards, "the cache was not written to cache_dir"


def test_the_cache_is_tied_to_the_frozen_weights(tiny_trf, corpus_dir, tmp_path):
    nlp = spacy.load(tiny_trf["best"])
    module = transformer_modules(nlp)[0]
    digest = frozen_digest(module, 1)
    with torch.no_grad():  # a change above the cached layers keeps the cache
        module.encoder.layer[1].output.dense.weight.add_(0.1)
    assert frozen_digest(module, 1) == digest
    texts = dev_texts(corpus_dir, 10)
    cache = attach(module, 1, tmp_path)
    pipeline_outputs(nlp, texts)
    detach(module)
    with torch.no_grad():  # a changed cached layer is a new cache: no stale rows
        module.encoder.layer[0].output.dense.weight.add_(0.1)
    assert frozen_digest(module, 1) != digest
    changed = attach(module, 1, tmp_path)
    assert changed.digest != cache.digest and len(changed) == 0
    full = pipeline_outputs(nlp, texts)
    detach(module)
    assert numpy.abs(pipeline_outputs(nlp, texts)[0] - full[0]).max() <= 1e-5
    assert sorted(p.name.split("-")[0] for p in tmp_path.iterdir()) == sorted(
        [cache.digest, changed.digest]
    )


def test_a_damaged_shard_is_named(tiny_trf, corpus_dir, tmp_path):
    nlp = spacy.load(tiny_trf["best"])
    module = transformer_modules(nlp)[0]
    cache = attach(module, 1, tmp_path)
    pipeline_outputs(nlp, dev_texts(corpus_dir, 5))
    detach(module)
    shard = cache.shards()[0]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(AdaptnerError, match=f"{shard}.*Delete it"):
        attach(module, 1, tmp_path)
    with pytest.raises(AdaptnerError, match="between 1 and 1"):
        attach(module, 2)
