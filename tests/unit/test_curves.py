"""Unit tests of the learning-curve report: CI, AULC, thresholds, anchors, table and plots."""

import json
import math
from pathlib import Path

import numpy
import pytest

from adaptner.errors import AdaptnerError
from adaptner.simulation.curves import (
    anchor_aulc,
    aulc,
    baseline_means,
    build_curves,
    f1_at,
    find_duplicates,
    fraction_to_reach,
    goal_summary,
    holm,
    load_anchors,
    markdown_report,
    mean_ci,
    paired_gains,
    round_settings_line,
    summarize_curve,
    t_critical,
    t_pvalue,
    to_paper_units,
    write_report,
)

ROOT = Path(__file__).resolve().parents[2]
ANCHORS = (ROOT / ".." / "shared" / "anchors").resolve()


# --- statistics ----------------------------------------------------------------------------------


def test_t_critical_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 31):
        assert t_critical(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-3)
    for df in (31, 35, 50, 100, 500, 10_000):  # beyond the table: an expansion
        assert t_critical(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-4)
    assert math.isnan(t_critical(0))


def test_mean_ci():
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    means, halves = mean_ci(numpy.array([[0.5, 0.6], [0.7, 0.6]]))
    assert means.tolist() == pytest.approx([0.6, 0.6])
    assert halves[1] == 0.0 and halves[0] == pytest.approx(12.706 * 0.1)
    one_mean, one_half = mean_ci([0.4])
    assert one_mean == 0.4 and math.isnan(one_half)


def test_aulc():
    assert aulc([0.05, 0.1, 0.2], [0.7, 0.7, 0.7]) == pytest.approx(0.7)
    assert aulc([0.05, 0.25], [0.5, 0.7]) == pytest.approx(0.6)
    # uneven spacing: trapezoids weighted by width, divided by the range
    assert aulc([0.0, 0.1, 0.4], [0.0, 1.0, 1.0]) == pytest.approx((0.05 + 0.3) / 0.4)
    assert aulc([0.1], [0.42]) == 0.42
    assert math.isnan(aulc([], []))


def test_f1_at_and_fraction_to_reach():
    x, y = [0.05, 0.1, 0.2], [0.6, 0.8, 0.9]
    assert f1_at(x, y, 0.075) == pytest.approx(0.7)
    assert f1_at(x, y, 0.1) == pytest.approx(0.8)
    assert f1_at(x, y, 0.048) == pytest.approx(0.6)  # within tolerance of the first point
    assert math.isnan(f1_at(x, y, 0.25))
    assert math.isnan(f1_at(x, y, 0.01))
    assert fraction_to_reach(x, y, 0.8) == 0.1
    assert fraction_to_reach(x, y, 0.85) == 0.2
    assert fraction_to_reach(x, y, 0.95) is None


# --- the paper's anchors -------------------------------------------------------------------

# From ../shared/anchors/README.md (computed there from the same CSVs): AULC and the label share
# needed for 95 % of the final F1.
README_SUMMARY = {
    ("conversation", "random"): (0.809, 0.30),
    ("conversation", "least_confidence"): (0.804, 0.40),
    ("conversation", "margin"): (0.805, 0.35),
    ("conversation", "vocab"): (0.809, 0.35),
    ("legal", "random"): (0.879, 0.15),
    ("legal", "least_confidence"): (0.874, 0.25),
    ("legal", "margin"): (0.873, 0.25),
    ("legal", "vocab"): (0.884, 0.15),
    ("social_media", "random"): (0.774, 0.45),
    ("social_media", "least_confidence"): (0.795, 0.30),
    ("social_media", "margin"): (0.797, 0.30),
    ("social_media", "vocab"): (0.782, 0.35),
}


@pytest.fixture(scope="module")
def anchors():
    if not (ANCHORS / "paper_al_curves").is_dir():
        pytest.skip(f"anchors not found at {ANCHORS}")
    return load_anchors(ANCHORS)


def test_anchors_reproduce_published_summary(anchors):
    assert set(anchors) == set(README_SUMMARY)
    for key, (expected_aulc, expected_share) in README_SUMMARY.items():
        a = anchors[key]
        assert len(a.fractions) == 20 and numpy.all(numpy.diff(a.fractions) > 0)
        assert round(aulc(a.fractions, a.f1), 3) == pytest.approx(expected_aulc, abs=1e-9)
        share = fraction_to_reach(a.fractions, a.f1, 0.95 * a.f1[-1])
        assert share == pytest.approx(expected_share, abs=0.005)


