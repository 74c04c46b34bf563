"""Distillation on the target's unlabelled text, and the adapt-cpu workflow end to end.

The teacher is the session's tiny News CNN (any bio_ner pipeline teaches); the student is
configs/test/bio_cnn_distil.cfg. Seconds to a minute.
"""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import spacy
import srsly
from spacy.tokens import DocBin

from adaptner.distil import label_corpus
from adaptner.distil_target import (
    check_same_teacher,
    label_target,
    read_target_docs,
    verify_teacher_dir,
)
from adaptner.errors import AdaptnerError
from adaptner.readers import available_domains, read_docbin

ROOT = Path(__file__).resolve().parents[2]
SENTENCES = [
    "Landsretten stadfæstede dommen over direktøren fra Vejle.",
    "Advokat Jens Hansen anker sagen til Højesteret i morgen.",
    "Kommunen i Odense har betalt 2,3 millioner kroner i erstatning.",
]


@pytest.fixture
def jsonl(tmp_path) -> Path:
    path = tmp_path / "my_sentences.jsonl"
    srsly.write_jsonl(path, [{"text": t} for t in SENTENCES])
    return path


def test_unlabelled_jsonl_gets_soft_targets_and_trains_a_student(
    tiny_news_model, corpus_dir, jsonl, tmp_path
):
    from adaptner.training import train_pipeline

    out = tmp_path / "teacher"
    label_corpus(tiny_news_model, corpus_dir / "train", out, domains="news", progress=False)
    report = label_target(tiny_news_model, [jsonl], out, progress=False)
    assert report.files == {"target-my_sentences.spacy": 3}
    counts = verify_teacher_dir(out)
    assert counts["target-my_sentences.spacy"] == 3 and counts["news.spacy"] > 100
    assert available_domains(out) == ["news", "target-my_sentences"]
    meta = json.loads((out / "teacher.json").read_text())
    assert meta["files"]["target-my_sentences.spacy"]["gold_kept"] is False
    nlp = spacy.load(tiny_news_model)
    docs = read_docbin(out / "target-my_sentences.spacy", nlp.vocab)
    assert [d.text for d in docs] == SENTENCES
    for doc in docs:
        assert not doc.ents
        # the teacher's own prediction on the same tokens, row for row
        pred = nlp(spacy.tokens.Doc(nlp.vocab, words=[t.text for t in doc],
                                    spaces=[bool(t.whitespace_) for t in doc]))
        numpy.testing.assert_allclose(doc._.teacher_probs, pred._.ner_probs, atol=1e-5)
    student = train_pipeline(
        ROOT / "configs" / "test" / "bio_cnn_distil.cfg", tmp_path / "student",
        train_path=out, dev_path=corpus_dir / "dev", dev_domains="news",
        overrides={"training.max_steps": 10, "training.eval_frequency": 5}, verbose=False,
    )  # fmt: skip
    assert spacy.load(student)("Jens Hansen bor i Vejle.")._.ner_probs.shape[1] == 37


def test_target_sources(tiny_news_model, corpus_dir, tmp_path):
    nlp = spacy.load(tiny_news_model)
    text = tmp_path / "lines.txt"
    text.write_text("\n".join(SENTENCES) + "\n\n", encoding="utf8")
    assert [d.text for d in read_target_docs(text, nlp)] == SENTENCES
    split = read_target_docs(corpus_dir / "dev", nlp)  # a corpus folder: every domain
    assert {d._.domain for d in split} >= {"news", "legal"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "Fint."}\n{"txt": "Forkert nøgle."}\n', encoding="utf8")
    with pytest.raises(AdaptnerError, match=r"bad\.jsonl:2: expected an object"):
        label_target(tiny_news_model, [bad], tmp_path / "out", progress=False)
    with pytest.raises(AdaptnerError, match="would both be written to target-lines.spacy"):
        label_target(tiny_news_model, [text, tmp_path / "x" / "lines.jsonl"], tmp_path / "o")


@pytest.fixture
def labelled(tiny_news_model, jsonl, tmp_path) -> Path:
    out = tmp_path / "labelled"
    label_target(tiny_news_model, [jsonl], out, progress=False)
    return out


