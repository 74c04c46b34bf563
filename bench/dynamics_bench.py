"""Benchmark for training dynamics: data maps, AUM on synthetic label noise, cartography AULC.

Usage (from the repository root)::

    .venv/bin/python bench/dynamics_bench.py                    # data maps + AUM noise study
    .venv/bin/python bench/dynamics_bench.py --config configs/bio_cnn.cfg --epochs 20
    .venv/bin/python bench/dynamics_bench.py --with-al          # + cartography vs random, margin
    .venv/bin/python bench/dynamics_bench.py --with-al --al-quick --skip-datamap --skip-aum

1. Data maps: one training on the --datamap-domains with the dynamics callback, then a data
   map per domain (PNG, tables, hardest.md) under ``<output>/datamap``; prints the PNG paths,
   the region counts and the hardest sentences per domain.
2. AUM: on --aum-domain, flips --noise % of the entity spans, flags them with AUM (two
   fake-class runs), prints the flags' precision / recall and the dev F1 of training on the
   clean, noisy, sieved and flipped data (``<output>/aum_<domain>/noise.{json,md}``).
3. --with-al: the simulation grid (adaptner.simulation) from a ``news`` source pipeline that is
   trained with the callback (its dynamics feed ``cartography --cartography-reference
   dynamics``) to the --al-targets, for random, margin and cartography; prints the AULC
   (mean ± 95 % CI over seeds) per target. Runs are resumable (``<output>/al``).

Existing recordings and runs are reused; --retrain starts the data maps and AUM afresh.
Prints only (and writes the files above); figures depend on the CPU budget you give it.
"""

import json
import shutil
import time
from pathlib import Path

import numpy
import spacy
import typer

from adaptner.dynamics.aum import TrainSpec
from adaptner.dynamics.datamap import (
    doc_text,
    entities_text,
    record_training_dynamics,
    write_datamap,
)
from adaptner.dynamics.noise import noise_experiment, noise_markdown
from adaptner.dynamics.stats import compute_datamap, load_dynamics, regions
from adaptner.errors import AdaptnerError
from adaptner.readers import load_domain_docs
from adaptner.util import parse_domains, parse_params, write_json, write_text

ROOT = Path(__file__).resolve().parents[1]


