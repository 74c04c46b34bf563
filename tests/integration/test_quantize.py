"""int8 with calibrated smoothing on the tiny BERT pipeline and real DANSK text: the smoothing
is exact in fp32, its scales are saved with the component and re-applied at load (without the
calibration data), old int8 directories load as before, and bad calibration data is named.
"""

import json
import re
import shutil
import sys

import numpy
import pytest
import spacy
import srsly
from spacy.tokens import DocBin

from adaptner.encoders.quantize import (
    ALPHA_GRID,
    FACTORY,
    SCALES_FILE,
    calibrate,
    calibration_docs,
    int8_error,
    parse_alpha,
    quantize_pipeline,
    search_alpha,
    smooth_module,
    smooth_pipeline,
    smoothing_scales,
)
from adaptner.encoders.training import transformer_modules
from adaptner.errors import AdaptnerError
from adaptner.scoring import fresh_doc

pytestmark = pytest.mark.integration
torch = pytest.importorskip("torch")

N_CALIBRATION = 48


@pytest.fixture(scope="module")
def dev(corpus_dir) -> list:
    """Real DANSK dev docs of two domains (News and Legal)."""
    vocab = spacy.blank("da").vocab
    docs = []
    for domain in ("news", "legal"):
        path = corpus_dir / "dev" / f"{domain}.spacy"
        docs.extend(list(DocBin().from_disk(path).get_docs(vocab))[:20])
    return docs


def outputs(nlp, docs) -> tuple[list[numpy.ndarray], list[numpy.ndarray]]:
    """The transformer's last hidden states and the tagger's probabilities, per doc."""
    preds = list(nlp.pipe([fresh_doc(d, nlp.vocab) for d in docs]))
    hidden = [numpy.asarray(d._.trf_data.tensors[0]).copy() for d in preds]
    return hidden, [numpy.asarray(d._.ner_probs).copy() for d in preds]


