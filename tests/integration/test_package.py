"""``adaptner package``: wheels that install offline in a fresh venv and load with spacy.load.

The fresh-venv tests (marked ``integration``) train a tiny CNN pipeline and a tiny-BERT
pipeline on DANSK news, package each, and install the wheels into virtual environments made
for this test session: the pinned dependencies of adaptner come from the normal package
index (for the transformer pipeline also those of the ``trf`` extra), then the pipeline and
adaptner come *only* from the built wheels (``pip install --no-index --find-links
<packages>``, no pip config). The pipeline is loaded in a subprocess run outside the
repository with the network blocked, and must predict the same entities and probabilities as
the directory it was built from. The CNN pipeline's venv has no torch, and loading it
imports none; creating the transformer venv takes two to three minutes and 1.8 GB (mostly
torch); the rest of the file about two minutes.
"""

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy
import pytest
import spacy
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc, DocBin, Span
from spacy.training import Example

import adaptner  # noqa: F401 - installs the Doc extensions
from adaptner.errors import AdaptnerError
from adaptner.packaging import (
    check_pipeline_dir,
    package_name,
    package_pipeline,
    read_history,
    read_scores,
)

ROOT = Path(__file__).resolve().parents[2]
CNN_CONFIG = ROOT / "configs" / "test" / "bio_cnn.cfg"
TRF_CONFIG = ROOT / "configs" / "test" / "bio_trf.cfg"
SENTENCE = "Mette Frederiksen besøgte Aarhus Universitet i København den 3. maj 2023."

#: Run in the fresh venv: load the installed package with the network blocked, predict.
LOAD_SCRIPT = r"""
import importlib, json, socket, sys, time

def no_network(*args, **kwargs):
    raise RuntimeError(f"network access while loading a packaged pipeline: {args!r}")

socket.socket.connect = no_network
socket.socket.connect_ex = no_network
socket.create_connection = no_network

name, text = sys.argv[1], sys.argv[2]
start = time.perf_counter()
import spacy
nlp = spacy.load(name)
load_seconds = time.perf_counter() - start
doc = nlp(text)
import adaptner
bio = nlp.get_pipe("bio_ner")
print(json.dumps({
    "load_seconds": load_seconds,
    "adaptner_file": adaptner.__file__,
    "package_file": importlib.import_module(name).__file__,
    "sys_path": sys.path,
    "pipeline": nlp.pipe_names,
    "tokens": [t.text for t in doc],
    "ents": [[e.start, e.end, e.label_] for e in doc.ents],
    "tags": list(bio.tags),
    "probs": doc._.ner_probs.tolist(),
    "meta": nlp.meta,
    "heavy": [m for m in ("torch", "transformers", "spacy_transformers") if m in sys.modules],
    "int8_layers": sum(
        1
        for proc in ([nlp.get_pipe("transformer")] if "transformer" in nlp.pipe_names else [])
        for node in proc.model.walk()
        for shim in node.shims
        for module in shim._model.modules()
        if type(module).__module__.startswith("torch.ao.nn.quantized.dynamic")
    ),
}))
"""


# --- fixtures ---------------------------------------------------------------------------


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env.update(extra)
    return env


def _make_venv(parent: Path, extras: tuple[str, ...] = ()) -> Path:
    """A venv with adaptner's pinned requirements (plus ``extras``') but not adaptner."""
    venv = parent / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=parent)
    # adaptner's own requirements (the editable install's metadata): the base ones and those
    # of the given extras, without their markers
    deps = []
    for req in importlib.metadata.requires("adaptner") or []:
        spec, _, marker = req.partition(";")
        if not marker or any(f'extra == "{extra}"' in marker for extra in extras):
            deps.append(spec.strip())
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    _run(
        [*pip, "install", "--quiet", "--progress-bar", "off", *deps],
        cwd=parent,
        env=_clean_env(),
        timeout=1200,
    )
    probe = _run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.util as u; print(u.find_spec('adaptner'))",
        ],
        cwd=parent,
        env=_clean_env(),
    )
    assert probe.stdout.strip() == "None", "the fresh venv must not see the repository"
    return venv