def test_corrupt_teacher_output_is_refused_with_the_file(labelled):
    target = labelled / "target-my_sentences.spacy"
    target.write_bytes(b"not a docbin")
    with pytest.raises(AdaptnerError, match=r"target-my_sentences\.spacy is corrupt"):
        verify_teacher_dir(labelled)
    target.unlink()
    with pytest.raises(AdaptnerError, match=r"target-my_sentences\.spacy does not exist"):
        verify_teacher_dir(labelled)
    (labelled / "teacher.json").write_text("{not json")
    with pytest.raises(AdaptnerError, match=r"teacher\.json is not valid JSON"):
        verify_teacher_dir(labelled)


def _rewrite(path: Path, change) -> None:
    nlp = spacy.blank("da")
    docs = read_docbin(path, nlp.vocab)
    change(docs[1])
    DocBin(store_user_data=True, docs=docs).to_disk(path)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda d: setattr(d._, "teacher_probs", d._.teacher_probs[:-1]), "shape"),
        (lambda d: setattr(d._, "teacher_tags", list(reversed(d._.teacher_tags))), "tags differ"),
        (lambda d: setattr(d._, "teacher_probs", d._.teacher_probs * 2), "not probability"),
        (lambda d: setattr(d._, "teacher_probs", None), "no teacher probabilities"),
    ],
)
def test_mismatched_teacher_output_is_refused_with_file_and_doc(labelled, change, message):
    target = labelled / "target-my_sentences.spacy"
    _rewrite(target, change)
    with pytest.raises(AdaptnerError, match=rf"target-my_sentences\.spacy: doc 1 .*{message}"):
        verify_teacher_dir(labelled)


def test_other_teacher_tags_are_refused(labelled):
    with pytest.raises(AdaptnerError, match=r"teacher\.json records a teacher with other tags"):
        check_same_teacher(labelled, ["O", "B-PERSON", "I-PERSON"])
    with pytest.raises(AdaptnerError, match=r"teacher's tags differ from the student's"):
        verify_teacher_dir(labelled, tags=["O"])
    check_same_teacher(labelled, json.loads((labelled / "teacher.json").read_text())["tags"])


def _workflow_commands(names: dict[str, str]) -> list[str]:
    project = srsly.read_yaml(ROOT / "project.yml")
    commands = {c["name"]: c for c in project["commands"]}
    variables = {**project["vars"], **names}
    out = []
    for step in project["workflows"]["adapt-cpu"]:
        for line in commands[step]["script"]:
            for key, value in variables.items():
                line = line.replace("${vars." + key + "}", str(value))
            assert "${" not in line, line
            out.append(line)
    return out


def test_adapt_cpu_workflow_end_to_end(tiny_news_model, corpus_dir, jsonl, tmp_path):
    """The workflow's own commands, with the tiny configs: label, train, package."""
    work = tmp_path / "project"
    (work / "corpus").mkdir(parents=True)
    (work / "corpus" / "train").symlink_to(corpus_dir / "train")
    (work / "corpus" / "dev").symlink_to(corpus_dir / "dev")
    lines = _workflow_commands({
        "adapted_teacher": str(tiny_news_model),
        "target_pool": str(jsonl),
        "student_config": str(ROOT / "configs" / "test" / "bio_cnn_distil.cfg"),
        "target": "legal",
    })  # fmt: skip
    extra = {
        "distil": ["--domains", "news"],
        "train": ["--training.max_steps", "10", "--training.eval_frequency", "5"],
        "package": ["--eval-domains", "legal", "--eval-limit", "20"],
    }
    for line in lines:
        argv = shlex.split(line)
        assert argv[:3] == ["python", "-m", "adaptner"], line
        argv = [sys.executable, *argv[1:], *extra[argv[3]]]
        proc = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{line}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    student = work / "training" / "cpu_student" / "legal" / "model-best"
    assert spacy.load(student).pipe_names == ["tok2vec", "bio_ner"]
    wheels = sorted(p.name for p in (work / "packages").glob("*.whl"))
    assert any(w.startswith("da_adaptner_") and "_legal_" in w for w in wheels), wheels
    assert "target-my_sentences.spacy" in verify_teacher_dir(work / "corpus" / "teacher_legal"
                                                             / "train")
