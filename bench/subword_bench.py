"""Subword vectors against the word table, on all of dev and on dev text with unseen words.

Usage (from the repository root, after `adaptner encoder e5-small -o assets/e5-small`)::

    python bench/subword_bench.py --max-steps 1500 --seed 0

Three CPU pipelines trained on all DANSK train, selected and scored on dev:

- ``table_train_dev``: configs/bio_cnn_e5vec.cfg with the word table of train + dev word
  types (the table of `spacy project run e5-vectors`: every dev word has a vector);
- ``table_train``: the same with a table of the train word types only (dev words that train
  never had get no vector, as a user's new words);
- ``subwords``: configs/bio_cnn_e5sub.cfg (every word gets a vector from its pieces).
- ``baseline`` (with ``--variants``): configs/bio_cnn.cfg, no vectors, at the same steps.

Scores: dev F1 (micro) on all docs, and on the dev docs with at least one word type that train
does not have ("unseen"). One JSON line per variant to ``<output>/subwords.jsonl``.
"""

import time
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[1]


def main(
    max_steps: int = typer.Option(1500, "--max-steps", min=1),
    seed: int = typer.Option(0, "--seed"),
    encoder: Path = typer.Option(ROOT / "assets/e5-small", "--encoder"),
    work: Path = typer.Option(ROOT / "training/subword_bench", "--work",
                              help="Vector tables and models go here."),
    output: Path = typer.Option(ROOT / "bench/results/subwords", "--output"),
    variants: str = typer.Option("table_train_dev,table_train,subwords", "--variants"),
) -> None:
    """Train, score and record each variant (a trained model in --work is reused)."""
    import spacy

    import adaptner.subword_embed  # noqa: F401 - registers it where entry points are missing
    from adaptner.encoders.vectors import build_vectors, word_types
    from adaptner.evaluation import evaluate_docs, load_eval_docs, load_pipeline
    from adaptner.readers import load_domain_docs
    from adaptner.training import train_pipeline
    from adaptner.util import append_jsonl

    train, dev = ROOT / "corpus/train", ROOT / "corpus/dev"
    vocab = spacy.blank("da").vocab
    train_words = set(word_types(load_domain_docs(train, "all", vocab)))
    gold = load_eval_docs(dev, "all", vocab)
    unseen = {d: [doc for doc in docs if any(t.text not in train_words for t in doc)]
              for d, docs in gold.items()}
    n_unseen = sum(len(v) for v in unseen.values())
    print(f"{n_unseen} of {sum(len(v) for v in gold.values())} dev docs have unseen words")
    for name in [v.strip() for v in variants.split(",") if v.strip()]:
        out_dir = work / name
        if name.startswith("table"):
            splits = [train, dev] if name == "table_train_dev" else [train]
            table = work / f"vectors_{name}"
            if not table.exists():
                words = word_types(doc for s in splits for doc in load_domain_docs(s, "all", vocab))
                build_vectors(encoder, words, table)
            config, overrides = "configs/bio_cnn_e5vec.cfg", {"paths.vectors": str(table)}
        elif name == "baseline":
            config, overrides = "configs/bio_cnn.cfg", {}
        else:
            config, overrides = "configs/bio_cnn_e5sub.cfg", {"paths.encoder": str(encoder)}
        overrides["training.max_steps"] = max_steps
        start = time.time()
        if not (out_dir / "model-best").exists():
            train_pipeline(ROOT / config, out_dir, train_path=train, dev_path=dev, seed=seed,
                           overrides=overrides, verbose=False)
        seconds = round(time.time() - start)
        nlp = load_pipeline(out_dir / "model-best")
        everything = evaluate_docs(nlp, gold, batch_size=256)
        new_words = evaluate_docs(nlp, {d: v for d, v in unseen.items() if v}, batch_size=256)
        record = {"variant": name, "config": config, "seed": seed, "max_steps": max_steps,
                  "dev_f": everything["overall"]["f"], "dev_macro_f": everything["macro"]["f"],
                  "unseen_docs": n_unseen, "unseen_f": new_words["overall"]["f"],
                  "train_seconds_wall": seconds,
                  "model_mb": round(sum(p.stat().st_size for p in (out_dir / "model-best")
                                        .rglob("*") if p.is_file()) / 1e6, 1)}
        print(record, flush=True)
        append_jsonl(output / "subwords.jsonl", record)


if __name__ == "__main__":
    typer.run(main)
