"""Ablation of the CPU pipeline: one lever at a time on configs/bio_cnn.cfg, over seeds.

Usage (from the repository root)::

    .venv/bin/python bench/ablation.py --quick                      # smoke run, tiny budgets
    .venv/bin/python bench/ablation.py --seeds 0,1                  # the full grid (hours)
    .venv/bin/python bench/ablation.py --levers baseline,pretrain --seeds 0,1,2
    .venv/bin/python bench/ablation.py --transfer --seeds 0,1       # News vs all-but-target
    .venv/bin/python bench/ablation.py --list                       # the levers
    .venv/bin/python bench/ablation.py --table-only                 # re-print the table

Each lever is a small set of changes applied to the base config (a dotted key set to a
value; a dict value replaces the whole block). The changed config is written beside the
model (``<models-dir>/<lever>/config.cfg``) and trained with ``adaptner.training`` on all
train domains, selected on all of dev; then scored on all of dev (span F1, seqeval) and
timed with ``nlp.pipe`` over the dev texts (tokenizer included) in one process with at most
``--threads`` BLAS/torch threads. One JSON line per lever x seed goes to ``--output``; a
lever x seed whose line exists (same config fingerprint and budget) is skipped, so a killed
run resumes. The Markdown table (mean ± sd over seeds) is printed and written to ``--table``.
``--quick`` trains 30 steps on 200 News sentences and scores 200 dev sentences: it checks the
plumbing, its F1 figures mean nothing (results go to metrics/ablation_quick.jsonl).

The ``pretrain`` lever first runs ``adaptner pretrain`` (the same tok2vec, train texts of all
domains, labels ignored) and trains with ``paths.init_tok2vec``; ``pretrain_dev`` adds the
dev texts and is transductive (flagged †, opt-in). Pretrained weights are cached per
tok2vec/[pretraining] fingerprint and shared by the seeds.
"""

import hashlib
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

ROOT = Path(__file__).resolve().parents[1]

#: Smoke-run budget: a few steps on a slice, so ``--quick`` proves the plumbing in minutes.
QUICK_OVERRIDES: dict[str, Any] = {
    "training.max_steps": 30,
    "training.eval_frequency": 15,
    "training.patience": 0,
    "corpora.train.limit": 200,
    "corpora.train.shuffle": True,
    "corpora.dev.limit": 100,
}
QUICK_EVAL_DOCS = 200
#: Quick runs train (and pretrain) on News only: reading all of train from its DocBins takes
#: seconds per pass, which would dominate a 30-step smoke run.
QUICK_DOMAINS = "news"
QUICK_PRETRAIN = {"epochs": 1, "limit": 300, "domains": QUICK_DOMAINS}

EMBED = "components.tok2vec.model.embed"
ENCODE = "components.tok2vec.model.encode"
WIDTH_REF = "${components.tok2vec.model.encode.width}"


@dataclass(frozen=True)
class Lever:
    """One ablation variant: what changes relative to the base config.

    Attributes:
        name: Short id (also the output folder).
        description: What the lever changes, for the table.
        changes: Dotted config key -> value; a dict value replaces the whole block.
        config: Another base config instead of ``--config`` (the output-layer comparison).
        pretrain: Pretrain the tok2vec first on "train" texts or "train+dev" texts.
        default: Part of the default grid (opt-in levers need ``--levers``).
        decode: No training: the models of lever ``decode_base`` (same seed) with these
            component settings changed at load time (component name -> cfg key -> value),
            e.g. the decoder. Needs that lever's runs first.
        decode_base: The lever whose models a ``decode`` lever re-decodes.
    """

    name: str
    description: str
    changes: dict[str, Any] = field(default_factory=dict)
    config: str | None = None
    pretrain: str | None = None
    default: bool = True
    decode: dict[str, dict[str, Any]] | None = None
    decode_base: str = "baseline"

    @property
    def transductive(self) -> bool:
        """Whether dev texts are seen (without labels) before dev is scored."""
        return self.pretrain is not None and "dev" in self.pretrain


LOW_LABEL = {"corpora.train.limit": 500, "corpora.train.shuffle": True}