@pytest.fixture(scope="session")
def fresh_venv(tmp_path_factory) -> Path:
    """A venv with adaptner's base dependencies (no torch, no transformers), not adaptner.

    Made once per session. Like :func:`fresh_trf_venv`, it is left to pytest's rotation of
    its temporary folders (the last three sessions are kept).
    """
    venv = _make_venv(tmp_path_factory.mktemp("fresh"))
    probe = _run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.util as u; print(u.find_spec('torch'))",
        ],
        cwd=venv.parent,
        env=_clean_env(),
    )
    assert probe.stdout.strip() == "None", "adaptner's base dependencies must not pull torch"
    return venv


@pytest.fixture(scope="session")
def fresh_trf_venv(tmp_path_factory) -> Path:
    """A venv with adaptner's base and ``trf`` dependencies (torch too), not adaptner.

    Made once per session (two to three minutes, 1.8 GB, mostly torch); deleting it here
    would cost as long again on this disk.
    """
    return _make_venv(tmp_path_factory.mktemp("fresh_trf"), extras=("trf",))


def _install_offline(venv: Path, packages: Path, name: str) -> None:
    """Install ``name`` from the wheels in ``packages`` only: no index, no pip config."""
    env = _clean_env(PIP_CONFIG_FILE=os.devnull)
    env.pop("PIP_FIND_LINKS", None)
    env.pop("PIP_EXTRA_INDEX_URL", None)
    _run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--no-index",
            "--find-links",
            str(packages),
            name,
        ],
        cwd=packages,
        env=env,
        timeout=600,
    )