def test_load_anchors_errors(tmp_path):
    with pytest.raises(AdaptnerError, match="does not exist"):
        load_anchors(tmp_path / "nope")
    with pytest.raises(AdaptnerError, match="No ALResult_"):
        load_anchors(tmp_path)
    bad = tmp_path / "ALResult_News_Legal_random_final.csv"
    bad.write_text("f1,samples\n0.5,3\n")
    with pytest.raises(
        AdaptnerError, match="ALResult_News_Legal_random_final.csv: expected columns"
    ):
        load_anchors(tmp_path)


# --- records -> curves -> table ------------------------------------------------------------------


def record(strategy, seed, round_, f1, *, target="legal", mode="reset", n_rounds=4, src=0.8):
    return {
        "run_id": f"news_{target}_{strategy}_{mode}_s{seed}",
        "source": "news",
        "target": target,
        "strategy": strategy,
        "mode": mode,
        "seed": seed,
        "round": round_,
        "eval_split": "dev",
        "pool_fraction": 0.2,
        "labeled_fraction": 0.05 * round_,
        "target_f1": f1,
        "source_f1": src - 0.01 * round_,
        "last": round_ == n_rounds,
        "round_seconds": 2.0,
        "train_seconds": 1.5,
        "score_seconds": 0.3,
    }


def make_records(strategy, curves, **kw):
    """curves: one list of F1 per seed, round 0 first."""
    return [
        record(strategy, seed, r, f1, **kw)
        for seed, ys in enumerate(curves)
        for r, f1 in enumerate(ys)
    ]  # noqa: E501


RANDOM = [[0.5, 0.6, 0.7, 0.75, 0.8], [0.5, 0.62, 0.68, 0.77, 0.8]]
MARGIN = [[0.5, 0.7, 0.8, 0.85, 0.86], [0.5, 0.72, 0.78, 0.83, 0.86]]
BASELINE = {"source": "news", "target": "legal", "kind": "target_full", "source_f1": 0.6}
BASELINES = [{**BASELINE, "seed": s, "target_f1": f} for s, f in enumerate([0.88, 0.9])]


def test_build_and_summarize():
    curves = build_curves(make_records("random", RANDOM) + make_records("margin", MARGIN))
    assert set(curves) == {
        ("news", "legal", "random", "reset", "dev"),
        ("news", "legal", "margin", "reset", "dev"),
    }
    c = curves[("news", "legal", "margin", "reset", "dev")]
    assert c.seeds == [0, 1] and c.complete and c.f1.shape == (2, 5)
    assert c.fractions.tolist() == pytest.approx([0, 0.05, 0.1, 0.15, 0.2])
    base = baseline_means(BASELINES)
    assert base[("news", "legal", "target_full", "dev")]["target_f1"] == pytest.approx(0.89)
    row = summarize_curve(c, base)
    assert row["f1@0.05"] == pytest.approx(0.71)
    assert row["f1@0.05_ci"] == pytest.approx(12.706 * 0.01)
    assert row["f1@0.1"] == pytest.approx(0.79)
    assert row["f1@0.25"] is None and row["f1@0.5"] is None  # beyond the 20 % pool
    # AULC from round 0 (the source's 0.5 at 0 labels), trapezoids by hand over 0-20 %:
    # seed 0: (.60 + .75 + .825 + .855) * .05 / .2 = .7575; seed 1: (.61 + .75 + .805 + .845)
    # * .05 / .2 = .7525
    assert row["aulc"] == pytest.approx(0.755)
    assert row["aulc_ci"] == pytest.approx(12.706 * 0.0025)
    # from the first labelled round (the paper's curves have no round 0)
    expected_labeled = numpy.mean([aulc([0.05, 0.1, 0.15, 0.2], ys[1:]) for ys in MARGIN])
    assert row["aulc_labeled"] == pytest.approx(expected_labeled)
    assert row["reference"] == "target_full" and row["full_target_f1"] == pytest.approx(0.89)
    assert row["reach95"] == pytest.approx(0.2)  # .84 at 15 % < .8455 <= .86 at 20 %
    assert row["reach99"] is None  # .881 never reached
    # per seed: seed 0 reaches .8455 at 15 % (.85), seed 1 at 20 % (.86)
    assert row["reach95_seeds"] == pytest.approx([0.15, 0.2]) and row["reach95_n"] == 2
    assert row["reach95_mean"] == pytest.approx(0.175)
    assert row["reach95_ci"] == pytest.approx(12.706 * 0.025)
    assert row["reach99_seeds"] == [None, None] and row["reach99_mean"] is None
    assert row["eval_set"] == "dev"
    assert row["source_f1_start"] == pytest.approx(0.8) and row["source_f1_end"] == pytest.approx(
        0.76
    )
    assert row["round_seconds"] == 2.0