LEVERS: list[Lever] = [
    Lever("baseline", "the base config (--config) as is"),
    Lever("width128", "encoder width 96 -> 128", {f"{ENCODE}.width": 128}),
    Lever("width256", "encoder width 96 -> 256", {f"{ENCODE}.width": 256}),
    Lever("depth6", "encoder depth 4 -> 6", {f"{ENCODE}.depth": 6}),
    Lever("depth8", "encoder depth 4 -> 8", {f"{ENCODE}.depth": 8}),
    Lever("window2", "encoder window 1 -> 2", {f"{ENCODE}.window_size": 2}),
    Lever("rows_x4", "embedding rows x4", {f"{EMBED}.rows": [20000, 4000, 10000, 10000]}),
    Lever(
        "attrs_orth",
        "MultiHashEmbed attrs + ORTH (cased form; NORM == LOWER for da without lookups)",
        {
            f"{EMBED}.attrs": ["NORM", "PREFIX", "SUFFIX", "SHAPE", "ORTH"],
            f"{EMBED}.rows": [5000, 1000, 2500, 2500, 5000],
        },
    ),
    Lever(
        "char_embed",
        "CharacterEmbed.v2 (NORM 5000 rows + 8 chars x 64) instead of MultiHashEmbed",
        {
            EMBED: {
                "@architectures": "spacy.CharacterEmbed.v2",
                "width": WIDTH_REF,
                "rows": 5000,
                "nM": 64,
                "nC": 8,
                "include_static_vectors": False,
                "feature": "NORM",
            }
        },
    ),
    Lever("dropout0.2", "training dropout 0.1 -> 0.2", {"training.dropout": 0.2}),
    Lever("dropout0.3", "training dropout 0.1 -> 0.3", {"training.dropout": 0.3}),
    Lever(
        "head_dropout0.2",
        "bio_ner head dropout 0.1 -> 0.2 (tok2vec dropout stays at training.dropout)",
        {"components.bio_ner.model.dropout": 0.2},
    ),
    Lever("lr0.002", "learn rate 0.001 -> 0.002", {"training.optimizer.learn_rate": 0.002}),
    Lever(
        "warmup_linear",
        "learn rate warmup_linear (250 warm-up steps, 0.001, linear decay to max_steps)",
        {
            "training.optimizer.learn_rate": {
                "@schedules": "warmup_linear.v1",
                "warmup_steps": 250,
                "total_steps": "${training.max_steps}",
                "initial_rate": 0.001,
            }
        },
    ),
    Lever(
        "batch2000",
        "batch size (words) compounding to 2000 instead of 1000",
        {"training.batcher.size.stop": 2000},
    ),
    Lever(
        "averages",
        "averaged parameters (Adam use_averages)",
        {"training.optimizer.use_averages": True},
    ),
    Lever(
        "viterbi", "bio_ner decoder argmax -> viterbi", {"components.bio_ner.decoder": "viterbi"}
    ),
    Lever(
        "viterbi_decode",
        "the baseline's models, decoded with viterbi instead of argmax (no retraining)",
        {"components.bio_ner.decoder": "viterbi"},
        decode={"bio_ner": {"decoder": "viterbi"}},
    ),
    Lever(
        "averages_viterbi",
        "averaged parameters + viterbi decoder (the averages models, re-decoded): the new default",
        {"training.optimizer.use_averages": True, "components.bio_ner.decoder": "viterbi"},
        decode={"bio_ner": {"decoder": "viterbi"}},
        decode_base="averages",
    ),
    Lever(
        "head_hidden64",
        "bio_ner head with a 64-wide maxout hidden layer (adaptner.BioTagger.v2)",
        {
            "components.bio_ner.model.@architectures": "adaptner.BioTagger.v2",
            "components.bio_ner.model.hidden_width": 64,
        },
    ),
    Lever(
        "long",
        "max_steps 8000 -> 20000, patience 2000 -> 4000 (early stopping on dev)",
        {"training.max_steps": 20000, "training.patience": 4000},
    ),
    Lever(
        "combined",
        "averages + rows_x4 + dropout0.3 + viterbi decoder (the winners together)",
        {
            "training.optimizer.use_averages": True,
            f"{EMBED}.rows": [20000, 4000, 10000, 10000],
            "training.dropout": 0.3,
            "components.bio_ner.decoder": "viterbi",
        },
    ),
    Lever("pretrain", "init_tok2vec from `adaptner pretrain` on train texts", pretrain="train"),
    Lever(
        "pretrain_dev",
        "init_tok2vec pretrained on train + dev texts (transductive)",
        pretrain="train+dev",
        default=False,
    ),
    Lever("low_label", "500 train sentences (shuffled by seed)", dict(LOW_LABEL)),
    Lever(
        "low_label_pretrain",
        "500 train sentences + init_tok2vec (pretrained on train texts)",
        dict(LOW_LABEL),
        pretrain="train",
    ),
    Lever(
        "ner_cnn",
        "transition-based `ner` (configs/ner_cnn.cfg) instead of bio_ner",
        config="configs/ner_cnn.cfg",
    ),
]
LEVER_NAMES = {lever.name: lever for lever in LEVERS}

