"""The e5-small fine-tuning recipe, measured: a resumable sweep over the levers of
configs/bio_trf_e5.cfg (all DANSK train, or News only for the active-learning source; scored
on dev).

    python bench/e5_recipe.py run                      # every row, seed 0, in the order below
    python bench/e5_recipe.py run --rows len6,cache4-len6 --seeds 0,1
    python bench/e5_recipe.py table                    # bench/results/e5_recipe/sweep.md
    python bench/e5_recipe.py cached-equality          # cached lower layers vs the full model

Each row is the config as the sweep began (one encoder rate, 1e-4: `_SWEEP_BASE`; the
shipped config now trains the row bs300-llrd-len6) plus the overrides named below, trained with
`adaptner train --resume` into <runs>/<row>-s<seed> (a killed sweep continues where it was: a
finished row is skipped, an interrupted one resumes from its last checkpoint), then scored on
dev with `adaptner evaluate`'s scorer. A finished row is appended to
bench/results/e5_recipe/sweep.jsonl (dev F1 micro / macro / per domain, steps, epochs, wall
time, the dev curve) and the table is rewritten. Wall times are what the machine gave: run
the sweep alone for comparable times.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import typer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "e5_recipe"
CONFIG = "configs/bio_trf_e5.cfg"
DOMAINS = ["news", "conversation", "legal", "social_media", "web", "wiki_books"]
app = typer.Typer(add_completion=False, no_args_is_help=True)

_FIRST = {"components.bio_ner.model.tok2vec.pooling.@layers": "reduce_first.v1"}
_LLRD = {"training.optimizer.encoder_lr_scale": 0.3, "training.optimizer.layer_decay": 0.8}
#: What the rows of configs/bio_trf_e5.cfg were measured against: the config as it was before
#: the sweep's winner became its default (one encoder rate, 1e-4, in every layer). Every row
#: starts from these, so a row means the same run now that the config trains bs300-llrd-len6.
_SWEEP_BASE = {"training.optimizer.encoder_lr_scale": 0.1, "training.optimizer.layer_decay": 1.0}


class Row(NamedTuple):
    """One sweep setting: the config, its length in epochs of the training domains, the batch
    size in padded words, the overrides, and the domains it trains on (model selection on the
    same domains' dev, as `adaptner train --domains` does)."""

    config: str
    epochs: int
    batch_size: int
    overrides: dict
    domains: str = "all"


#: name -> Row. Learn rates: the head at training.optimizer.learn_rate.initial_rate, the
#: encoder at that × encoder_lr_scale (× layer_decay per layer below the top, with llrd).
#: The news-* rows train the News-only source of active learning (346 sentences, 12 batches
#: an epoch at 600 words); what matters for them is dev F1 on the other domains.
ROWS: dict[str, Row] = {
    "len3": Row(CONFIG, 3, 600, {}),
    "len6": Row(CONFIG, 6, 600, {}),
    "len10": Row(CONFIG, 10, 600, {}),
    "bs300-len6": Row(CONFIG, 6, 300, {}),
    "cache4-len6": Row(CONFIG, 6, 600, {"initialize.after_init.cache_layers": 4}),
    "cache6-len10": Row(CONFIG, 10, 600, {"initialize.after_init.cache_layers": 6}),
    "cache8-len10": Row(CONFIG, 10, 600, {"initialize.after_init.cache_layers": 8}),
    "llrd-len6": Row(CONFIG, 6, 600, _LLRD),
    "emb-len6": Row(CONFIG, 6, 600, {"initialize.after_init.patterns": []}),
    "first-len6": Row(CONFIG, 6, 600, _FIRST),
    "mix4-len6": Row(CONFIG, 6, 600, {"components.bio_ner.model.tok2vec.mix_layers": 4}),
    "bs300-llrd-len6": Row(CONFIG, 6, 300, _LLRD),
    "cache4-llrd-len10": Row(CONFIG, 10, 600, {**_LLRD, "initialize.after_init.cache_layers": 4}),
    "ner-len6": Row("configs/ner_trf_e5.cfg", 6, 600, {}),
    "news-len33": Row(CONFIG, 33, 600, {}, "news"),
    "news-llrd-len33": Row(CONFIG, 33, 600, _LLRD, "news"),
    "news-bs150-llrd-len33": Row(CONFIG, 33, 150, _LLRD, "news"),
    "news-bs150-llrd-mix4-len33": Row(
        CONFIG, 33, 150, {**_LLRD, "components.bio_ner.model.tok2vec.mix_layers": 4}, "news"
    ),
}


def _steps_per_epoch(batch_size: int, domains: str = "all", train_dir: Path | None = None) -> int:
    """Batches in one epoch of DANSK train (or ``train_dir``; the row's domains) with the
    config's batcher."""
    import spacy
    from spacy.tokens import DocBin
    from spacy.util import registry

    nlp = spacy.blank("da")
    train_dir = train_dir or ROOT / "corpus" / "train"
    docs = [
        doc
        for domain in domains.split(",")
        for doc in DocBin().from_disk(train_dir / f"{domain}.spacy").get_docs(nlp.vocab)
    ]
    batcher = registry.batchers.get("spacy.batch_by_padded.v1")(
        size=batch_size, buffer=256, discard_oversize=False
    )
    return sum(1 for _ in batcher(docs))


def _train_command(name: str, seed: int, runs: Path, encoder: Path) -> tuple[list[str], dict]:
    config, epochs, batch_size, overrides, domains = ROWS[name]
    per_epoch = _steps_per_epoch(batch_size, domains)
    steps = epochs * per_epoch
    settings = {
        "training.max_steps": steps,
        "training.eval_frequency": per_epoch * max(1, epochs // 10),  # about 10 evaluations
        "training.patience": 0,
        "training.batcher.size": batch_size,
        "training.optimizer.learn_rate.warmup_steps": max(1, steps // 10),
        "paths.transformer": str(encoder),
        **(_SWEEP_BASE if config == CONFIG else {}),
        **overrides,
    }
    if overrides.get("initialize.after_init.cache_layers"):
        settings["initialize.after_init.cache_dir"] = str(runs / "lower_cache")
    cmd = [sys.executable, "-m", "adaptner", "train", config, "-o", str(runs / f"{name}-s{seed}"),
           "--seed", str(seed), "--resume", "--checkpoint-every", str(max(per_epoch // 2, 50)),
           "--domains", domains]  # fmt: skip
    for key, value in settings.items():
        cmd += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    return cmd, {"steps": steps, "epochs": epochs, "steps_per_epoch": per_epoch, **settings}


def _done() -> set[tuple[str, int]]:
    path = RESULTS / "sweep.jsonl"
    if not path.exists():
        return set()
    return {(r["row"], r["seed"]) for r in map(json.loads, path.read_text().splitlines())}


@app.command()
def run(
    rows: str = typer.Option(",".join(ROWS), help="Rows to run, comma-separated, in order."),
    seeds: str = typer.Option("0", help="Seeds, comma-separated."),
    runs: Path = typer.Option(ROOT / "training" / "e5_recipe", help="Where the runs train."),
    encoder: Path = typer.Option(ROOT / "assets" / "e5-small", help="The e5-small directory."),
) -> None:
    """Train and score every (row, seed) not yet in sweep.jsonl; resumes interrupted runs."""
    from adaptner.evaluation import evaluate_model

    unknown = [r for r in rows.split(",") if r not in ROWS]
    if unknown:
        raise typer.BadParameter(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "1048576"}
    for seed in [int(s) for s in seeds.split(",")]:
        for name in rows.split(","):
            if (name, seed) in _done():
                typer.echo(f"= {name} seed {seed}: in sweep.jsonl")
                continue
            out = runs / f"{name}-s{seed}"
            cmd, settings = _train_command(name, seed, runs, encoder)
            wall_file = runs / f".{name}-s{seed}.wall.json"
            spent = json.loads(wall_file.read_text())["seconds"] if wall_file.exists() else 0.0
            if not (out / "model-best").exists():
                typer.echo(f"> {name} seed {seed}: {' '.join(cmd[2:])}")
                start = time.time()
                log = open(runs / f"{name}-s{seed}.log", "a", encoding="utf8")
                try:
                    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
                finally:
                    spent += time.time() - start
                    runs.mkdir(parents=True, exist_ok=True)
                    wall_file.write_text(json.dumps({"seconds": spent}))
                    log.close()
                if proc.returncode != 0:
                    raise SystemExit(f"{name} seed {seed} failed; see {runs}/{name}-s{seed}.log")
            report = evaluate_model(out / "model-best", ROOT / "corpus" / "dev")
            meta = json.loads((out / "train_meta.json").read_text())
            record = {
                "row": name,
                "seed": seed,
                "config": ROWS[name].config,
                "domains": ROWS[name].domains,
                "overrides": ROWS[name].overrides,
                "train_overrides": meta.get("overrides"),
                **{k: settings[k] for k in ("epochs", "steps", "steps_per_epoch")},
                "batch_size": ROWS[name].batch_size,
                "dev_micro": report["overall"]["ents_f"],
                "dev_macro": report["macro"]["ents_f"],
                "dev_per_domain": {d: report["per_domain"][d]["ents_f"] for d in DOMAINS},
                "wall_seconds": round(spent, 1),
                "evaluations": meta.get("evaluations"),
                "date": datetime.date.today().isoformat(),
                "load_note": "machine shared with other jobs" if os.getloadavg()[1] > 2.5 else "",
            }
            RESULTS.mkdir(parents=True, exist_ok=True)
            with open(RESULTS / "sweep.jsonl", "a", encoding="utf8") as f:
                f.write(json.dumps(record) + "\n")
            typer.echo(f"✔ {name} seed {seed}: dev F1 {100 * record['dev_micro']:.2f}")
            table()


@app.command()
def table() -> None:
    """Rewrite bench/results/e5_recipe/sweep.md from sweep.jsonl."""
    path = RESULTS / "sweep.jsonl"
    records = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    head = ["row", "train", "seed", "epochs", "steps", "dev micro", "macro", *DOMAINS, "wall min",
            "dev F1 by evaluation", "overrides"]  # fmt: skip
    lines = [
        "# e5-small recipe sweep (DANSK train, all or one domain -> dev F1)",
        "",
        "Command: `python bench/e5_recipe.py run` (then `table`); rows are",
        f"`{CONFIG}` as the sweep began (encoder_lr_scale 0.1, layer_decay 1.0; it now "
        "trains bs300-llrd-len6) plus the overrides shown. Dates per row in sweep.jsonl.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in records:
        curve = " ".join(f"{100 * e['score']:.1f}" for e in (r.get("evaluations") or [])[1:])
        cells = [r["row"], r.get("domains", "all"), r["seed"], r["epochs"], r["steps"],
                 f"{100 * r['dev_micro']:.2f}",
                 f"{100 * r['dev_macro']:.2f}",
                 *(f"{100 * r['dev_per_domain'][d]:.1f}" for d in DOMAINS),
                 f"{r['wall_seconds'] / 60:.0f}", curve,
                 json.dumps(r["overrides"]) if r["overrides"] else ""]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    notes = [f"- {r['row']} seed {r['seed']}: {r['load_note']}" for r in records
             if r.get("load_note")]  # fmt: skip
    if notes:
        lines += ["", "Notes on wall times:", *notes]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sweep.md").write_text("\n".join(lines) + "\n", encoding="utf8")
    typer.echo("\n".join(lines))


@app.command("cached-equality")
def cached_equality(
    model: Path = typer.Option(None, help="A trained e5 pipeline (default: e5 + a new head)."),
    layers: str = typer.Option("4,6,8", help="Numbers of cached lower layers to compare."),
    limit: int = typer.Option(0, help="Dev docs to use (0: all)."),
    encoder: Path = typer.Option(ROOT / "assets" / "e5-small", help="The e5-small directory."),
) -> None:
    """Max abs difference between the cached path and the full model on DANSK dev (eval mode):
    the encoder's output at every real word piece, and bio_ner's probabilities."""
    import numpy
    import spacy
    from spacy.tokens import DocBin
    from spacy.training.initialize import init_nlp

    from adaptner.encoders.lower_cache import attach, detach
    from adaptner.encoders.training import transformer_modules
    from adaptner.extensions import install_extensions
    from adaptner.training import load_training_config

    install_extensions()
    if model is not None:
        nlp = spacy.load(model)
    else:
        nlp = init_nlp(load_training_config(ROOT / CONFIG, overrides={
            "paths.transformer": str(encoder), "paths.train": str(ROOT / "corpus/train"),
            "paths.dev": str(ROOT / "corpus/dev")}))  # fmt: skip
    gold = list(DocBin().from_disk(ROOT / "corpus/dev/all.spacy").get_docs(nlp.vocab))
    gold = gold[:limit] if limit else gold
    trf, ner = nlp.get_pipe("transformer"), nlp.get_pipe("bio_ner")
    module = transformer_modules(nlp)[0]

    def outputs() -> tuple[list, list]:
        hidden, probs = [], []
        for i in range(0, len(gold), 64):
            docs = [nlp.make_doc(d.text) for d in gold[i : i + 64]]
            batch = trf.model.predict(docs)
            mask = batch.wordpieces.attention_mask.astype(bool)
            states = batch.model_output.last_hidden_state
            states = states.detach().numpy() if hasattr(states, "detach") else numpy.asarray(states)
            hidden.append(states[mask])
            trf.set_annotations(docs, batch)
            probs.extend(ner.model.predict(docs))
        return hidden, probs

    full_h, full_p = outputs()
    for k in [int(x) for x in layers.split(",")]:
        cache = attach(module, k)
        for rep in range(2):  # the first pass fills the cache, the second reads it
            h, p = outputs()
            dh = max(float(numpy.abs(a - b).max()) for a, b in zip(full_h, h, strict=True))
            dp = max(float(numpy.abs(numpy.asarray(a) - numpy.asarray(b)).max())
                     for a, b in zip(full_p, p, strict=True))  # fmt: skip
            typer.echo(
                f"k={k} pass {rep + 1}: max |Δ hidden| {dh:.2e}, max |Δ prob| {dp:.2e} "
                f"({len(gold)} docs; cache hits {cache.hits}, misses {cache.misses})"
            )
        detach(module)


if __name__ == "__main__":
    app()