def test_incomplete_seeds_are_truncated():
    recs = make_records("random", RANDOM)
    recs = [r for r in recs if not (r["seed"] == 1 and r["round"] > 2)]
    c = build_curves(recs)[("news", "legal", "random", "reset", "dev")]
    assert not c.complete and c.f1.shape == (2, 3)


def test_reference_falls_back_to_curve_at_full_target():
    recs = [record("random", 0, r, 0.5 + 0.1 * r, n_rounds=2) for r in range(3)]
    for r in recs:
        r["labeled_fraction"] = r["round"] / 2
    c = build_curves(recs)[("news", "legal", "random", "reset", "dev")]
    row = summarize_curve(c, {})
    assert row["reference"] == "curve@100%" and row["full_target_f1"] == pytest.approx(0.7)
    assert (
        summarize_curve(build_curves(make_records("random", RANDOM))[c.key], {})["reference"]
        == "none"
    )


def test_goal_summary_needs_every_target():
    recs = make_records("random", RANDOM) + make_records("margin", MARGIN)
    recs += make_records("random", MARGIN, target="conversation")
    recs += make_records("margin", RANDOM, target="conversation")
    base = baseline_means([{**b, "target_f1": 0.8} for b in BASELINES])
    rows = [summarize_curve(c, base) for c in build_curves(recs).values()]
    lines = goal_summary(rows)
    assert any(
        "AULC above random on every target (conversation, legal): no strategy" in x for x in lines
    )
    assert any("legal/margin (10 %)" in x for x in lines)  # .79 >= .95 * .8 at 10 %
    rows = [r for r in rows if r["target"] == "legal"]
    assert any("AULC above random on every target (legal): margin" in x for x in goal_summary(rows))


def test_worst_round_against_the_source_model():
    """A first batch that makes the model worse is found and named (seed means, round 0 = the
    source); a curve that never dips reports its smallest gain."""
    dip = [[0.5, 0.40, 0.55, 0.6, 0.7], [0.5, 0.46, 0.49, 0.6, 0.7]]  # means .43 .52 at 5/10 %
    recs = make_records("random", dip) + make_records("margin", MARGIN)
    rows = {r["strategy"]: r for r in map(summarize_curve, build_curves(recs).values(),
                                          [{}] * 2)}  # fmt: skip
    assert rows["random"]["below_source"] == pytest.approx(-0.07)
    assert rows["random"]["below_source_at"] == pytest.approx(0.05)
    assert rows["margin"]["below_source"] == pytest.approx(0.21)  # .71 - .5, its lowest round
    lines = goal_summary(list(rows.values()))
    assert "- [dev] source news, reset: every round at or above the source model (seed mean): " \
        "no, below it: legal/random (-0.070 @5 %)" in lines
    assert "every round at or above the source model (seed mean): yes (1 curves)" in "\n".join(
        goal_summary([rows["margin"]])
    )
    report = markdown_report(list(rows.values()), {})
    assert "| worst round − round 0 |" in report and "| -0.070 @5 % |" in report


def test_markdown_report(anchors):
    base = baseline_means(BASELINES)
    rows = [summarize_curve(c, base) for c in build_curves(make_records("margin", MARGIN)).values()]
    text = markdown_report(rows, base, anchors)
    assert "## Evaluation set: dev" in text
    assert "| dev | news | legal | margin | reset | 2 | 20 % (20 %) | 0.710 ± 0.127 |" in text
    assert (
        "| – | – | 0.755 ± 0.032 | +0.210 @5 % | 20 % (seeds 18 ± 32 %) | > 20 % (0/2 seeds) "
        in text
    )
    assert "| **0.890** | – | 0.800 → 0.760 |" in text  # the reference in bold
    assert "## Baselines" in text
    assert "| dev | news | legal | target_full | 2 | 0.890 ± 0.127 |" in text
    assert "## Against the paper" in text and "| dev | legal | margin | reset |" in text
    assert "Protocol: fixed_pool (one pool drawn at random per seed" in text
    assert "Pool: 20 % of the target train set" in text