#: Target domains of the News -> target transfer comparison (the paper's three).
TRANSFER_TARGETS = ("conversation", "legal", "social_media")


# --- config ----------------------------------------------------------------------------------


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested config dict; a dict value replaces the block.

    Raises:
        KeyError: a parent section does not exist (a typo in a lever).
    """
    parts = key.split(".")
    node = config
    for i, part in enumerate(parts[:-1]):
        if part not in node or not isinstance(node[part], dict):
            raise KeyError(f"{'.'.join(parts[: i + 1])} is not a section of the config")
        node = node[part]
    node[parts[-1]] = json.loads(json.dumps(value))


def lever_config(lever: Lever, base_config: Path, quick: bool = False):
    """The lever's config: its base config (not interpolated) with the lever's changes."""
    from spacy.util import load_config

    path = ROOT / lever.config if lever.config else base_config
    config = load_config(path, interpolate=False)
    for key, value in lever.changes.items():
        set_dotted(config, key, value)
    if quick:
        for key, value in QUICK_OVERRIDES.items():
            if key == "corpora.train.limit" and config["corpora"]["train"].get("limit"):
                value = min(value, config["corpora"]["train"]["limit"])
            set_dotted(config, key, value)
    return config


def fingerprint(text: str | bytes) -> str:
    """Short sha256 of a config text or a file's bytes."""
    data = text.encode("utf8") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:12]


def select_levers(spec: str) -> list[Lever]:
    """``default`` (the default grid), ``all``, or a comma-separated list of lever names."""
    spec = spec.strip()
    if spec == "default":
        return [lever for lever in LEVERS if lever.default]
    if spec == "all":
        return list(LEVERS)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in LEVER_NAMES]
    if unknown or not names:
        raise typer.BadParameter(
            f"unknown lever(s) {', '.join(unknown) or '(none given)'}; "
            f"known: {', '.join(LEVER_NAMES)} (or default, all)."
        )
    return [LEVER_NAMES[n] for n in names]


def parse_seeds(spec: str) -> list[int]:
    """``"0,1"`` -> [0, 1]."""
    try:
        seeds = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter(f"--seeds takes comma-separated integers, got {spec!r}") from None
    if not seeds:
        raise typer.BadParameter("--seeds is empty")
    return list(dict.fromkeys(seeds))


# --- measuring -------------------------------------------------------------------------------


def limit_threads(n_threads: int):
    """Limit BLAS (and torch, if loaded) to ``n_threads``; returns the threadpoolctl context."""
    from threadpoolctl import threadpool_limits

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n_threads)
    return threadpool_limits(limits=n_threads)