def max_diff(a: list[numpy.ndarray], b: list[numpy.ndarray]) -> float:
    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float(numpy.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def smoothed_layers(nlp) -> int:
    return sum(
        type(sub).__name__ == "SmoothedLinear"
        for module in transformer_modules(nlp)
        for sub in module.modules()
    )


def int8_layers(nlp) -> int:
    return sum(
        type(sub).__module__.startswith("torch.ao.nn.quantized.dynamic")
        for module in transformer_modules(nlp)
        for sub in module.modules()
    )


@pytest.mark.parametrize("alpha", [0.5, 0.8])
def test_smoothing_is_exact_in_fp32(tiny_trf, corpus_dir, dev, alpha):
    nlp = spacy.load(tiny_trf["best"])
    hidden, probs = outputs(nlp, dev)
    (act_max,) = calibrate(nlp, calibration_docs(corpus_dir / "train", N_CALIBRATION, 0)).act_max
    (module,) = transformer_modules(nlp)
    linear = [n for n, m in module.named_modules() if isinstance(m, torch.nn.Linear)]
    assert sorted(act_max) == sorted(linear)
    assert all(act_max[n].shape == (module.get_submodule(n).in_features,) for n in linear)
    scales = smoothing_scales(module, act_max, alpha)
    assert sorted(scales) == sorted(linear)
    assert all(numpy.all(s > 0) for s in scales.values())
    spread = [float(s.max() / s.min()) for s in scales.values()]
    assert max(spread) > 2  # the scales are not (near) uniform: the test can see a missing 1/s

    # the weight columns alone scaled (no division of the input) changes the model ...
    broken = spacy.load(tiny_trf["best"])
    (broken_module,) = transformer_modules(broken)
    with torch.no_grad():
        for name, s in scales.items():
            broken_module.get_submodule(name).weight.mul_(torch.as_tensor(s))
    assert max_diff(outputs(broken, dev)[0], hidden) > 1e-2

    # ... the smoothed model (weights times s, inputs divided by s) does not
    wrapped = smooth_module(module, scales)
    assert len(wrapped) == len(linear) == smoothed_layers(nlp)
    got_hidden, got_probs = outputs(nlp, dev)
    assert max_diff(got_hidden, hidden) < 1e-4
    assert max_diff(got_probs, probs) < 1e-4


def test_keep_fp32_layers_are_not_smoothed(tiny_trf, corpus_dir):
    nlp = spacy.load(tiny_trf["best"])
    (act_max,) = calibrate(nlp, calibration_docs(corpus_dir / "train", 8, seed=0)).act_max
    (module,) = transformer_modules(nlp)
    scales = smoothing_scales(module, act_max, 0.5, keep_fp32=[r"output\.dense"])
    assert scales and not any("output.dense" in name for name in scales)
    assert any(name.endswith("attention.self.query") for name in scales)
    with pytest.raises(AdaptnerError, match="between 0 and 1"):
        smoothing_scales(module, act_max, 1.5)
    query = "encoder.layer.0.attention.self.query"
    per_layer = smoothing_scales(module, act_max, {"pooler.dense": None, query: 0.5})
    assert list(per_layer) == [query]  # None and layers not named: not smoothed
    del act_max["pooler.dense"]
    with pytest.raises(AdaptnerError, match="'pooler.dense' was not seen in the calibration"):
        smoothing_scales(module, act_max, 0.5)


def test_scales_round_trip_and_load_without_calibration_data(tiny_trf, corpus_dir, dev, tmp_path):
    calib = tmp_path / "calib" / "train.spacy"
    calib.parent.mkdir()
    shutil.copy(corpus_dir / "train" / "news.spacy", calib)
    out = tmp_path / "int8"
    count = quantize_pipeline(
        tiny_trf["best"], out, keep_fp32=[], calibrate_on=calib, alpha=0.5,
        calibration_n=N_CALIBRATION, seed=3,
    )  # fmt: skip
    assert count == 2 * 6 + 1  # q/k/v/attention-out/intermediate/out per layer + pooler
    packed = srsly.msgpack_loads((out / FACTORY / SCALES_FILE).read_bytes())
    assert packed["info"]["alpha"] == 0.5 and packed["info"]["docs"] == N_CALIBRATION
    assert srsly.read_json(out / FACTORY / "int8.json")["smoothing"]["seed"] == 3

    # in memory: the same calibration, scales and quantization, without a disk round trip
    mem = spacy.load(tiny_trf["best"])
    (act_max,) = calibrate(mem, calibration_docs(calib, N_CALIBRATION, seed=3)).act_max
    pipe = mem.add_pipe(FACTORY, after="transformer", config={"keep_fp32": []})
    pipe.scales = [smoothing_scales(transformer_modules(mem)[0], act_max, 0.5)]
    assert pipe.quantize() == count
    (saved,) = packed["scales"]
    assert sorted(saved) == sorted(pipe.scales[0])
    assert all(numpy.array_equal(saved[k], pipe.scales[0][k]) for k in saved)
    expected = outputs(mem, dev)

    shutil.rmtree(calib.parent)  # loading must not need the calibration data
    loaded = spacy.load(out)
    assert loaded.pipe_names == ["transformer", FACTORY, "bio_ner"]
    assert smoothed_layers(loaded) == int8_layers(loaded) == count
    got = outputs(loaded, dev)
    assert max_diff(got[0], expected[0]) == 0.0 and max_diff(got[1], expected[1]) == 0.0

    # to_bytes / from_bytes carry the scales too
    again = spacy.load(tiny_trf["best"])
    again.add_pipe(FACTORY, after="transformer", config={"keep_fp32": []})
    again.get_pipe(FACTORY).from_bytes(loaded.get_pipe(FACTORY).to_bytes())
    assert smoothed_layers(again) == count
    assert max_diff(outputs(again, dev)[1], expected[1]) == 0.0

    # smoothing changes what int8 computes: the unsmoothed quantization differs
    plain = spacy.load(tiny_trf["best"])
    plain.add_pipe(FACTORY, after="transformer", config={"keep_fp32": []}).quantize()
    assert smoothed_layers(plain) == 0 and int8_layers(plain) == count
    assert max_diff(outputs(plain, dev)[0], got[0]) > 0
    fp32 = outputs(spacy.load(tiny_trf["best"]), dev)
    assert max_diff(got[1], fp32[1]) < 0.5


def test_auto_alpha_per_layer_round_trips(tiny_trf, corpus_dir, dev, tmp_path):
    out = tmp_path / "int8"
    calib = corpus_dir / "train"
    count = quantize_pipeline(tiny_trf["best"], out, keep_fp32=[], calibrate_on=calib,
                              alpha="auto", calibration_n=N_CALIBRATION)  # fmt: skip
    info = json.loads((out / FACTORY / "int8.json").read_text())["smoothing"]
    assert info["alpha"] == "auto" and info["docs"] == N_CALIBRATION
    (alphas,) = info["alphas"]
    assert len(alphas) == count and set(alphas.values()) <= set(ALPHA_GRID)
    assert alphas["pooler.dense"] is None or alphas["pooler.dense"] in ALPHA_GRID
    smoothed = [name for name, a in alphas.items() if a is not None]
    (saved,) = srsly.msgpack_loads((out / FACTORY / SCALES_FILE).read_bytes())["scales"]
    assert sorted(saved) == sorted(smoothed)

    mem = spacy.load(tiny_trf["best"])
    scales, made = smooth_pipeline(mem, calibration_docs(calib, N_CALIBRATION, 0), "auto", [])
    assert made["alphas"] == [alphas]
    pipe = mem.add_pipe(FACTORY, after="transformer", config={"keep_fp32": []})
    pipe.scales = scales
    assert pipe.quantize() == count
    loaded = spacy.load(out)
    assert smoothed_layers(loaded) == len(smoothed) and int8_layers(loaded) == count
    assert max_diff(outputs(loaded, dev)[1], outputs(mem, dev)[1]) == 0.0


def test_search_alpha_smooths_an_outlier_channel():
    """A layer whose input has a few channels 50x larger than the rest: int8 without smoothing
    loses most channels to the outliers' scale; the searched alpha does far better."""
    gen = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(64, 32)
    layer.eval()

    def rows(n):
        x = torch.randn(n, 64, generator=gen)
        x[:, :3] *= 50
        return x

    fit, held = rows(512), rows(512)
    module = torch.nn.Sequential()
    module.add_module("dense", layer)
    act_max = {"dense": fit.abs().amax(0).numpy()}
    (chosen,) = search_alpha(module, act_max, {"dense": held.numpy()}).values()
    assert chosen is not None
    (scale,) = smoothing_scales(module, act_max, chosen).values()
    plain = int8_error(layer, held, None, per_channel=True)
    assert int8_error(layer, held, scale, per_channel=True) < plain / 2
    with pytest.raises(AdaptnerError, match="No calibration inputs sampled for layer 'dense'"):
        search_alpha(module, act_max, {})


def test_parse_alpha():
    assert parse_alpha("AUTO") == "auto" and parse_alpha("0.8") == 0.8 and parse_alpha(1) == 1.0
    for bad in ("high", "1.5", "-0.1", "nan"):
        with pytest.raises(AdaptnerError, match=r"--smooth-alpha must be 'auto' or a number"):
            parse_alpha(bad)


def test_old_int8_directory_loads_as_before(tiny_trf, dev, tmp_path):
    out = tmp_path / "int8"
    count = quantize_pipeline(tiny_trf["best"], out)  # output projections kept fp32
    assert count == 2 * 4 + 1
    assert not (out / FACTORY / SCALES_FILE).exists()
    # the component's file as written before smoothing existed
    srsly.write_json(out / FACTORY / "int8.json", {"keep_fp32": [r"output\.dense"],
                                                  "per_channel": True})  # fmt: skip
    loaded = spacy.load(out)
    assert smoothed_layers(loaded) == 0 and int8_layers(loaded) == count
    probs = outputs(loaded, dev)[1]
    assert all(numpy.allclose(p.sum(axis=1), 1.0, atol=1e-4) for p in probs)


def test_damaged_scales_file_is_named(tiny_trf, corpus_dir, tmp_path):
    out = tmp_path / "int8"
    quantize_pipeline(tiny_trf["best"], out, calibrate_on=corpus_dir / "dev" / "news.spacy",
                      calibration_n=4)  # fmt: skip
    (out / FACTORY / SCALES_FILE).write_bytes(b"\xc1 not msgpack")
    with pytest.raises(AdaptnerError, match=rf"{SCALES_FILE} is damaged.*--calibrate"):
        spacy.load(out)
    (out / FACTORY / SCALES_FILE).write_bytes(srsly.msgpack_dumps({"scales": {"x": 1}}))
    with pytest.raises(AdaptnerError, match=rf"{SCALES_FILE} holds no smoothing scales"):
        spacy.load(out)


# --- bad calibration input (seconds) ------------------------------------------------------


def test_missing_calibration_path_is_named(tmp_path):
    missing = tmp_path / "corpus" / "train"
    expected = rf"Calibration data {re.escape(str(missing))} does not exist.*Pass --calibrate"
    with pytest.raises(AdaptnerError, match=expected):
        quantize_pipeline(tmp_path / "model", tmp_path / "out", calibrate_on=missing)
    assert not (tmp_path / "out").exists()


def test_calibration_directory_without_docbins_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdaptnerError, match=r"empty holds no <domain>\.spacy files"):
        calibration_docs(tmp_path / "empty")