def test_write_report(tmp_path, anchors):
    results = tmp_path / "al"
    (results / "baselines").mkdir(parents=True)
    for strategy, curves in (("random", RANDOM), ("margin", MARGIN)):
        for seed in (0, 1):
            lines = [json.dumps(r) for r in make_records(strategy, curves) if r["seed"] == seed]
            (results / f"news_legal_{strategy}_reset_s{seed}.jsonl").write_text(
                "\n".join(lines) + "\n"
            )
    for b in BASELINES:
        (results / "baselines" / f"news_legal_target_full_s{b['seed']}.json").write_text(
            json.dumps(b)
        )
    out = write_report(results, tmp_path / "report", anchors_dir=ANCHORS)
    assert [p.name for p in out["plots"]] == ["curves_news_legal.png"]
    assert out["plots"][0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = out["report"].read_text()
    assert text.count("| dev | news | legal |") == 4  # 2 curves + 1 gain + 1 baseline
    # margin - random, AULC from round 0 per seed: .7575 - .675 = .0825, .7525 - .68 = .0725;
    # t = .0775 / (.00707 / sqrt 2) = 15.5 with 1 df: p = 1 - 2 atan(15.5) / pi = .041
    assert "| dev | news | legal | reset | margin | 2 | +0.077 ± 0.064 | 0.041 | 0.041 | 1 " in text
    summary = json.loads(out["summary"].read_text())
    assert len(summary["rows"]) == 2 and summary["goals"]
    assert summary["gains"][0]["p"] == pytest.approx(1 - 2 * math.atan(15.5) / math.pi)
    assert summary["duplicates"] == []  # these records name no selected ids
    assert not list((tmp_path / "report").glob(".*tmp"))  # atomic writes leave no temporaries


def test_write_report_errors(tmp_path):
    with pytest.raises(AdaptnerError, match="does not exist. Run `adaptner simulate` first"):
        write_report(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(AdaptnerError, match=r"No run files \(\*\.jsonl\)"):
        write_report(tmp_path, tmp_path / "out")
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n')
    with pytest.raises(AdaptnerError, match=r"x\.jsonl, line 1: not a simulation record"):
        write_report(tmp_path, tmp_path / "out")


# --- several evaluation sets, the paper's protocol to 100 % ------------------------------------


def paper_records(strategy, seed, heldout, dev, target="legal"):
    """21 rounds (0 %, 5 %, ..., 100 %) scored on the held-out set and on dev."""
    recs = []
    for r, (h, d) in enumerate(zip(heldout, dev, strict=True)):
        rec = record(strategy, seed, r, h, target=target, n_rounds=20)
        rec.update(
            protocol="paper",
            eval_set="heldout",
            evals={"heldout": {"f1": h}, "dev": {"f1": d}},
        )
        recs.append(rec)
    return recs


def test_curves_per_evaluation_set_to_100_percent(tmp_path, anchors):
    ramp = numpy.linspace(0.3, 0.9, 21)
    recs = []
    for seed in (0, 1, 2):
        recs += paper_records("random", seed, ramp - 0.01 * seed, ramp[::-1] * 0 + 0.5 + seed / 100)
        recs += paper_records("margin", seed, ramp + 0.05 - 0.01 * seed, ramp * 0.5)
    curves = build_curves(recs)
    assert set(curves) == {
        ("news", "legal", s, "reset", e) for s in ("random", "margin") for e in ("heldout", "dev")
    }
    held = curves[("news", "legal", "margin", "reset", "heldout")]
    dev = curves[("news", "legal", "margin", "reset", "dev")]
    assert held.fractions.tolist() == pytest.approx([0.05 * i for i in range(21)])
    assert held.f1[0].tolist() == pytest.approx((ramp + 0.05).tolist())
    assert dev.f1[0].tolist() == pytest.approx((ramp * 0.5).tolist())
    assert held.protocol == "paper" and held.complete
    # the baselines are scored on both sets; each curve refers to its own set's reference
    bases = [
        {
            **BASELINE,
            "seed": s,
            "target_f1": 0.9,
            "evals": {"heldout": {"f1": 0.9}, "dev": {"f1": 0.5}},
        }
        for s in (0, 1, 2)
    ]
    base = baseline_means(bases)
    assert set(base) == {
        ("news", "legal", "target_full", "heldout"),
        ("news", "legal", "target_full", "dev"),
    }
    row_h, row_d = summarize_curve(held, base), summarize_curve(dev, base)
    assert row_h["full_target_f1"] == pytest.approx(0.9)
    assert row_d["full_target_f1"] == pytest.approx(0.5)
    assert row_h["f1@1"] == pytest.approx(0.94) and row_h["max_fraction"] == pytest.approx(1.0)
    # heldout: 95 % of .9 = .855; ramp = .3 + .03 i at 5 i %; seed s scores ramp + .05 - .01 s
    assert row_h["reach95"] == pytest.approx(0.9)  # the mean (ramp + .04) at i = 18
    assert row_h["reach95_seeds"] == pytest.approx([0.85, 0.9, 0.9])
    assert row_h["reach95_mean"] == pytest.approx(0.8833333)
    # dev: 95 % of .5 = .475 is never reached (ramp / 2 <= .45)
    assert row_d["reach95"] is None and row_d["reach95_n"] == 0
    out = tmp_path / "al"
    (out / "baselines").mkdir(parents=True)
    for seed in (0, 1, 2):
        for strategy in ("random", "margin"):
            lines = [json.dumps(r) for r in recs if r["seed"] == seed and r["strategy"] == strategy]
            (out / f"news_legal_{strategy}_reset_s{seed}.jsonl").write_text("\n".join(lines))
    for b in bases:
        (out / "baselines" / f"news_legal_target_full_s{b['seed']}.json").write_text(json.dumps(b))
    result = write_report(out, tmp_path / "report", anchors_dir=ANCHORS)
    text = result["report"].read_text()
    assert "## Evaluation set: heldout" in text and "## Evaluation set: dev" in text
    assert text.index("## Evaluation set: heldout") < text.index("## Evaluation set: dev")
    assert "| heldout | news | legal | margin | reset | 3 |" in text
    assert "| dev | news | legal | target_full | 3 | 0.500 ± 0.000 |" in text
    assert "Protocol: paper (a fresh random candidate pool every round" in text
    # the paper's curve spans 5-100 %, as ours: "same range" equals the full-range AULC
    a = anchors[("legal", "margin")]
    same = f"| {aulc(a.fractions, a.f1):.3f} | {aulc(a.fractions, a.f1):.3f} |"
    assert f"| heldout | legal | margin | reset | 100 % | {row_h['aulc_labeled']:.3f} ± " in text
    assert same in text
    assert any(line.startswith("- [heldout] source news, reset") for line in text.splitlines())
    summary = json.loads(result["summary"].read_text())
    assert {(r["strategy"], r["eval_set"]) for r in summary["rows"]} == {
        (s, e) for s in ("random", "margin") for e in ("heldout", "dev")
    }
    assert result["plots"][0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_goal_summary_names_clear_winners_per_evaluation_set():
    recs = []
    for seed in (0, 1, 2):
        base = numpy.full(21, 0.5) + seed * 0.001
        recs += paper_records("random", seed, base, base)
        recs += paper_records("margin", seed, base + 0.1, base + 0.001)  # dev: inside the CI
    rows = [summarize_curve(c, {}) for c in build_curves(recs).values()]
    lines = goal_summary(rows)
    held = next(x for x in lines if x.startswith("- [heldout]") and "AULC" in x)
    dev = next(x for x in lines if x.startswith("- [dev]") and "AULC" in x)
    assert held.endswith("(legal): margin; with non-overlapping 95 % CIs: margin")
    assert dev.endswith("(legal): margin; with non-overlapping 95 % CIs: no strategy")


def test_aulc_from_round_zero_counts_a_first_batch_that_hurts():
    # the source scores 0.5; the first 5 % of labels drop it to 0.3, then it recovers
    fractions, f1 = [0.0, 0.05, 0.10, 0.15], [0.5, 0.3, 0.5, 0.6]
    labeled_only = aulc(fractions[1:], f1[1:])
    from_start = aulc(fractions, f1)
    # trapezoids by hand: (0.4 + 0.4 + 0.55) * 0.05 / 0.15
    assert from_start == pytest.approx((0.4 + 0.4 + 0.55) * 0.05 / 0.15)
    assert labeled_only == pytest.approx((0.4 + 0.55) * 0.05 / 0.10)
    assert from_start < labeled_only  # the drop below the source shows only from round 0


def test_holm_matches_a_hand_computed_example():
    # m = 4: sorted p 0.01, 0.02, 0.03, 0.20 -> 0.04, 0.06, 0.06 (running max of 0.06), 0.20
    adjusted = holm([0.03, 0.01, 0.20, 0.02])
    assert adjusted.tolist() == pytest.approx([0.06, 0.04, 0.20, 0.06])
    assert holm([0.5, 0.9]).tolist() == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]).size == 0
    with pytest.raises(AdaptnerError, match="p-values must lie in"):
        holm([0.1, 1.5])


def test_paper_units_are_shares_of_the_whole_target_train_set():
    # 20 % held out: 5 % of the AL train set is 4 % of all target train docs
    assert to_paper_units([0.05, 0.5, 1.0], 0.2).tolist() == pytest.approx([0.04, 0.4, 0.8])
    assert to_paper_units([0.3], 0.0).tolist() == [0.3]
    with pytest.raises(AdaptnerError, match="eval_holdout"):
        to_paper_units([0.1], 1.0)


# --- significance, duplicates, the paper's units, two references -------------------------------


def test_t_pvalue_exact_for_integer_degrees_of_freedom():
    # by hand: df 1 is Cauchy, P(|T| > 1) = 1/2; df 2: p = 1 - t / sqrt(t^2 + 2);
    # df 3 at t = 3: theta = atan(3 / sqrt 3) = pi/3, p = 1 - (2/pi)(pi/3 + sin cos)
    # = 1/3 - sqrt(3)/(2 pi)
    assert t_pvalue(1.0, 1) == pytest.approx(0.5)
    assert t_pvalue(math.sqrt(2), 2) == pytest.approx(1 - 1 / math.sqrt(2))
    assert t_pvalue(-3.0, 3) == pytest.approx(1 / 3 - math.sqrt(3) / (2 * math.pi))
    assert t_pvalue(0.0, 5) == pytest.approx(1.0) and t_pvalue(math.inf, 4) == 0.0
    assert math.isnan(t_pvalue(1.0, 0))
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 5, 8, 9, 29, 30):
        for t in (0.3, 1.0, 2.5, 7.0):
            assert t_pvalue(t, df) == pytest.approx(2 * stats.t.sf(t, df), abs=1e-12)