def measure_speed(
    nlp, texts: Sequence[str], *, reference=None, batch_size: int = 256, repeats: int = 5
) -> dict:
    """Words/second of ``nlp.pipe`` over raw texts (tokenizer included).

    One untimed warm-up pass first (without it, the first model timed in a process came out
    about 25% slower than an identical one timed later). Wall-clock rate: the best of
    ``repeats`` (the run least disturbed by other load on a shared machine) and the median.
    CPU rate: words per second of this process's CPU time (median), which other processes
    disturb far less; with single-threaded BLAS (thinc's default) it is one core's throughput.
    Neither is steady on a shared machine whose cores are busy with other work (identical
    models measured minutes apart differed by 25%), so with a ``reference`` pipeline (the
    baseline) the two are timed alternately and "relative" is the median ratio of the pairs.
    """

    def timed(pipeline) -> tuple[int, float, float]:
        start, cpu_start = time.perf_counter(), time.process_time()
        n = sum(len(doc) for doc in pipeline.pipe(texts, batch_size=batch_size))
        return n, time.perf_counter() - start, max(time.process_time() - cpu_start, 1e-9)

    for pipeline in (nlp, reference):
        if pipeline is not None:
            timed(pipeline)
    rates, cpu_rates, ratios, words = [], [], [], 0
    for i in range(repeats):
        ref_rate = None
        if reference is not None and i % 2 == 0:
            ref_words, ref_seconds, _ = timed(reference)
            ref_rate = ref_words / ref_seconds
        words, seconds, cpu_seconds = timed(nlp)
        rates.append(words / seconds)
        cpu_rates.append(words / cpu_seconds)
        if reference is not None and ref_rate is None:
            ref_words, ref_seconds, _ = timed(reference)
            ref_rate = ref_words / ref_seconds
        if ref_rate is not None:
            ratios.append(rates[-1] / ref_rate)
    return {
        "wps": round(max(rates), 1),
        "wps_median": round(statistics.median(rates), 1),
        "wps_cpu": round(statistics.median(cpu_rates), 1),
        "relative": round(statistics.median(ratios), 3) if ratios else None,
        "words": words,
        "repeats": repeats,
    }