def _load_in_venv(venv: Path, name: str, workdir: Path) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "load_package.py"
    script.write_text(LOAD_SCRIPT, encoding="utf8")
    env = _clean_env(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(workdir / "hf_home"),  # an empty cache: nothing to fall back on
    )
    proc = _run(
        [str(venv / "bin" / "python"), str(script), name, SENTENCE],
        cwd=workdir,
        env=env,
        timeout=600,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cnn_model(tiny_news_model) -> Path:
    """configs/test/bio_cnn.cfg trained on News (the session's shared model)."""
    return tiny_news_model


@pytest.fixture(scope="module")
def history_file(tmp_path_factory) -> Path:
    """A simulation log in the layout of adaptner's AL runs (one JSON line per round)."""
    path = tmp_path_factory.mktemp("history") / "news_legal_margin_reset_s0.jsonl"
    records = [
        {
            "source": "news",
            "target": "legal",
            "strategy": "margin",
            "mode": "reset",
            "seed": 0,
            "round": r,
            "labeled_count": 25 * r,
        }
        for r in range(3)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf8")
    return path


def _check_loaded(got: dict, venv: Path, model_dir: Path, name: str) -> None:
    """The package loaded from the venv and predicts what the source directory predicts."""
    site = next((venv / "lib").glob("python3.*/site-packages")).resolve()
    for key in ("adaptner_file", "package_file"):
        assert Path(got[key]).resolve().is_relative_to(site), f"{key} = {got[key]}"
    assert not [p for p in got["sys_path"] if p and Path(p).resolve().is_relative_to(ROOT)]
    probs = numpy.asarray(got["probs"], dtype="float32")
    assert probs.shape == (len(got["tokens"]), len(got["tags"]))
    assert got["tags"][0] == "O" and len(got["tags"]) == 1 + 2 * 18
    numpy.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    nlp = spacy.load(model_dir)
    doc = nlp(SENTENCE)
    assert [t.text for t in doc] == got["tokens"]
    numpy.testing.assert_allclose(probs, doc._.ner_probs, atol=1e-4)
    assert got["ents"] == [[e.start, e.end, e.label_] for e in doc.ents]
    assert got["meta"]["name"] == name.removeprefix("da_")


# --- the fresh-venv tests ----------------------------------------------------------------


@pytest.mark.integration
def test_cnn_wheel_installs_offline_and_loads(
    cnn_model, dansk_corpus, history_file, fresh_venv, tmp_path
):
    packages = tmp_path / "packages"
    result = package_pipeline(
        cnn_model,
        packages,
        version="0.3.1",
        target="legal",
        history=history_file,
        eval_dir=dansk_corpus / "dev",
        eval_domains="news,legal",
    )
    name = "da_adaptner_news_legal_bio_cnn"  # the config's name says which pipeline it is
    assert result.name == name
    assert sorted(p.name for p in packages.iterdir()) == sorted(
        [f"{name}-0.3.1-py3-none-any.whl", f"adaptner-{adaptner.__version__}-py3-none-any.whl"]
    )
    # meta.json: history, split, per-domain F1 that match an independent scoring
    block = result.meta["adaptner"]
    assert (block["source"], block["target"]) == ("news", "legal")
    assert block["history"]["strategy"] == "margin"
    assert (block["history"]["rounds"], block["history"]["labels_used"]) == (2, 50)
    perf = block["performance"]
    assert perf["split"] == "dev" and list(perf["domains"]) == ["news", "legal"]
    nlp = spacy.load(cnn_model)
    gold = list(DocBin().from_disk(dansk_corpus / "dev" / "news.spacy").get_docs(nlp.vocab))
    copies = (
        Doc(nlp.vocab, words=[t.text for t in d], spaces=[bool(t.whitespace_) for t in d])
        for d in gold
    )
    preds = list(nlp.pipe(copies))
    prf = get_ner_prf([Example(p, g) for p, g in zip(preds, gold, strict=True)])
    assert perf["domains"]["news"]["ents_f"] == pytest.approx(prf["ents_f"], abs=1e-4)
    assert perf["domains"]["news"]["n_docs"] == len(gold)
    assert result.meta["labels"]["bio_ner"] == sorted(nlp.get_pipe("bio_ner").labels)
    assert result.meta["requirements"][0].startswith("adaptner>=")  # no [trf]: no torch
    # the README inside the wheel shows the table
    with zipfile.ZipFile(result.wheel) as zf:
        readme = zf.read(f"{name}/{name}-0.3.1/README.md").decode("utf8")
        requires = [
            line
            for line in zf.read(f"{name}-0.3.1.dist-info/METADATA").decode().splitlines()
            if line.startswith("Requires-Dist")
        ]
    assert "Per-domain F1 (scored on the dev split" in readme
    news_f1 = f"{100 * perf['domains']['news']['ents_f']:.2f}"
    assert any(
        r.startswith("| news | source |") and r.endswith(f"| {news_f1} |")
        for r in readme.splitlines()
    )
    assert any(r.startswith("| legal | target |") for r in readme.splitlines())
    assert any("adaptner" in r for r in requires) and any("spacy" in r for r in requires)
    assert not [r for r in requires if "trf" in r or "torch" in r or "transformers" in r]

    _install_offline(fresh_venv, packages, name)
    got = _load_in_venv(fresh_venv, name, tmp_path / "run")
    _check_loaded(got, fresh_venv, cnn_model, name)
    assert got["heavy"] == []  # torch is not even installed there
    assert got["meta"]["adaptner"]["performance"]["split"] == "dev"
    assert got["meta"]["version"] == "0.3.1"


@pytest.mark.integration
def test_transformer_wheel_carries_its_weights(dansk_corpus, fresh_trf_venv, tmp_path):
    from adaptner.tiny_bert import build_tiny_bert, corpus_texts
    from adaptner.training import train_pipeline

    bert = build_tiny_bert(
        tmp_path / "tiny_bert", corpus_texts(dansk_corpus / "train", limit=300), vocab_size=500
    )
    model = train_pipeline(
        TRF_CONFIG,
        tmp_path / "trf",
        train_path=dansk_corpus / "train",
        dev_path=dansk_corpus / "dev",
        train_domains="news",
        overrides={"paths.transformer": str(bert), "corpora.train.limit": 150},
        verbose=False,
    )
    packages = tmp_path / "packages"
    result = package_pipeline(
        model,
        packages,
        name="adaptner_trf_news",
        eval_dir=dansk_corpus / "dev",
        eval_domains="news",
    )
    name = "da_adaptner_trf_news"
    assert result.name == name
    assert result.meta["requirements"][0].startswith("adaptner[trf]>=")
    assert any(r.startswith("spacy-transformers") for r in result.meta["requirements"])
    with zipfile.ZipFile(result.wheel) as zf:
        weights = zf.getinfo(f"{name}/{name}-0.1.0/transformer/model")
    assert weights.file_size > sum(f.stat().st_size for f in bert.glob("*.safetensors")) > 0
    shutil.rmtree(bert)  # the package must not need the local BERT directory any more

    _install_offline(fresh_trf_venv, packages, name)
    got = _load_in_venv(fresh_trf_venv, name, tmp_path / "run")
    assert got["pipeline"] == ["transformer", "bio_ner"]
    assert got["int8_layers"] == 0
    _check_loaded(got, fresh_trf_venv, model, name)

    # the int8 variant: quantized at load, in the fresh venv, offline
    from adaptner.encoders.quantize import quantize_pipeline

    every = quantize_pipeline(model, tmp_path / "every", keep_fp32=[])
    assert every == 2 * 6 + 1  # two layers of q/k/v/attention-out/intermediate/out + pooler
    layers = quantize_pipeline(model, tmp_path / "trf_int8")  # output projections kept fp32
    assert layers == 2 * 4 + 1
    result = package_pipeline(
        model, packages, int8=True, eval_dir=dansk_corpus / "dev", eval_domains="news",
        calibrate=dansk_corpus / "train" / "news.spacy",
    )  # fmt: skip
    name = "da_adaptner_news_news_bio_trf_int8"
    assert result.name == name
    with zipfile.ZipFile(result.wheel) as zf:  # the smoothing scales ship with the component
        assert zf.getinfo(f"{name}/{name}-0.1.0/int8_transformer/smooth_scales.msgpack").file_size
    _install_offline(fresh_trf_venv, packages, name)
    got = _load_in_venv(fresh_trf_venv, name, tmp_path / "run_int8")
    assert got["pipeline"] == ["transformer", "int8_transformer", "bio_ner"]
    assert got["int8_layers"] == layers
    probs = numpy.asarray(got["probs"], dtype="float32")
    numpy.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    fp32 = spacy.load(model)(SENTENCE)._.ner_probs
    assert probs.shape == fp32.shape and numpy.abs(probs - fp32).max() < 0.2


# --- bad inputs and the readers (seconds, plus the CNN model fixture) ---------------------


def _untrained(tmp_path: Path, initialize: bool) -> Path:
    nlp = spacy.blank("da")
    nlp.add_pipe("bio_ner")
    if initialize:
        doc = nlp.make_doc("Mette bor i Aarhus")
        ref = nlp.make_doc("Mette bor i Aarhus")
        ref.ents = [Span(ref, 0, 1, label="PERSON")]
        nlp.initialize(lambda: [Example(doc, ref)])
    path = tmp_path / ("initialized" if initialize else "blank")
    nlp.to_disk(path)
    return path


def test_not_a_pipeline_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdaptnerError, match=r"empty is not a spaCy pipeline directory"):
        package_pipeline(tmp_path / "empty", tmp_path / "packages")
    with pytest.raises(AdaptnerError, match="does not exist"):
        check_pipeline_dir(tmp_path / "missing")
    training = tmp_path / "training"
    shutil.copytree(_untrained(tmp_path, False), training / "model-best")
    with pytest.raises(AdaptnerError, match=r"Did you mean .*model-best"):
        check_pipeline_dir(training)
    assert not (tmp_path / "packages").exists()


@pytest.mark.parametrize("initialize", [False, True])
def test_never_trained_pipeline(tmp_path, initialize):
    path = _untrained(tmp_path, initialize)
    reason = "its meta.json records no evaluation"
    with pytest.raises(AdaptnerError, match=rf"was never trained \({reason}\).*adaptner train"):
        package_pipeline(path, tmp_path / "packages", source="news")


def test_pipeline_without_labels_is_never_trained(tmp_path):
    path = _untrained(tmp_path, False)
    meta = json.loads((path / "meta.json").read_text())
    meta["performance"] = {"ents_f": 0.5}
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(AdaptnerError, match=r"never trained \(component 'bio_ner' has no labels"):
        package_pipeline(path, tmp_path / "packages", source="news", eval_dir=None)


@pytest.mark.integration
def test_missing_weights_is_never_trained(cnn_model, tmp_path):
    broken = tmp_path / "model-best"
    shutil.copytree(cnn_model, broken)
    (broken / "bio_ner" / "model").unlink()
    with pytest.raises(AdaptnerError, match=r"never trained \(no model weights for bio_ner\)"):
        package_pipeline(broken, tmp_path / "packages", source="news")


def test_cli_error_is_one_red_line(tmp_path, monkeypatch, capsys):
    from adaptner.cli import main

    monkeypatch.setattr(sys, "argv", ["adaptner", "package", str(tmp_path), "--no-eval"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a spaCy pipeline directory" in err[0]


def test_package_name_and_bad_names():
    assert package_name("news", "legal", "bio_cnn") == "adaptner_news_legal_bio_cnn"
    assert package_name("all-but:legal", "legal", "cnn") == "adaptner_all_but_legal_legal_cnn"
    assert (
        package_name("news,web", "social_media", "bio_trf_e5")
        == "adaptner_news_web_social_media_bio_trf_e5"
    )


def test_read_history_json_and_bad_jsonl(tmp_path):
    path = tmp_path / "history.json"
    path.write_text(json.dumps({"strategy": "bald", "rounds": 4, "labels_used": 80}))
    history = read_history(path)
    assert (history["strategy"], history["rounds"], history["labels_used"]) == ("bald", 4, 80)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"round": 0, "strategy": "margin"}\n{"round": 1,\n')
    with pytest.raises(AdaptnerError, match=r"bad\.jsonl:2: invalid JSON"):
        read_history(bad)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"round": 0, "strategy": "margin"}\n{"round": 1, "strategy": "bald"}\n')
    with pytest.raises(AdaptnerError, match="mixes strategies"):
        read_history(mixed)


def test_read_history_from_session_status(tmp_path):
    status = {
        "session": "legal-1",
        "source": "training/news/model-best",  # a path, not a domain: left out
        "strategy": "margin",
        "counts": {"accepted": 120, "rejected": 3},
        "rounds": [{"round": 0, "n_train": 0}, {"round": 1, "n_train": 60}, {"round": 2}],
    }
    path = tmp_path / "status.json"
    path.write_text(json.dumps(status))
    history = read_history(path)
    assert (history["strategy"], history["rounds"], history["labels_used"]) == ("margin", 2, 120)
    assert "source" not in history


@pytest.mark.integration
def test_missing_eval_split(cnn_model, tmp_path):
    with pytest.raises(AdaptnerError, match=r"Evaluation split .*nowhere does not exist"):
        package_pipeline(cnn_model, tmp_path / "packages", eval_dir=tmp_path / "nowhere")


@pytest.mark.integration
def test_scores_from_adaptner_evaluate(cnn_model, dansk_corpus, tmp_path):
    from adaptner.evaluation import evaluate_model, write_report

    report = evaluate_model(cnn_model, dansk_corpus / "dev", domains="news,legal")
    json_path, _ = write_report(report, tmp_path / "eval.json")
    scores = read_scores(json_path)
    assert scores["split"] == "dev"
    for domain in ("news", "legal"):
        assert scores["domains"][domain]["ents_f"] == pytest.approx(
            report["per_domain"][domain]["ents_f"], abs=1e-4
        )
    result = package_pipeline(
        cnn_model, tmp_path / "packages", scores=json_path, adaptner_wheel=False
    )
    assert result.adaptner_wheel is None
    # from train_meta.json: trained on news with configs/test/bio_cnn.cfg
    assert result.name == "da_adaptner_news_news_bio_cnn"
    assert result.meta["adaptner"]["performance"]["domains"] == scores["domains"]
    assert result.meta["adaptner"]["history"] == "none"
    # its own wheel is rebuilt without --force; another pipeline's wheel is not replaced
    package_pipeline(cnn_model, tmp_path / "packages", scores=json_path, adaptner_wheel=False)
    other = tmp_path / "other" / "model-best"
    shutil.copytree(cnn_model.parent, other.parent)
    with pytest.raises(AdaptnerError, match=f"already exists, built from {cnn_model.resolve()}"):
        package_pipeline(other, tmp_path / "packages", scores=json_path, adaptner_wheel=False)
    package_pipeline(
        other, tmp_path / "packages", scores=json_path, adaptner_wheel=False, force=True
    )
    (tmp_path / "junk.json").write_text('{"nothing": "here"}')
    with pytest.raises(AdaptnerError, match=r"junk\.json has no per-domain F1"):
        read_scores(tmp_path / "junk.json")
