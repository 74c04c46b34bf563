"""Pretraining texts, reader, config and weights; the ablation levers of bench/ablation.py."""

import importlib.util
import json
import socket
from pathlib import Path

import pytest
import spacy
from spacy.schemas import ConfigSchemaPretrain, ConfigSchemaTraining
from spacy.tokens import Doc, DocBin, Span
from spacy.training.initialize import init_nlp
from spacy.util import load_config, load_model_from_config, registry
from spacy.vocab import Vocab

import adaptner  # noqa: F401 - registers adaptner's functions and extensions
from adaptner.errors import AdaptnerError
from adaptner.pretrain import (
    META_NAME,
    TEXTS_NAME,
    WEIGHTS_NAME,
    build_pretrain_config,
    collect_texts,
    create_pretrain_text,
    is_transductive,
    prepare_texts,
    run_pretraining,
)
from adaptner.training import load_training_config

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "test" / "bio_cnn.cfg"
VOCAB = Vocab()

SENTENCES = [
    (["Anna", "Hansen", "bor", "i", "Aarhus", "."], [(0, 2, "PERSON"), (4, 5, "GPE")]),
    (["Mødet", "er", "i", "morgen", "kl.", "10", "."], [(3, 4, "DATE")]),
    (["Loven", "gælder", "fra", "1.", "januar", "2020", "."], [(3, 6, "DATE")]),
    (
        ["Novo", "Nordisk", "købte", "tre", "firmaer", "i", "USA", "."],
        [(0, 2, "ORGANIZATION"), (3, 4, "CARDINAL"), (6, 7, "GPE")],
    ),
    (["Hej", "med", "dig", ",", "Peter", "!"], [(4, 5, "PERSON")]),
    (["Det", "koster", "50", "kroner", "i", "København", "."], [(2, 4, "MONEY"), (5, 6, "GPE")]),
]


def make_doc(words, ents, domain):
    doc = Doc(VOCAB, words=words)
    doc.set_ents([Span(doc, s, e, label=lab) for s, e, lab in ents], default="outside")
    doc._.domain = domain
    return doc


def write_docbin(path: Path, docs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    DocBin(store_user_data=True, docs=docs).to_disk(path)


@pytest.fixture
def corpus(tmp_path) -> Path:
    """corpus/{train,dev} with news (4 sentences x 3) and legal (2 sentences x 3)."""
    for split in ("train", "dev"):
        news = [make_doc(w, e, "news") for w, e in SENTENCES[:4] * 3]
        legal = [make_doc(w, e, "legal") for w, e in SENTENCES[4:] * 3]
        write_docbin(tmp_path / "corpus" / split / "news.spacy", news)
        write_docbin(tmp_path / "corpus" / split / "legal.spacy", legal)
    return tmp_path / "corpus"


@pytest.fixture
def offline(monkeypatch):
    """Fail if anything opens a network connection."""

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)


# --- texts -------------------------------------------------------------------------------


def test_collect_texts_from_domains_and_pools(corpus, tmp_path):
    pool_jsonl = tmp_path / "pool.jsonl"
    pool_jsonl.write_text('{"text": "Et nyt domæne ."}\n\n{"text": "Endnu en sætning ."}\n')
    pool_txt = tmp_path / "pool.txt"
    pool_txt.write_text("Linje et .\n\nLinje to .\n")
    texts, sources = collect_texts([corpus / "train"], "news", [pool_jsonl, pool_txt])
    assert len(texts) == 12 + 2 + 2
    assert texts[0].strip() == "Anna Hansen bor i Aarhus ."
    assert texts[-2:] == ["Linje et .", "Linje to ."]
    assert [s["texts"] for s in sources] == [12, 2, 2]
    assert sources[0]["domains"] == ["news"]
    only_pool, _ = collect_texts([corpus / "train"], "none", [pool_jsonl])
    assert only_pool == ["Et nyt domæne .", "Endnu en sætning ."]
    both, _ = collect_texts([corpus / "train", corpus / "dev"], "all")
    assert len(both) == 2 * 18