def two_round_curve(strategy, last_f1, target="legal"):
    """Round 0 at 0.5 (the source), round 1 at 10 % labels: AULC = (0.5 + F1) / 2 per seed."""
    recs = []
    for seed, f1 in enumerate(last_f1):
        for r, y in enumerate([0.5, f1]):
            rec = record(strategy, seed, r, y, target=target, n_rounds=1)
            rec["labeled_fraction"] = 0.1 * r
            recs.append(rec)
    return recs


def test_paired_gains_with_holm_on_a_hand_computed_example():
    rand = [0.60, 0.62, 0.64]
    # AULC gains per seed = half the F1 difference at 10 %
    diffs = {"least_confidence": [0.01, 0.02, 0.03], "margin": [0.04, 0.05, 0.06],
             "vocab": [-0.01, 0.0, 0.01]}  # fmt: skip
    recs = two_round_curve("random", rand)
    for name, d in diffs.items():
        recs += two_round_curve(name, [r + 2 * x for r, x in zip(rand, d, strict=True)])
    gains = {g["strategy"]: g for g in paired_gains(build_curves(recs).values())}
    assert set(gains) == set(diffs)
    # least_confidence: mean .02, sd .01, t = .02 / (.01 / sqrt 3) = sqrt 12, 2 df:
    # p = 1 - t / sqrt(t^2 + 2) = 1 - sqrt(12 / 14); margin: t = sqrt 75, p = 1 - sqrt(75 / 77)
    p_lc, p_m = 1 - math.sqrt(12 / 14), 1 - math.sqrt(75 / 77)
    assert gains["least_confidence"]["gain"] == pytest.approx(0.02)
    assert gains["least_confidence"]["gain_ci"] == pytest.approx(4.303 * 0.01 / math.sqrt(3))
    assert gains["least_confidence"]["p"] == pytest.approx(p_lc)
    assert gains["margin"]["p"] == pytest.approx(p_m)
    assert gains["vocab"]["p"] == pytest.approx(1.0)
    # Holm over m = 3: margin (smallest) x 3, least_confidence x 2, vocab x 1
    assert gains["margin"]["p_holm"] == pytest.approx(3 * p_m)  # 0.039
    assert gains["least_confidence"]["p_holm"] == pytest.approx(2 * p_lc)  # 0.148
    assert gains["vocab"]["p_holm"] == pytest.approx(1.0)
    assert all(g["family_size"] == 3 and g["seeds"] == 3 for g in gains.values())
    assert [n for n, g in sorted(gains.items()) if g["above_random"]] == ["margin"]
    assert [n for n, g in sorted(gains.items()) if g["ci_above_0"]] == ["margin"]
    # one seed: a gain, no test
    one = paired_gains(build_curves([r for r in recs if r["seed"] == 0]).values())
    assert all(g["p"] is None and g["p_holm"] is None and not g["above_random"] for g in one)