def test_empty_calibration_docbin_is_named(tmp_path):
    path = tmp_path / "none.spacy"
    DocBin().to_disk(path)
    with pytest.raises(AdaptnerError, match=r"none\.spacy holds no documents with tokens"):
        calibration_docs(path)
    with pytest.raises(AdaptnerError, match=r"--calibration-docs must be at least 1"):
        calibration_docs(path, 0)


def test_calibration_sample_is_seeded(corpus_dir):
    a = calibration_docs(corpus_dir / "train", 16, seed=1)
    b = calibration_docs(corpus_dir / "train", 16, seed=1)
    c = calibration_docs(corpus_dir / "train", 16, seed=2)
    assert len(a) == 16 and [d.text for d in a] == [d.text for d in b]
    assert [d.text for d in a] != [d.text for d in c]
    domains = {d._.domain for d in calibration_docs(corpus_dir / "train", 256, seed=0)}
    assert len(domains) > 3  # sampled across the split's domains, not the first file


def test_calibrating_a_pipeline_without_transformer_is_refused(
    tiny_news_model, corpus_dir, tmp_path
):
    with pytest.raises(AdaptnerError, match=r"has no transformer component"):
        quantize_pipeline(tiny_news_model, tmp_path / "out", calibrate_on=corpus_dir / "dev")
    nlp = spacy.load(tiny_news_model)
    with pytest.raises(AdaptnerError, match=r"Calibration needs a transformer pipeline"):
        calibrate(nlp, calibration_docs(corpus_dir / "dev", 2))