def test_collect_texts_errors(corpus, tmp_path):
    with pytest.raises(AdaptnerError, match="No text to pretrain on"):
        collect_texts([corpus / "train"], "none", [])
    with pytest.raises(AdaptnerError, match="Unknown domain 'nws'"):
        collect_texts([corpus / "train"], "nws")
    with pytest.raises(AdaptnerError, match="does not exist"):
        collect_texts([tmp_path / "missing"], "all")
    with pytest.raises(AdaptnerError, match="Pool file .*missing.jsonl does not exist"):
        collect_texts([corpus / "train"], "all", [tmp_path / "missing.jsonl"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(AdaptnerError, match=r"bad.jsonl:2: invalid JSON"):
        collect_texts([corpus / "train"], "none", [bad])


def test_prepare_texts_dedupes_shuffles_and_limits():
    texts = [" b ", "a", "", "b", "c", "   ", "d", "a"]
    out = prepare_texts(texts, seed=3)
    assert sorted(out) == ["a", "b", "c", "d"]
    assert prepare_texts(texts, seed=3) == out
    assert len(prepare_texts(texts, seed=3, limit=2)) == 2
    assert prepare_texts(texts, seed=3, limit=2) == out[:2]
    assert prepare_texts([], seed=0) == []
    with pytest.raises(AdaptnerError, match="--limit"):
        prepare_texts(texts, limit=-1)


def test_transductive_by_split_name(tmp_path):
    assert not is_transductive([tmp_path / "corpus" / "train"])
    assert is_transductive([tmp_path / "corpus" / "train", tmp_path / "corpus" / "dev"])
    assert not is_transductive([tmp_path / "corpus" / "dev"], "none")


# --- reader ------------------------------------------------------------------------------


def test_reader_reshuffles_every_epoch_and_filters_lengths(tmp_path):
    path = tmp_path / TEXTS_NAME
    lines = [{"text": " ".join(["ord"] * n)} for n in range(1, 30)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    nlp = spacy.blank("da")
    read = create_pretrain_text(path, min_length=2, max_length=20, seed=0, epochs=2)
    first = [len(eg.reference) for eg in read(nlp)]
    second = [len(eg.reference) for eg in read(nlp)]
    assert sorted(first) == sorted(second) == list(range(2, 20))
    assert first != second
    fixed = create_pretrain_text(path, min_length=0, max_length=0, shuffle=False)
    assert [len(eg.reference) for eg in fixed(nlp)] == list(range(1, 30))


def test_reader_errors(tmp_path):
    nlp = spacy.blank("da")
    with pytest.raises(AdaptnerError, match="do not exist"):
        list(create_pretrain_text(tmp_path / "none.jsonl")(nlp))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fint"}\n["no"]\n')
    with pytest.raises(AdaptnerError, match=r"bad.jsonl:2: expected an object"):
        list(create_pretrain_text(bad)(nlp))
    short = tmp_path / "short.jsonl"
    short.write_text('{"text": "a"}\n')
    with pytest.raises(AdaptnerError, match="holds no text of 3 to 500 tokens"):
        list(create_pretrain_text(short, min_length=3)(nlp))


# --- config ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bio_cnn.cfg", "test/bio_cnn.cfg"])
def test_bio_cnn_has_a_pretraining_block(name):
    """spaCy ignores paths.init_tok2vec when [pretraining] is empty: the block must be filled."""
    config = load_config(ROOT / "configs" / name, interpolate=True)
    P = registry.resolve(config["pretraining"], schema=ConfigSchemaPretrain)
    assert P["component"] == "tok2vec" and P["layer"] == ""
    assert config["initialize"]["init_tok2vec"] is None


def test_build_pretrain_config(tmp_path):
    config = build_pretrain_config(TINY, tmp_path / TEXTS_NAME, epochs=3, seed=7)
    assert config["pretraining"]["max_epochs"] == 3
    assert config["pretraining"]["corpus"] == "corpora.pretrain"
    resolved = config.interpolate()
    reader = resolved["corpora"]["pretrain"]
    assert reader["path"] == str(tmp_path / TEXTS_NAME)
    assert (reader["seed"], reader["epochs"]) == (7, 3)
    assert callable(registry.resolve({"c": reader})["c"])


def test_build_pretrain_config_fills_an_empty_block(tmp_path):
    config = build_pretrain_config(ROOT / "configs" / "ner_cnn.cfg", tmp_path / TEXTS_NAME)
    assert config["pretraining"]["component"] == "tok2vec"
    assert config["pretraining"]["objective"]["@architectures"] == "spacy.PretrainCharacters.v1"


def test_build_pretrain_config_errors(tmp_path):
    with pytest.raises(AdaptnerError, match="is not in the pipeline"):
        build_pretrain_config(ROOT / "configs" / "bio_trf.cfg", tmp_path / TEXTS_NAME)
    with pytest.raises(AdaptnerError, match="--epochs must be at least 1"):
        build_pretrain_config(TINY, tmp_path / TEXTS_NAME, epochs=0)
    with pytest.raises(AdaptnerError, match="does not exist"):
        build_pretrain_config(tmp_path / "none.cfg", tmp_path / TEXTS_NAME)


# --- weights -----------------------------------------------------------------------------


def initial_loss(corpus: Path, weights: Path | None) -> tuple[float, bytes]:
    """bio_ner's loss on the first update of a fresh training, and the initial tok2vec bytes."""
    overrides = {"paths.init_tok2vec": str(weights)} if weights else {}
    config = load_training_config(
        TINY,
        train_path=corpus / "train",
        dev_path=corpus / "dev",
        train_domains="all",
        seed=0,
        overrides=overrides,
    )
    nlp = init_nlp(config)
    tok2vec_bytes = nlp.get_pipe("tok2vec").model.to_bytes()
    corpus_reader = registry.resolve({"c": config.interpolate()["corpora"]["train"]})["c"]
    examples = list(corpus_reader(nlp))
    losses: dict[str, float] = {}
    nlp.update(examples, drop=0.0, losses=losses)
    return losses["bio_ner"], tok2vec_bytes


def test_pretraining_writes_weights_that_training_loads(corpus, tmp_path, offline):
    out = tmp_path / "pretrain"
    logged: list[str] = []
    weights = run_pretraining(
        TINY,
        out,
        corpus_dirs=[corpus / "train"],
        domains="all",
        epochs=2,
        seed=0,
        progress=False,
        log=logged.append,
    )
    assert weights == out / WEIGHTS_NAME and weights.stat().st_size > 0
    meta = json.loads((out / META_NAME).read_text())
    assert meta["texts"] == 6  # 18 sentences, 6 distinct
    assert meta["epochs"] == 2 and meta["transductive"] is False and not logged
    assert sorted(meta["epoch_loss"]) == ["0", "1"]
    assert (out / "config.cfg").exists() and (out / TEXTS_NAME).exists()
    assert not list(tmp_path.glob(".pretrain.*"))  # atomic: no temporary left

    cold_loss, cold_bytes = initial_loss(corpus, None)
    warm_loss, warm_bytes = initial_loss(corpus, weights)
    assert warm_bytes == weights.read_bytes()  # the tok2vec is exactly the pretrained one
    assert cold_bytes != warm_bytes
    assert warm_loss != pytest.approx(cold_loss, rel=1e-6)
    again, _ = initial_loss(corpus, None)
    assert again == pytest.approx(cold_loss, rel=1e-6)  # the difference is not seed noise


def test_pretraining_on_dev_is_flagged_and_failure_leaves_nothing(corpus, tmp_path):
    logged: list[str] = []
    run_pretraining(
        TINY,
        tmp_path / "pt",
        corpus_dirs=[corpus / "train", corpus / "dev"],
        domains="news",
        epochs=1,
        limit=3,
        progress=False,
        log=logged.append,
    )
    meta = json.loads((tmp_path / "pt" / META_NAME).read_text())
    assert meta["transductive"] is True and meta["texts"] == 3
    assert any("transductive" in line for line in logged)
    with pytest.raises(AdaptnerError, match="Unknown domain"):
        run_pretraining(TINY, tmp_path / "bad", corpus_dirs=[corpus / "train"], domains="x")
    assert not (tmp_path / "bad").exists()


def test_cli_pretrain(corpus, tmp_path):
    from typer.testing import CliRunner

    from adaptner.cli import app

    out = tmp_path / "cli"
    args = ["pretrain", str(TINY), "-o", str(out), "--corpus", str(corpus / "train")]
    result = CliRunner().invoke(app, [*args, "-d", "legal", "--epochs", "1", "-q"])
    assert result.exit_code == 0, result.output
    assert "pretrained tok2vec on 2 texts" in result.output
    assert f"--paths.init_tok2vec {out / WEIGHTS_NAME}" in result.output
    result = CliRunner().invoke(app, [*args, "--pretraining.dropout", "0.3", "-e", "1", "-q"])
    assert result.exit_code == 0, result.output
    assert load_config(out / "config.cfg")["pretraining"]["dropout"] == pytest.approx(0.3)


# --- ablation levers ---------------------------------------------------------------------


def _load_bench():
    spec = importlib.util.spec_from_file_location("ablation", ROOT / "bench" / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ablation = _load_bench()


@pytest.mark.parametrize("lever", ablation.LEVERS, ids=lambda lever: lever.name)
def test_ablation_lever_config_resolves(lever, offline):
    config = ablation.lever_config(lever, ROOT / "configs" / "bio_cnn.cfg")
    config = type(config)().from_str(config.to_str(), interpolate=False)  # as the bench writes
    for key, value in lever.changes.items():
        node = config
        for part in key.split("."):
            node = node[part]
        assert node == value
    nlp = load_model_from_config(config, auto_fill=True, validate=True)
    filled = nlp.config.interpolate()
    registry.resolve(filled["training"], schema=ConfigSchemaTraining)
    nlp.get_pipe("tok2vec").model.initialize(X=[nlp.make_doc("Anna bor i Aarhus .")])
    if lever.pretrain:
        registry.resolve(filled["pretraining"], schema=ConfigSchemaPretrain)


def test_ablation_quick_budget_and_helpers():
    low = ablation.lever_config(ablation.LEVER_NAMES["low_label"], TINY, quick=True)
    assert low["corpora"]["train"]["limit"] == 200 and low["training"]["max_steps"] == 30
    with pytest.raises(KeyError, match="components.nope"):
        ablation.set_dotted({"components": {}}, "components.nope.width", 1)
    assert [x.name for x in ablation.select_levers("baseline,ner_cnn")] == ["baseline", "ner_cnn"]
    assert "pretrain_dev" not in {x.name for x in ablation.select_levers("default")}
    assert ablation.parse_seeds("0,1,1") == [0, 1]


def test_ablation_table_mean_sd_and_delta():
    levers = [ablation.LEVER_NAMES[n] for n in ("baseline", "viterbi", "pretrain_dev")]
    rows = [
        ("baseline", 0, 0.70),
        ("baseline", 1, 0.72),
        ("viterbi", 0, 0.73),
        ("viterbi", 1, 0.75),
        ("pretrain_dev", 0, 0.8),
    ]
    records = [
        {
            "lever": name,
            "seed": seed,
            "dev_f": f,
            "per_domain_f": {"news": f - 0.1, "legal": f + 0.1, "dannet": 0.0},
            "words_per_second": 10000.0 + seed,
            "train_seconds": 100.0,
            "pretrain_seconds": 30.0 if name == "pretrain_dev" else None,
            "speed_vs_baseline": {"viterbi": 0.9 - 0.1 * seed}.get(name),
        }
        for name, seed, f in rows
    ]
    table = ablation.ablation_table(records, levers, "full")
    lines = {line.split(" | ")[0]: line for line in table.splitlines() if line.startswith("| ")}
    assert "| 2 | 71.00 ± 1.41 | – | 71.00 ± 1.41 |" in lines["| baseline"]  # dannet left out
    assert "| 2 | 74.00 ± 1.41 | +3.00 |" in lines["| viterbi"]
    assert "| 0.85 ± 0.07 |" in lines["| viterbi"]
    assert "| 30 |" in lines["| pretrain_dev †"] and "| 30 |" not in lines["| baseline"]
    assert "| 1 | 80.00 | +9.00 |" in lines["| pretrain_dev †"]
    assert "transductive" in table