def _short(text: str, n: int = 150) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def run_datamaps(
    config: Path, out: Path, domains: str, epochs: int, seed: int, top: int, retrain: bool
) -> None:
    """Record (or reuse) the dynamics of one training on ``domains``; print the data maps."""
    start = time.perf_counter()
    dyn_dir = out / "dynamics"
    if retrain or not (dyn_dir / "dynamics.json").exists():
        print(f"Training {config.name} on {domains} for {epochs} epochs with the callback…")
        record_training_dynamics(
            config,
            out,
            domains=domains,
            epochs=epochs,
            train_path=ROOT / "corpus" / "train",
            dev_path=ROOT / "corpus" / "dev",
            seed=seed,
        )
    else:
        print(f"Reusing the recording in {dyn_dir}")
    dyn = load_dynamics(dyn_dir)
    dm = compute_datamap(dyn, exclude_o=True)
    selected = parse_domains(domains, sorted(set(dyn.domains())))
    summary = write_datamap(dm, out, domains=selected, top=10, seed=seed)
    docs = dyn.docs()
    s = dm.sentences
    reg = regions(s.confidence, s.variability)
    dom = dyn.domains()
    print(
        f"\n## Data maps ({dyn.n_snapshots} epochs, entity tokens only; "
        f"{time.perf_counter() - start:.0f} s)\n"
    )
    print("| domain | sentences | easy-to-learn | ambiguous | hard-to-learn | PNG |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for domain in selected:
        e = summary["domains"][domain]["sentences"]
        r = e["regions"]
        png = Path(summary["files"]["png"][domain]).relative_to(ROOT)
        print(
            f"| {domain} | {e['n']} | {r['easy-to-learn']} | {r['ambiguous']} | "
            f"{r['hard-to-learn']} | {png} |"
        )
    for domain in selected:
        idx = numpy.flatnonzero((dom == domain) & (s.n_epochs > 0))
        order = idx[numpy.lexsort((s.variability[idx], s.confidence[idx]))][:top]
        print(f"\nHardest in {domain}:")
        for d in order:
            doc = docs[d]
            print(
                f"  conf {s.confidence[d]:.2f} var {s.variability[d]:.2f} "
                f"corr {s.correctness[d]:.2f} [{reg[d]}] "
                f"{_short(doc_text(doc['words'], doc['spaces']))}\n"
                f"      gold: {_short(entities_text(doc['words'], doc['gold']))}"
            )
    print(f"\nTables, PNGs and hardest.md in {out.relative_to(ROOT)}")


def run_aum(
    config: Path,
    out: Path,
    domain: str,
    rates: list[float],
    epochs: int,
    seed: int,
    retrain: bool,
) -> None:
    """The synthetic-noise experiment on one domain; prints the two tables."""
    start = time.perf_counter()
    report_path = out / "noise.json"
    if retrain and out.exists():
        shutil.rmtree(out)
    if report_path.exists():
        print(f"\nReusing {report_path}")
        report = json.loads(report_path.read_text())
    else:
        nlp = spacy.blank("da")
        docs = load_domain_docs(ROOT / "corpus" / "train", domain, nlp.vocab)
        dev = load_domain_docs(ROOT / "corpus" / "dev", domain, nlp.vocab)
        spec = TrainSpec(config, ROOT / "corpus" / "dev", domain, epochs=epochs, seed=seed)
        print(
            f"\nAUM noise study on {domain} ({len(docs)} train docs, {len(dev)} dev docs, "
            f"{epochs} epochs per training, {1 + 5 * len(rates)} trainings)…"
        )
        report = noise_experiment(
            docs,
            dev,
            spec,
            out / "runs",
            rates=rates,
            progress=lambda msg: print(f"  {msg}", flush=True),
        )
        report["seconds"] = round(time.perf_counter() - start, 1)
        write_json(report_path, report)
        write_text(out / "noise.md", noise_markdown(report, domain))
    print()
    print(noise_markdown(report, domain))
    if "seconds" in report:
        print(f"({report['seconds']:.0f} s)")


def run_al(
    config: Path,
    out: Path,
    targets: list[str],
    seeds: int,
    reference: str,
    epochs: int,
    quick: bool,
    overrides: dict,
    extra_params: dict | None = None,
) -> None:
    """Cartography vs random and margin in the simulation grid; prints the AULC table."""
    from adaptner.simulation.config import load_al_settings
    from adaptner.simulation.curves import aulc, build_curves, load_records, mean_ci
    from adaptner.simulation.grid import GridSpec, run_grid

    start = time.perf_counter()
    source_dir = out / "source_news"
    if not (source_dir / "dynamics" / "dynamics.json").exists():
        print(f"\nTraining the news source pipeline ({epochs} epochs) with the callback…")
        record_training_dynamics(
            config,
            source_dir,
            domains="news",
            epochs=epochs,
            train_path=ROOT / "corpus" / "train",
            dev_path=ROOT / "corpus" / "dev",
        )
    al_cfg = ROOT / "configs" / "al" / ("test/tiny.cfg" if quick else "default.cfg")
    settings = load_al_settings(al_cfg, **overrides)
    changed = {k: v for k, v in overrides.items() if v is not None}
    # the results folder encodes the settings, so different settings never resume each other
    extra_params = extra_params or {}
    run_name = "_".join(
        ["al", reference, *(f"{k}{v}" for k, v in {**changed, **extra_params}.items())]
    )
    run_name += "_quick" if quick else ""
    params: dict = {"reference": reference, **extra_params}
    if reference == "dynamics":
        params["dynamics"] = str(source_dir / "dynamics")
    spec = GridSpec(
        sources=["news"],
        targets=targets,
        strategies=["random", "margin", "cartography"],
        modes=["reset"],
        seeds=list(range(seeds)),
        settings=settings,
        train_config=config,
        corpus_dir=ROOT / "corpus",
        output_dir=out / run_name,
        models_dir=out / "al_models",
        source_model=source_dir / "model" / "model-best",
        eval_split="dev",
        baselines=[],
        strategy_params={"cartography": params},
    )
    plan = run_grid(spec, progress=True)
    curves = build_curves(load_records(plan.output_dir))
    print(
        f"\n## AULC from round 0 on {settings.primary_eval}, news -> target "
        f"({len(spec.seeds)} seed(s), {al_cfg.relative_to(ROOT)} "
        f"{changed or ''}, cartography reference: "
        f"{reference} {extra_params or ''}; {time.perf_counter() - start:.0f} s)\n"
    )
    strategies = spec.strategies
    print("| target | " + " | ".join(strategies) + " |")
    print("| --- |" + " ---: |" * len(strategies))
    for target in targets:
        cells = []
        for strategy in strategies:
            curve = curves.get(("news", target, strategy, "reset", settings.primary_eval))
            if curve is None:
                cells.append("–")
                continue
            x, f1 = curve.from_start()  # AULC from round 0, as the reports
            m, ci = mean_ci([aulc(x, row) for row in f1])
            ci_text = "" if numpy.isnan(ci) else f" ± {ci:.3f}"
            cells.append(f"{m:.3f}{ci_text}")
        print(f"| {target} | " + " | ".join(cells) + " |")


def main(
    config: Path = typer.Option(
        ROOT / "configs" / "test" / "bio_cnn.cfg",
        "--config",
        help="Training config (the tiny twin by default; configs/bio_cnn.cfg for real figures).",
    ),
    output: Path = typer.Option(
        ROOT / "metrics" / "dynamics", "--output", "-o", help="Where everything is written."
    ),
    epochs: int = typer.Option(8, "--epochs", help="Epochs of every training."),
    datamap_domains: str = typer.Option(
        "conversation,legal,news,social_media", "--datamap-domains", help="Data-map domains."
    ),
    aum_domain: str = typer.Option("news", "--aum-domain", help="Domain of the noise study."),
    noise: str = typer.Option("10,20", "--noise", help="Noise percentages, comma-separated."),
    seed: int = typer.Option(0, "--seed", help="The one seed."),
    top: int = typer.Option(3, "--top", help="Hardest sentences printed per domain."),
    retrain: bool = typer.Option(False, "--retrain", help="Record and train everything again."),
    skip_datamap: bool = typer.Option(False, "--skip-datamap", help="Skip the data maps."),
    skip_aum: bool = typer.Option(False, "--skip-aum", help="Skip the AUM noise study."),
    with_al: bool = typer.Option(False, "--with-al", help="Also run the cartography AL grid."),
    al_targets: str = typer.Option(
        "conversation,legal,social_media", "--al-targets", help="AL target domains."
    ),
    al_seeds: int = typer.Option(3, "--al-seeds", help="AL seeds per setting."),
    cartography_reference: str = typer.Option(
        "labeled",
        "--cartography-reference",
        help="labeled (docs labelled so far) | dynamics (the source pipeline's training).",
    ),
    cartography_params: list[str] = typer.Option(
        [],
        "--cartography-param",
        help="Extra cartography keyword (repeat), e.g. hard_quantile=0.1 or mode=downweight.",
    ),
    al_quick: bool = typer.Option(
        False, "--al-quick", help="AL smoke run: configs/al/test/tiny.cfg settings."
    ),
    al_train_limit: int | None = typer.Option(
        None, "--al-train-limit", help="Override: only the first N target train docs."
    ),
    al_pool_fraction: float | None = typer.Option(
        None, "--al-pool-fraction", help="Override: pool share of the target train set."
    ),
    al_budget: float | None = typer.Option(
        None, "--al-budget", help="Override: stop at this labeled share."
    ),
) -> None:
    """Run the dynamics benchmarks and print their figures."""
    try:
        cartography_kwargs = parse_params(
            cartography_params, "--cartography-param", "hard_quantile=0.1"
        )
    except AdaptnerError as e:
        raise typer.BadParameter(str(e)) from None
    output = output.resolve()
    start = time.perf_counter()
    if not skip_datamap:
        run_datamaps(config, output / "datamap", datamap_domains, epochs, seed, top, retrain)
    if not skip_aum:
        rates = [float(x) / 100 for x in noise.split(",") if x.strip()]
        run_aum(config, output / f"aum_{aum_domain}", aum_domain, rates, epochs, seed, retrain)
    if with_al:
        run_al(
            config,
            output,
            parse_domains(al_targets),
            al_seeds,
            cartography_reference,
            epochs,
            al_quick,
            {
                "train_limit": al_train_limit,
                "pool_fraction": al_pool_fraction,
                "budget": al_budget,
            },
            cartography_kwargs,
        )
    print(f"\nTotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    typer.run(main)
