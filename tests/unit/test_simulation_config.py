"""Unit tests of the simulation settings: validation, AL config files, run ids and hashes."""

from pathlib import Path

import pytest

from adaptner.errors import AdaptnerError
from adaptner.simulation.config import (
    ALSettings,
    SimulationConfig,
    derive_seed,
    load_al_settings,
    resolve_source,
    source_slug,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"pool_fraction": 0.0}, r"pool_fraction must be in \(0, 1\], got 0.0"),
        ({"query_fraction": 1.5}, r"query_fraction must be in \(0, 1\]"),
        ({"budget": -0.1}, r"budget must be in \(0, 1\]"),
        ({"replay_fraction": 2.0}, r"replay_fraction must be in \[0, 1\]"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"patience": -1}, "patience must be >= 0"),
        ({"learn_rate": 0.0}, "learn_rate must be positive"),
        ({"eval_sets": ()}, "eval_sets is empty"),
        ({"eval_sets": ("dev", "dev")}, r"eval_sets names a set twice: \['dev', 'dev'\]"),
        ({"eval_holdout": 0.0}, "has heldout, merged, which needs held-out docs, but eval_hold"),
        ({"stop_on": "test"}, "Unknown stop_on 'test'; choose from labelled, dev"),
        ({"stop_share": 1.0}, r"stop_share must be in \(0, 1\)"),
        ({"reference_epochs": -1}, "reference_epochs must be >= 0"),
        ({"reference_learn_rate": 0.0}, "reference_learn_rate must be positive"),
    ],
)
def test_settings_validation(changes, message):
    with pytest.raises(AdaptnerError, match=message):
        ALSettings(**changes)


def test_replace_ignores_none():
    s = ALSettings().replace(epochs=3, budget=None)
    assert s.epochs == 3 and s.budget == 1.0


@pytest.mark.parametrize("name", ["default.cfg", "full_pool.cfg", "test/tiny.cfg"])
def test_shipped_al_configs_load(name):
    s = load_al_settings(ROOT / "configs" / "al" / name)
    assert 0 < s.pool_fraction <= 1 and 0 < s.query_fraction <= s.pool_fraction


def test_top_layers_al_config_is_e5_with_the_real_model():
    """e5_top_layers.cfg is e5.cfg with the top_layers trainer at the trainer's own rates,
    anchored as a session's top_layers rounds are by default."""
    from adaptner.session.trainer import DEFAULT_ANCHOR_DOCS

    base = load_al_settings(ROOT / "configs" / "al" / "e5.cfg").as_dict()
    top = load_al_settings(ROOT / "configs" / "al" / "e5_top_layers.cfg").as_dict()
    changed = {k for k in base if base[k] != top[k]}
    assert changed == {"trainer", "epochs", "learn_rate", "anchor_docs"}
    assert (top["trainer"], top["epochs"], top["learn_rate"]) == ("top_layers", 10, None)
    assert base["anchor_docs"] == 0 and top["anchor_docs"] == DEFAULT_ANCHOR_DOCS["top_layers"]


def test_default_al_config_is_the_papers_protocol():
    s = load_al_settings(ROOT / "configs" / "al" / "default.cfg")
    assert (s.pool_fraction, s.query_fraction, s.budget) == (0.2, 0.05, 1.0)
    assert load_al_settings(ROOT / "configs" / "al" / "full_pool.cfg").pool_fraction == 1.0


def test_load_al_settings_overrides_and_errors(tmp_path):
    cfg = tmp_path / "al.cfg"
    cfg.write_text("[simulation]\npool_fraction = 0.5\nepochs = 4\n")
    s = load_al_settings(cfg, epochs=7, budget=None)
    assert (s.pool_fraction, s.epochs, s.budget) == (0.5, 7, 1.0)
    assert load_al_settings(None) == ALSettings()
    with pytest.raises(AdaptnerError, match=r"AL config .*nope\.cfg does not exist"):
        load_al_settings(tmp_path / "nope.cfg")
    (tmp_path / "bad.cfg").write_text("[simulation]\npool_fractoin = 0.5\n")
    with pytest.raises(AdaptnerError, match=r"bad\.cfg: unknown key simulation\.pool_fractoin"):
        load_al_settings(tmp_path / "bad.cfg")
    (tmp_path / "nosec.cfg").write_text("[training]\nx = 1\n")
    with pytest.raises(AdaptnerError, match=r"nosec\.cfg has no \[simulation\] section"):
        load_al_settings(tmp_path / "nosec.cfg")
    (tmp_path / "range.cfg").write_text("[simulation]\nbudget = 3\n")
    with pytest.raises(AdaptnerError, match=r"range\.cfg: budget must be in"):
        load_al_settings(tmp_path / "range.cfg")
    (tmp_path / "sets.cfg").write_text('[simulation]\neval_sets = ["heldout", "train"]\n')
    with pytest.raises(AdaptnerError, match=r"sets\.cfg: Unknown evaluation set 'train'"):
        load_al_settings(tmp_path / "sets.cfg")
    (tmp_path / "dev.cfg").write_text('[simulation]\neval_sets = ["dev"]\neval_holdout = 0\n')
    assert load_al_settings(tmp_path / "dev.cfg").eval_sets == ("dev",)  # a list in the file
    # a file that is fine, and overrides that select on an evaluation set: no file named
    with pytest.raises(AdaptnerError, match='^patience = 2 with stop_on = "dev"') as err:
        load_al_settings(tmp_path / "dev.cfg", patience=2, stop_on="dev")
    assert "out of eval_sets" in str(err.value)


def test_sources_and_ids():
    assert resolve_source("all-but-target", "legal") == "all-but:legal"
    assert resolve_source("news", "legal") == "news"
    assert source_slug("all-but:social_media") == "all-but-social_media"
    assert source_slug("news,web") == "news+web"
    cfg = SimulationConfig(
        source="all-but:legal",
        target="legal",
        strategy="margin",
        mode="warm",
        seed=2,
        settings=ALSettings(),
        source_model=Path("x"),
    )
    assert cfg.run_id == "all-but-legal_legal_margin_warm_s2"
    params = cfg.params()
    assert params["pool_fraction"] == 0.2 and params["mode"] == "warm"
    assert "source_model" not in params and "corpus_dir" not in params  # paths may move
    moved = SimulationConfig(**{**cfg.__dict__, "source_model": Path("elsewhere")})
    assert moved.params_hash() == cfg.params_hash()
    other = SimulationConfig(**{**cfg.__dict__, "settings": ALSettings(epochs=3)})
    assert other.params_hash() != cfg.params_hash()


def test_derive_seed():
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3)
    assert len({derive_seed(1, r, p) for r in range(10) for p in range(4)}) == 40
    assert 0 <= derive_seed(10**6, 5) < 2**32