def selection(strategy, target, picks, mode="reset"):
    """Records of one strategy: picks[seed] = the ids chosen per round (round 1 first)."""
    return [
        {"source": "news", "target": target, "mode": mode, "strategy": strategy, "seed": seed,
         "round": r, "new_ids": ids}
        for seed, rounds in enumerate(picks)
        for r, ids in enumerate([[], *rounds])
    ]  # fmt: skip


def test_find_duplicates_on_a_hand_built_selection_log():
    margin = [[[3, 1], [7, 5]], [[2, 4], [6, 8]]]
    log = selection("margin", "legal", margin)
    log += selection("cartography", "legal", [[[1, 3], [5, 7]], [[4, 2], [8, 6]]])  # same sets
    log += selection("random", "legal", [[[9, 1], [7, 5]], [[2, 4], [6, 8]]])
    log += selection("mnlp", "legal", margin[:1])  # same picks, but only seed 0
    log += selection("margin", "conversation", margin)
    log += selection("cartography", "conversation", [[[3, 1], [7, 5]], [[2, 4], [6, 9]]])
    log += selection("cartography", "legal", margin, mode="warm")  # no margin in warm
    assert find_duplicates(log) == [
        {
            "source": "news", "target": "legal", "mode": "reset", "strategy": "cartography",
            "same_as": "margin", "seeds": 2, "rounds": 2,
            "reason": "cartography selects margin's sentences on legal (source news, reset: "
            "the same docs in all 2 rounds of 2 seeds)",
        }
    ]  # fmt: skip
    # the paper's strategies are kept whatever the order of the records
    assert find_duplicates(list(reversed(log)))[0]["same_as"] == "margin"


