"""Source replay: how many source docs a round adds, the seeded draw, and its settings."""

import json

import numpy
import pytest

from adaptner.errors import AdaptnerError
from adaptner.session.trainer import UpdateSettings
from adaptner.simulation.config import ALSettings, load_al_settings
from adaptner.simulation.engine import check_folder_settings
from adaptner.update.replay import replay_count, sample_replay


@pytest.mark.parametrize(
    "n_target,ratio,available,cap,expected",
    [
        (17, 0.0, 346, 0, 0),  # off
        (17, 0.5, 346, 0, 9),  # 8.5 rounds half up
        (17, 1.0, 346, 0, 17),
        (17, 2.0, 346, 0, 34),
        (200, 2.0, 346, 0, 346),  # no more than there are
        (17, 2.0, 346, 20, 20),  # the cap
        (0, 2.0, 346, 0, 0),
        (17, 1.0, 0, 0, 0),  # no source docs
    ],
)
def test_replay_count(n_target, ratio, available, cap, expected):
    assert replay_count(n_target, ratio, available, cap) == expected


def test_sample_is_seeded_distinct_and_in_source_order():
    source = [f"doc{i}" for i in range(100)]
    a = sample_replay(source, 10, 1.5, numpy.random.default_rng(7))
    b = sample_replay(source, 10, 1.5, numpy.random.default_rng(7))
    c = sample_replay(source, 10, 1.5, numpy.random.default_rng(8))
    assert a == b and a != c
    assert len(a) == len(set(a)) == 15
    assert a == sorted(a, key=source.index)
    assert sample_replay(source, 10, 0.0, numpy.random.default_rng(7)) == []


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"source_replay": -0.5}, r"source_replay must be a number >= 0 .*got -0.5"),
        ({"source_replay": float("nan")}, "source_replay must be a number >= 0"),
        ({"source_replay_max": -1}, r"source_replay_max must be >= 0 \(0 = no cap\), got -1"),
    ],
)
def test_bad_ratio_is_refused(changes, message):
    with pytest.raises(AdaptnerError, match=message):
        ALSettings(**changes)
    with pytest.raises(AdaptnerError, match=message):
        UpdateSettings(**changes)


def test_shipped_al_configs_replay_the_source():
    for name in ("default", "e5", "e5_top_layers", "fixed_pool", "full_pool"):
        settings = load_al_settings(name)
        assert settings.source_replay == ALSettings().source_replay > 0
    assert load_al_settings("default", source_replay=0.0).source_replay == 0.0


def test_folder_of_runs_without_replay_counts_as_no_replay(tmp_path):
    """A folder simulated before source replay existed holds runs without it: resuming it
    with replay on is refused, with --source-replay 0 it goes on."""
    old = {k: v for k, v in json.loads(json.dumps(ALSettings().__dict__)).items()}
    del old["source_replay"], old["source_replay_max"]
    (tmp_path / "simulation.json").write_text(json.dumps({"settings": old}), encoding="utf8")
    with pytest.raises(AdaptnerError, match=r"source_replay: folder 0.0, now 1.0"):
        check_folder_settings(tmp_path, ALSettings(source_replay=1.0))
    check_folder_settings(tmp_path, ALSettings(source_replay=0.0))