def load_results(path: Path) -> list[dict[str, Any]]:
    """All JSON lines of a results file (a torn last line from a kill is ignored)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


# --- running ---------------------------------------------------------------------------------


@dataclass
class Bench:
    """Shared settings of one bench invocation."""

    base_config: Path
    train_path: Path
    dev_path: Path
    models_dir: Path
    output: Path
    quick: bool
    n_threads: int
    batch_size: int
    verbose: bool
    #: seed -> model-best of the baseline with the current fingerprint (the speed reference).
    reference_models: dict[int, Path] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"

    @property
    def train_domains(self) -> str:
        return QUICK_DOMAINS if self.quick else "all"

    def fingerprint(self, lever: Lever, weights: Path | None = None) -> str:
        """What a result depends on: config text, training domains, pretrained weights."""
        key = {
            "config": lever_config(lever, self.base_config, self.quick).to_str(),
            "train_domains": self.train_domains,
            "weights": fingerprint(weights.read_bytes()) if weights is not None else None,
        }
        return fingerprint(json.dumps(key, sort_keys=True))

    def dev_docs(self) -> dict[str, list]:
        """Gold dev docs per domain (the first QUICK_EVAL_DOCS per domain order in quick mode)."""
        from spacy.vocab import Vocab

        from adaptner.evaluation import load_eval_docs

        docs = load_eval_docs(self.dev_path, "all", Vocab())
        if not self.quick:
            return docs
        out, left = {}, QUICK_EVAL_DOCS
        for domain, items in docs.items():
            if left <= 0:
                break
            out[domain] = items[:left]
            left -= len(out[domain])
        return out

    def pretrained_weights(self, lever: Lever, config, log) -> tuple[Path, dict[str, Any]]:
        """Run (or reuse) ``adaptner pretrain`` for the lever's tok2vec; returns weights, meta."""
        from adaptner.pretrain import META_NAME, WEIGHTS_NAME, run_pretraining

        key = json.dumps(
            {
                "tok2vec": config["components"]["tok2vec"],
                "pretraining": config["pretraining"],
                "texts": lever.pretrain,
                "quick": self.quick,
            },
            sort_keys=True,
        )
        out = (
            self.models_dir / "pretrain" / f"{lever.pretrain.replace('+', '_')}-{fingerprint(key)}"
        )
        meta_path = out / META_NAME
        if not meta_path.exists():
            cfg_path = out.with_name(out.name + ".cfg")
            cfg_path.parent.mkdir(parents=True, exist_ok=True)
            config.to_disk(cfg_path)
            corpus_dirs = [self.train_path]
            if "dev" in lever.pretrain:
                corpus_dirs.append(self.dev_path)
            log(f"⏳ pretraining tok2vec on {lever.pretrain} texts -> {out}")
            opts: dict[str, Any] = {"domains": "all"}
            if self.quick:
                opts.update(QUICK_PRETRAIN)
            run_pretraining(
                cfg_path,
                out,
                corpus_dirs=corpus_dirs,
                seed=0,
                progress=self.verbose,
                log=log,
                **opts,
            )
        else:
            log(f"↻ reusing pretrained weights {out / WEIGHTS_NAME}")
        return out / WEIGHTS_NAME, json.loads(meta_path.read_text(encoding="utf8"))

    def run(self, lever: Lever, seed: int, done: set, gold, texts, log) -> dict | None:
        """Train, score and time one lever x seed; returns its record (None if skipped)."""
        from adaptner.evaluation import evaluate_docs, load_pipeline
        from adaptner.training import train_pipeline
        from adaptner.util import append_jsonl, atomic_path

        config = lever_config(lever, self.base_config, self.quick)
        config_text = config.to_str()
        overrides: dict[str, Any] = {}
        pretrain_meta = None
        weights = None
        if lever.pretrain:
            weights, pretrain_meta = self.pretrained_weights(lever, config, log)
            overrides["paths.init_tok2vec"] = str(weights)
        fp = self.fingerprint(lever, weights)
        if (lever.name, seed, self.mode, fp) in done:
            log(f"↻ {lever.name} seed {seed}: in {self.output}, skipped")
            return None
        lever_dir = self.models_dir / lever.name
        cfg_path = lever_dir / "config.cfg"
        with atomic_path(cfg_path) as tmp:
            tmp.write_text(config_text, encoding="utf8")
        if lever.decode:
            best = self.models_dir / lever.decode_base / f"seed{seed}" / "model-best"
            if not best.exists():
                log(f"✘ {lever.name} seed {seed}: run {lever.decode_base} with this seed first")
                return None
            log(f"⏳ {lever.name} seed {seed}: {lever.decode_base}'s {best}, {lever.decode}")
            out_dir, wall = best.parent, 0.0
            nlp = load_pipeline(best)
            for component, settings in lever.decode.items():
                nlp.get_pipe(component).cfg.update(settings)
        else:
            out_dir = lever_dir / f"seed{seed}"
            log(f"⏳ {lever.name} seed {seed}: training -> {out_dir}")
            start = time.perf_counter()
            best = train_pipeline(
                cfg_path,
                out_dir,
                train_path=self.train_path,
                dev_path=self.dev_path,
                train_domains=self.train_domains,
                seed=seed,
                overrides=overrides,
                verbose=self.verbose,
            )
            wall = time.perf_counter() - start
            nlp = load_pipeline(best)
        meta = json.loads((out_dir / "train_meta.json").read_text(encoding="utf8"))
        load_before = os.getloadavg()[0]
        with limit_threads(self.n_threads):
            report = evaluate_docs(nlp, gold, batch_size=self.batch_size)
            ref_path = self.reference_models.get(seed)
            reference = None
            if lever.name != "baseline" and ref_path is not None and ref_path.exists():
                reference = load_pipeline(ref_path)
            speed = measure_speed(nlp, texts, reference=reference, batch_size=self.batch_size)
        perf = json.loads((best / "meta.json").read_text(encoding="utf8")).get("performance", {})
        record = {
            "lever": lever.name,
            "description": lever.description,
            "seed": seed,
            "mode": self.mode,
            "fingerprint": fp,
            "train_domains": self.train_domains,
            "config": str(cfg_path),
            "model": str(best),
            "overrides": overrides,
            "transductive": lever.transductive,
            "dev_f": report["overall"]["ents_f"],
            "dev_p": report["overall"]["ents_p"],
            "dev_r": report["overall"]["ents_r"],
            "macro_f": report["macro"]["ents_f"],
            "per_domain_f": {d: s["ents_f"] for d, s in report["per_domain"].items()},
            "spacy_ents_f_at_selection": perf.get("ents_f"),
            "words_per_second": speed["wps"],
            "words_per_second_median": speed["wps_median"],
            "words_per_cpu_second": speed["wps_cpu"],
            "speed_vs_baseline": speed["relative"],
            "speed_words": speed["words"],
            "threads": self.n_threads,
            "batch_size": self.batch_size,
            "train_seconds": meta.get("train_seconds", round(wall, 2)),
            "pretrain_seconds": pretrain_meta["seconds"] if pretrain_meta else None,
            "pretrain_texts": pretrain_meta["texts"] if pretrain_meta else None,
            "pretrain_epochs": pretrain_meta["epochs"] if pretrain_meta else None,
            "loadavg_1min": round(load_before, 2),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        append_jsonl(self.output, record)
        log(
            f"✔ {lever.name} seed {seed}: dev F1 {100 * record['dev_f']:.2f}, "
            f"{record['words_per_second']:.0f} words/s, trained in {record['train_seconds']:.0f} s"
        )
        return record


# --- the table -------------------------------------------------------------------------------


def _mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def _fmt(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    if not values:
        return "–"
    mean, sd = _mean_sd([v * scale for v in values])
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")


def current_records(
    records: list[dict[str, Any]], levers: Sequence[Lever], mode: str, fingerprints: dict[str, str]
) -> list[dict[str, Any]]:
    """Records of the selected levers in ``mode`` whose fingerprint is the current one."""
    names = {lever.name for lever in levers}
    return [
        r
        for r in records
        if r.get("mode") == mode
        and r.get("lever") in names
        and (r["lever"] not in fingerprints or r.get("fingerprint") == fingerprints[r["lever"]])
    ]


def macro_main(record: dict[str, Any]) -> float | None:
    """Mean F1 over the six main domains scored (dannet and unknown have 4 and 22 dev rows)."""
    from adaptner.matrix import DEFAULT_MATRIX_DOMAINS

    per = record.get("per_domain_f") or {}
    values = [per[d] for d in DEFAULT_MATRIX_DOMAINS if per.get(d) is not None]
    return sum(values) / len(values) if values else None


def ablation_table(records: list[dict[str, Any]], levers: Sequence[Lever], mode: str) -> str:
    """Markdown table: one row per lever, mean ± sd over its seeds."""
    by_lever: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_lever.setdefault(r["lever"], []).append(r)
    base = [r["dev_f"] for r in by_lever.get("baseline", [])]
    base_mean = sum(base) / len(base) if base else None
    lines = [
        f"Ablation ({mode} budget): dev F1 = span F1 on all of DANSK dev (seqeval, %), mean ± sd "
        "over seeds; macro F1 (6) = mean over news, conversation, legal, social_media, web, "
        "wiki_books; words/s = nlp.pipe over the dev texts (tokenizer included), one process, "
        "wall clock, best of 5 after a warm-up pass; words/CPU-s = the same per second of the "
        "process's CPU time (steadier on a shared machine); train s = training wall time "
        "(pretraining listed separately, once per weights); speed × baseline = median ratio "
        "of words/s to the same seed's baseline, timed alternately (robust to machine load).",
        "",
        "| lever | change | seeds | dev F1 | Δ F1 vs baseline | macro F1 (6) | words/s "
        "| words/CPU-s | speed × baseline | train s | pretrain s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for lever in levers:
        rows = sorted(by_lever.get(lever.name, []), key=lambda r: r["seed"])
        if not rows:
            continue
        f = [r["dev_f"] for r in rows]
        delta = "–"
        if base_mean is not None and lever.name != "baseline":
            delta = f"{100 * (sum(f) / len(f) - base_mean):+.2f}"
        macro = [m for m in (macro_main(r) for r in rows) if m is not None]
        pre = [r["pretrain_seconds"] for r in rows if r.get("pretrain_seconds") is not None]
        cpu = [r["words_per_cpu_second"] for r in rows if "words_per_cpu_second" in r]
        rel = [r["speed_vs_baseline"] for r in rows if r.get("speed_vs_baseline") is not None]
        name = lever.name + (" †" if lever.transductive else "")
        lines.append(
            f"| {name} | {lever.description} | {len(rows)} | {_fmt(f, 100)} | {delta} | "
            f"{_fmt(macro, 100)} | {_fmt([r['words_per_second'] for r in rows], 1, 0)} | "
            f"{_fmt(cpu, 1, 0)} | {_fmt(rel, 1, 2)} | "
            f"{_fmt([r['train_seconds'] for r in rows], 1, 0)} | "
            f"{_fmt(pre[:1], 1, 0) if pre else '–'} |"
        )
    if any(lever.transductive for lever in levers):
        lines += ["", "† saw the dev texts (not labels) during pretraining: transductive."]
    loads = [r["loadavg_1min"] for r in records if r.get("loadavg_1min") is not None]
    if loads:
        lines += ["", f"1-min load average while timing: {min(loads):.1f} to {max(loads):.1f}."]
    return "\n".join(lines) + "\n"


# --- transfer --------------------------------------------------------------------------------


def run_transfer(bench: Bench, targets: Sequence[str], seeds: Sequence[int], log) -> str:
    """Train on News only and on all domains but the target; score each target's dev.

    Returns the Markdown table (rows: target; columns: News only, all-but-target, mean ± sd).
    """
    from spacy.vocab import Vocab

    from adaptner.evaluation import evaluate_docs, load_eval_docs, load_pipeline
    from adaptner.training import train_pipeline
    from adaptner.util import append_jsonl, atomic_path

    config = lever_config(LEVER_NAMES["baseline"], bench.base_config, bench.quick)
    text = config.to_str()
    fp = fingerprint(text)
    cfg_path = bench.models_dir / "transfer" / "config.cfg"
    with atomic_path(cfg_path) as tmp:
        tmp.write_text(text, encoding="utf8")
    output = bench.output.with_name(bench.output.stem + "_transfer.jsonl")
    done = {(r["source"], r["seed"], r["mode"], r["fingerprint"]) for r in load_results(output)}
    if "news" in targets:
        raise typer.BadParameter("--targets: News is the source; pick other domains")
    gold = load_eval_docs(bench.dev_path, ",".join(targets), Vocab())  # all of each target
    sources = ["news", *(f"all-but:{t}" for t in targets)]
    for seed in seeds:
        for source in sources:
            if (source, seed, bench.mode, fp) in done:
                log(f"↻ transfer {source} seed {seed}: in {output}, skipped")
                continue
            out_dir = bench.models_dir / "transfer" / source.replace(":", "_") / f"seed{seed}"
            log(f"⏳ transfer: training on {source} (seed {seed}) -> {out_dir}")
            best = train_pipeline(
                cfg_path,
                out_dir,
                train_path=bench.train_path,
                dev_path=bench.dev_path,
                train_domains=source,
                seed=seed,
                verbose=bench.verbose,
            )
            scored = [t for t in targets if source == "news" or source == f"all-but:{t}"]
            report = evaluate_docs(load_pipeline(best), {t: gold[t] for t in scored})
            meta = json.loads((out_dir / "train_meta.json").read_text(encoding="utf8"))
            append_jsonl(
                output,
                {
                    "source": source,
                    "seed": seed,
                    "mode": bench.mode,
                    "fingerprint": fp,
                    "model": str(best),
                    "target_f": {t: report["per_domain"][t]["ents_f"] for t in scored},
                    "train_seconds": meta.get("train_seconds"),
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                },
            )
    rows = [
        r
        for r in load_results(output)
        if r["mode"] == bench.mode and r["fingerprint"] == fp and r["seed"] in seeds
    ]
    lines = [
        f"News -> target transfer ({bench.mode} budget; {bench.base_config}): span F1 (%) on "
        "the target's dev, mean ± sd over seeds; model selection on the source's own dev.",
        "",
        "| target | News only | all domains but the target |",
        "|---|---:|---:|",
    ]
    for t in targets:
        news = [r["target_f"][t] for r in rows if r["source"] == "news"]
        multi = [r["target_f"][t] for r in rows if r["source"] == f"all-but:{t}"]
        lines.append(f"| {t} | {_fmt(news, 100)} | {_fmt(multi, 100)} |")
    return "\n".join(lines) + "\n"


# --- CLI -------------------------------------------------------------------------------------


def main(
    config: Path = typer.Option(
        ROOT / "configs" / "bio_cnn.cfg", "--config", "-c", help="Base config the levers change."
    ),
    levers: str = typer.Option(
        "default",
        "--levers",
        "-l",
        help="Comma-separated lever names, 'default' (the grid) or 'all' (with opt-in ones).",
    ),
    seeds: str = typer.Option("0,1", "--seeds", "-s", help="Comma-separated seeds, e.g. 0,1."),
    quick: bool = typer.Option(
        False, "--quick", help="Smoke run: 30 steps on 200 sentences, 1 pretraining epoch."
    ),
    train_path: Path = typer.Option(ROOT / "corpus" / "train", "--train", help="Train split dir."),
    dev_path: Path = typer.Option(ROOT / "corpus" / "dev", "--dev", help="Dev split dir."),
    models_dir: Path | None = typer.Option(
        None,
        "--models-dir",
        help="Models go to <dir>/<lever>/seed<N> (default training/ablation[_quick]).",
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Results JSONL, appended (default metrics/ablation[_quick].jsonl).",
    ),
    table: Path | None = typer.Option(
        None, "--table", help="Markdown table path (default: --output with .md)."
    ),
    threads: int = typer.Option(2, "--threads", help="BLAS/torch threads while timing."),
    batch_size: int = typer.Option(256, "--batch-size", help="nlp.pipe batch size."),
    transfer: bool = typer.Option(
        False, "--transfer", help="Run the News vs all-but-target transfer comparison instead."
    ),
    targets: str = typer.Option(
        ",".join(TRANSFER_TARGETS), "--targets", help="Target domains for --transfer."
    ),
    table_only: bool = typer.Option(
        False, "--table-only", help="Only print the table of the results so far."
    ),
    list_levers: bool = typer.Option(False, "--list", help="List the levers and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show spaCy's training tables."),
) -> None:
    """Train each lever x seed, score dev F1, time words/s, and print the ablation table."""
    from tqdm import tqdm

    import adaptner  # noqa: F401 - registers adaptner's functions and extensions
    from adaptner.errors import AdaptnerError
    from adaptner.util import write_text

    if list_levers:
        for lever in LEVERS:
            flag = "" if lever.default else "  (opt-in)"
            typer.echo(f"{lever.name:20s} {lever.description}{flag}")
        return
    selected = select_levers(levers)
    seed_list = parse_seeds(seeds)
    suffix = "_quick" if quick else ""
    bench = Bench(
        base_config=config,
        train_path=train_path,
        dev_path=dev_path,
        models_dir=models_dir or ROOT / "training" / f"ablation{suffix}",
        output=output or ROOT / "metrics" / f"ablation{suffix}.jsonl",
        quick=quick,
        n_threads=threads,
        batch_size=batch_size,
        verbose=verbose,
    )
    table_path = table or bench.output.with_suffix(".md")

    def log(msg: str) -> None:
        tqdm.write(msg)

    try:
        if transfer:
            target_list = [t.strip() for t in targets.split(",") if t.strip()]
            md = run_transfer(bench, target_list, seed_list, log)
            write_text(table_path.with_name(table_path.stem + "_transfer.md"), md)
            typer.echo(md)
            return
        fingerprints: dict[str, str] = {}
        if not table_only:
            gold = bench.dev_docs()
            texts = [doc.text for docs in gold.values() for doc in docs]
            previous = load_results(bench.output)
            done = {(r["lever"], r["seed"], r["mode"], r["fingerprint"]) for r in previous}
            base_fp = bench.fingerprint(LEVER_NAMES["baseline"])
            for r in previous:
                if (r["lever"], r["mode"], r["fingerprint"]) == ("baseline", bench.mode, base_fp):
                    bench.reference_models[r["seed"]] = Path(r["model"])
            runs = [(lever, seed) for lever in selected for seed in seed_list]
            bar = tqdm(runs, desc="ablation", unit="run")
            for lever, seed in bar:
                bar.set_postfix_str(f"{lever.name} seed {seed}")
                record = bench.run(lever, seed, done, gold, texts, log)
                if record is not None:
                    done.add((lever.name, seed, bench.mode, record["fingerprint"]))
                    if lever.name == "baseline":
                        bench.reference_models[seed] = Path(record["model"])
            bar.close()
        for r in load_results(bench.output):
            if r.get("mode") == bench.mode:
                fingerprints[r["lever"]] = r["fingerprint"]  # the latest run of each lever
        for lever in selected:
            if not lever.pretrain:  # otherwise the weights are part of it: keep the latest
                fingerprints[lever.name] = bench.fingerprint(lever)
        records = current_records(load_results(bench.output), selected, bench.mode, fingerprints)
        records = [r for r in records if r["seed"] in seed_list]
        md = ablation_table(records, selected, bench.mode)
        write_text(table_path, md)
        typer.echo(md)
        typer.echo(f"Results: {bench.output}; table: {table_path}")
    except AdaptnerError as e:
        typer.secho(f"✘ {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


if __name__ == "__main__":
    typer.run(main)
