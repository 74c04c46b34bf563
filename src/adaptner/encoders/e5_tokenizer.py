"""The XLM-R tokenizer files of e5-small: a SentencePiece model (protobuf, written by hand) and a
fast tokenizer with the official XLM-R layout (whitespace split, then Metaspace)."""


from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import numpy as np

from .e5_reader import MASK, META, SPECIALS


def _pb_varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb_bytes(field_no: int, payload: bytes) -> bytes:
    return _pb_varint(field_no << 3 | 2) + _pb_varint(len(payload)) + payload


def _pb_int(field_no: int, value: int) -> bytes:
    return _pb_varint(field_no << 3) + _pb_varint(value)


def _pb_float(field_no: int, value: float) -> bytes:
    return _pb_varint(field_no << 3 | 5) + struct.pack("<f", value)


def _pb_fields(data: bytes) -> dict[int, bytes]:
    """Length-delimited fields of a protobuf message (enough to read a NormalizerSpec)."""
    fields, pos = {}, 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _read_varint(data, pos)
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            fields[number] = data[pos : pos + length]
            pos += length
        elif wire == 5:
            pos += 4
        elif wire == 1:
            pos += 8
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    return fields


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def precompiled_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """SentencePiece's own compiled form of the per-codepoint map (what both tokenizers read)."""
    import sentencepiece as spm

    rules = "".join(
        f"{cp:X}\t{' '.join(f'{o:X}' for o in outs)}\n" for cp, outs in sorted(norm_map.items())
    )
    with tempfile.TemporaryDirectory() as tmp:
        tsv = Path(tmp) / "rules.tsv"
        tsv.write_text(rules, encoding="utf-8")
        normalizer = spm.SentencePieceNormalizer(rule_tsv=str(tsv))
        spec = normalizer.serialized_normalizer_spec()
    return _pb_fields(spec)[2]  # NormalizerSpec.precompiled_charsmap


def sentencepiece_model(pieces: list[str], scores: np.ndarray, charsmap: bytes) -> bytes:
    """A SentencePiece unigram ModelProto in fairseq order (XLM-R's ``sentencepiece.bpe.model``).

    Hugging Face ids are SentencePiece ids + 1 with ``<pad>`` at 1 and ``<mask>`` appended, so
    the SentencePiece model holds ``<unk> <s> </s>`` then the ordinary pieces.
    """
    normal, unknown, control = 1, 2, 3
    entries = [("<unk>", 0.0, unknown), ("<s>", 0.0, control), ("</s>", 0.0, control)]
    entries += [(p, float(s), normal) for p, s in zip(pieces[4:-1], scores[4:-1], strict=True)]
    out = bytearray()
    for piece, score, kind in entries:
        body = _pb_bytes(1, piece.encode("utf-8")) + _pb_float(2, score)
        if kind != normal:
            body += _pb_int(3, kind)
        out += _pb_bytes(1, body)
    out += _pb_bytes(2, _pb_int(3, 1))  # TrainerSpec.model_type = UNIGRAM
    normalizer = (
        _pb_bytes(1, b"nmt_nfkc")
        + _pb_bytes(2, charsmap)
        + _pb_int(3, 1)  # add_dummy_prefix
        + _pb_int(4, 1)  # remove_extra_whitespaces
        + _pb_int(5, 1)  # escape_whitespaces
    )
    out += _pb_bytes(3, normalizer)
    return bytes(out)


def fast_tokenizer(pieces: list[str], scores: np.ndarray, charsmap: bytes):
    """A ``tokenizers.Tokenizer`` with the official XLM-R pipeline over the given vocabulary."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing

    vocab = [(p, float(s)) for p, s in zip(pieces, scores, strict=True)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=SPECIALS["<unk>"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(charsmap), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(META, prepend_scheme="always")]
    )
    tok.decoder = decoders.Metaspace(META, prepend_scheme="always")
    bos, eos = SPECIALS["<s>"], SPECIALS["</s>"]
    tok.post_processor = TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    return tok


def xlmr_tokenizer(backend, vocab_file: Path, max_length: int):
    """A transformers ``XLMRobertaTokenizerFast`` around a ``tokenizers`` backend, with XLM-R's
    special tokens and its SentencePiece model as ``vocab_file`` (spacy-transformers reads it)."""
    from transformers import XLMRobertaTokenizerFast

    return XLMRobertaTokenizerFast(
        tokenizer_object=backend,
        vocab_file=str(vocab_file),
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token=MASK,
        model_max_length=max_length,
    )