def test_write_report_reports_a_duplicate_once(tmp_path):
    out = tmp_path / "al"
    out.mkdir()
    base = [[0.5, 0.6, 0.7], [0.5, 0.62, 0.66], [0.5, 0.58, 0.72]]
    for strategy, shift, picks in (
        ("random", 0.0, [[1], [2]]),
        ("margin", 0.05, [[3], [4]]),
        ("cartography", 0.05, [[4], [3]]),  # margin's docs, in other rounds: no duplicate
        ("mnlp", 0.04, [[3], [4]]),  # margin's docs
    ):
        for seed, ys in enumerate(base):
            recs = []
            for r, y in enumerate(ys):
                rec = record(strategy, seed, r, y + (shift if r else 0), n_rounds=2)
                rec["new_ids"] = [] if r == 0 else [10 * seed + picks[r - 1][0]]
                recs.append(rec)
            (out / f"news_legal_{strategy}_reset_s{seed}.jsonl").write_text(
                "\n".join(json.dumps(x) for x in recs) + "\n"
            )
    result = write_report(out, tmp_path / "report")
    assert [d["strategy"] for d in result["duplicates"]] == ["mnlp"]
    assert sorted(r["strategy"] for r in result["rows"]) == ["cartography", "margin", "random"]
    assert next(r for r in result["rows"] if r["strategy"] == "margin")["same_as"] == ["mnlp"]
    assert {g["strategy"] for g in result["gains"]} == {"cartography", "margin"}
    assert all(g["family_size"] == 2 for g in result["gains"])  # mnlp is no extra test
    text = result["report"].read_text()
    assert "## Duplicates" in text
    assert (
        "- mnlp selects margin's sentences on legal (source news, reset: the same docs in all "
        "2 rounds of 3 seeds): reported as margin." in text
    )
    assert "| mnlp |" not in text


