"""A tiny, randomly initialised local BERT (own WordPiece vocabulary) for offline tests."""

from collections.abc import Iterable
from pathlib import Path

from .errors import AdaptnerError
from .trf import require_trf
from .util import PathLike, atomic_output

#: The BERT special tokens, in vocabulary order ([PAD] gets id 0, as BERT expects).
SPECIAL_TOKENS: list[str] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_bert(
    output_dir: PathLike,
    texts: Iterable[str],
    *,
    vocab_size: int = 2000,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Train a WordPiece tokenizer on ``texts`` and save it with a random BERT, fully offline.

    The result is a Hugging Face model directory (``config.json``, weights, ``vocab.txt``,
    ``tokenizer.json``, ...) that ``AutoTokenizer``/``AutoModel.from_pretrained`` and so
    spacy-transformers' ``components.transformer.model.name`` accept as a local path. The
    weights are random: the model is for exercising the transformer code path, not quality.
    The directory is written to a temporary sibling and renamed when complete.

    Args:
        output_dir: Where to save the model and tokenizer (replaced if `tiny-bert` wrote it).
        texts: Training texts for the WordPiece vocabulary (e.g. a few hundred DANSK sentences).
        vocab_size: Target WordPiece vocabulary size (including the special tokens).
        hidden_size: Hidden width of the transformer (a multiple of ``num_heads``).
        num_layers: Number of transformer layers.
        num_heads: Attention heads per layer.
        seed: Seed for the random weights (``torch.manual_seed``).
        force: Replace an output directory that ``tiny-bert`` did not write.

    Returns:
        The output directory.

    Raises:
        AdaptnerError: no non-empty text, or inconsistent sizes.
    """
    require_trf("adaptner tiny-bert")
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise AdaptnerError(
            "build_tiny_bert needs at least one non-empty text to train its WordPiece vocabulary."
        )
    if vocab_size <= len(SPECIAL_TOKENS):
        raise AdaptnerError(f"vocab_size must exceed {len(SPECIAL_TOKENS)}, got {vocab_size}.")
    if hidden_size <= 0 or num_heads <= 0 or hidden_size % num_heads:
        raise AdaptnerError(
            f"hidden_size ({hidden_size}) must be a positive multiple of num_heads ({num_heads})."
        )
    if num_layers <= 0:
        raise AdaptnerError(f"num_layers must be positive, got {num_layers}.")

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")

    max_positions = 512
    # do_lower_case / strip_accents must match the normaliser, or BertTokenizerFast rebuilds it
    # as a lowercasing one.
    hf_tokenizer = BertTokenizerFast(
        tokenizer_object=tokenizer,
        do_lower_case=False,
        strip_accents=False,
        tokenize_chinese_chars=True,
        model_max_length=max_positions,
    )
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=hidden_size * 4,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.token_to_id("[PAD]"),
    )
    torch.manual_seed(seed)
    model = BertModel(config)
    model.eval()

    output_dir = Path(output_dir)
    with atomic_output(output_dir, "tiny-bert", force=force, owned_files=("config.json",)) as tmp:
        model.save_pretrained(tmp)
        hf_tokenizer.save_pretrained(tmp)
        if not (tmp / "vocab.txt").exists():
            # vocab.txt lets the slow BertTokenizer (use_fast = false) load the directory too.
            tokenizer.model.save(str(tmp))
    return output_dir


def corpus_texts(
    corpus: PathLike, *, domains: str = "all", limit: int = 0, seed: int = 0
) -> list[str]:
    """Sentence texts from a corpus split directory (or one ``.spacy`` file) to train a vocabulary.

    Args:
        corpus: A split directory with ``<domain>.spacy`` files (e.g. corpus/train) or a DocBin.
        domains: Domain selection for a directory: "all", "news", "news,legal", "all-but:legal".
        limit: Keep this many texts, sampled without replacement with ``seed`` (0 = all).
        seed: Seed for the sample (numpy Generator).

    Raises:
        AdaptnerError: missing or corrupt corpus, unknown domain, or no text at all.
    """
    import numpy
    import spacy

    from .readers import load_domain_docs, read_docbin

    corpus = Path(corpus)
    vocab = spacy.blank("da").vocab
    if corpus.suffix == ".spacy" or corpus.is_file():
        docs = read_docbin(corpus, vocab)
    else:
        docs = load_domain_docs(corpus, domains, vocab)
    texts = [doc.text for doc in docs if doc.text.strip()]
    if not texts:
        raise AdaptnerError(f"No non-empty texts in {corpus} (domains: {domains}).")
    if limit and limit < len(texts):
        rng = numpy.random.default_rng(seed)
        keep = numpy.sort(rng.choice(len(texts), size=limit, replace=False))
        texts = [texts[i] for i in keep]
    return texts