def test_cli_smooth_alpha_needs_calibrate(monkeypatch, capsys, tmp_path):
    from adaptner.cli import main

    args = ["adaptner", "encoder", "quantize", str(tmp_path), "-o", str(tmp_path / "o"),
            "--smooth-alpha", "0.8"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 1
    assert "--smooth-alpha needs --calibrate" in capsys.readouterr().err


def test_cli_quantize_with_calibration(tiny_trf, corpus_dir, tmp_path, monkeypatch, capsys):
    from adaptner.cli import main

    out = tmp_path / "int8"
    args = ["adaptner", "encoder", "quantize", str(tiny_trf["best"]), "-o", str(out),
            "--calibrate", str(corpus_dir / "dev"), "--calibration-docs", "8",
            "--smooth-alpha", "0.8", "--all-linear"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", args)
    try:
        main()
    except SystemExit as e:
        assert e.code in (0, None), capsys.readouterr().err
    assert (
        "13 linear layers quantized to int8 at load, smoothed (alpha 0.8" in capsys.readouterr().out
    )
    info = srsly.msgpack_loads((out / FACTORY / SCALES_FILE).read_bytes())["info"]
    assert info["alpha"] == 0.8 and info["docs"] == 8
    assert smoothed_layers(spacy.load(out)) == 13