def test_paper_units_in_the_report_and_the_anchor_comparison(tmp_path, anchors):
    # 20 % of the target train set held out: our 100 % is 80 % of the paper's x-axis
    ramp = numpy.linspace(0.3, 0.9, 21)
    recs = []
    for seed in (0, 1):
        for rec in paper_records("margin", seed, ramp, ramp):
            rec["params"] = {"eval_holdout": 0.2}
            recs.append(rec)
    curve = build_curves(recs)[("news", "legal", "margin", "reset", "heldout")]
    assert curve.eval_holdout == 0.2
    assert curve.paper_fractions()[[1, 20]].tolist() == pytest.approx([0.04, 0.8])
    row = summarize_curve(curve, {})
    assert row["max_fraction"] == pytest.approx(1.0)
    assert row["max_fraction_paper"] == pytest.approx(0.8)
    # 25 % of the whole set = 31.25 % of ours: .3 + .6 * .3125 = .4875
    assert row["f1_paper@0.25"] == pytest.approx(0.4875)
    assert row["f1_paper@0.5"] == pytest.approx(0.3 + 0.6 * 0.625)
    text = markdown_report([row], {}, anchors)
    a = anchors[("legal", "margin")]
    assert (
        f"| heldout | legal | margin | reset | 80 % | {row['aulc_labeled']:.3f} ± 0.000 "
        f"| {anchor_aulc(a, 0.05, 0.8):.3f} | {aulc(a.fractions, a.f1):.3f} | 0.487 " in text
    )
    assert "| 100 % (80 %) |" in text


def test_the_stronger_reference_counts():
    recs = make_records("margin", MARGIN)
    curve = build_curves(recs)[("news", "legal", "margin", "reset", "dev")]
    both = baseline_means(
        [{**BASELINE, "seed": 0, "target_f1": 0.80},
         {**BASELINE, "seed": 0, "kind": "target_finetune", "target_f1": 0.84}]
    )  # fmt: skip
    row = summarize_curve(curve, both)
    assert (row["target_full_f1"], row["target_finetune_f1"]) == pytest.approx((0.80, 0.84))
    assert row["reference"] == "target_finetune" and row["full_target_f1"] == pytest.approx(0.84)
    # 95 % of .84 = .798: the seed-mean curve (.71, .79, .84, .86) reaches it at 15 %
    assert row["reach95"] == pytest.approx(0.15)
    weaker = baseline_means([{**BASELINE, "seed": 0, "kind": "target_finetune", "target_f1": 0.7}])
    assert summarize_curve(curve, {**both, **weaker})["reference"] == "target_full"
    # from-scratch baselines select on dev: never the reference
    only = baseline_means([{**BASELINE, "seed": 0, "kind": "target_only", "target_f1": 0.9}])
    assert summarize_curve(curve, only)["reference"] == "none"


def test_report_says_how_the_rounds_trained():
    plain = {"trainer": "top_layers", "epochs": 10, "source_replay": 2.0}  # before anchoring
    anchored = {**plain, "anchor_docs": 35.0}
    recs = [{"params": plain}, {"params": plain}, {"params": anchored}, {}]
    line = round_settings_line(recs)
    assert line == (
        "Rounds: trainer `top_layers`, 10 epochs, 2 source docs replayed per target doc, each "
        "round keeps its whole update (no anchoring); trainer `top_layers`, 10 epochs, 2 source "
        "docs replayed per target doc, each round keeps n / (n + 35) of its update (n = target "
        "docs trained on; anchoring)."
    )
    assert round_settings_line([{}]) is None
    base = baseline_means(BASELINES)
    rows = [summarize_curve(c, base) for c in build_curves(make_records("margin", MARGIN)).values()]
    assert line in markdown_report(rows, base, rounds=line).split("\n")
