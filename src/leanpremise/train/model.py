"""Build the model to train: a saved SentenceTransformer, or Transformer -> Pooling -> Normalize."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from leanpremise.train.args import ModelArguments

logger = logging.getLogger(__name__)


def resolve_model_path(args: ModelArguments) -> str:
    from leanpremise.model.encoder import default_model_path

    return str(args.model_name_or_path or default_model_path())


def display_name(model_name_or_path: str | None) -> str:
    """The model's short name for output dirs and messages (that of every stage's output files)."""
    from leanpremise.model.encoder import model_display_name

    return model_display_name(model_name_or_path)


def looks_like_sentence_transformer(path: str) -> bool:
    """Whether `path` (a local dir or a Hub id) holds a saved SentenceTransformer: it has a modules.json.

    Such a model is loaded with its own modules (pooling, normalisation, prompts), not rebuilt. A Hub id is
    looked up in the local cache when offline, else on the Hub; a Hub that cannot answer is one error line.
    """
    if Path(path).is_dir():
        return (Path(path) / "modules.json").is_file()
    from huggingface_hub import constants
    from sentence_transformers.util import is_sentence_transformer_model

    try:
        return is_sentence_transformer_model(path, local_files_only=constants.HF_HUB_OFFLINE)
    except Exception as exc:  # noqa: BLE001 - network and auth errors of the Hub client have no common base
        raise ValueError(f"{path}: cannot tell whether it is a SentenceTransformer ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); pass --is_sentence_transformer "
                         "True or False") from None


def is_decoder_config(config) -> bool:
    archs = getattr(config, "architectures", None) or []
    return bool(getattr(config, "is_decoder", False)) or any(a.endswith("ForCausalLM") for a in archs)


def is_saved_static(path: str) -> bool:
    """Whether the local dir `path` holds a saved static encoder (its first module is a StaticEmbedding)."""
    modules = Path(path) / "modules.json"
    if not modules.is_file():
        return False
    try:
        first = json.loads(modules.read_text(encoding="utf-8"))[0]
    except (OSError, ValueError, IndexError, KeyError):
        return False
    return isinstance(first, dict) and str(first.get("type", "")).endswith("StaticEmbedding")


def build_model(args: ModelArguments, device: str | None = None, dataset=None):
    """The SentenceTransformer to train (see ModelArguments.encoder and is_sentence_transformer).

    `dataset` is what a static encoder's Lean tokenizer is trained on (--static_tokenizer lean).
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    from leanpremise.model.encoder import check_remote_code, remote_code_refused_as_one_line

    path = resolve_model_path(args)
    trust = args.trust_remote_code
    check_remote_code(path, trust)
    if args.encoder == "static":
        if is_saved_static(path):
            return full_precision(SentenceTransformer(path, device=device))
        from leanpremise.train.static import build_static_model

        return full_precision(build_static_model(args, path, dataset, device))
    is_st = args.is_sentence_transformer
    if is_st is None:
        is_st = looks_like_sentence_transformer(path)
    with remote_code_refused_as_one_line(path):
        if is_st:
            model = SentenceTransformer(path, device=device, trust_remote_code=trust)
        else:
            from transformers import AutoConfig

            decoder = is_decoder_config(AutoConfig.from_pretrained(path, trust_remote_code=trust))
            processor_kwargs = {"trust_remote_code": trust, **({"add_eos_token": True} if decoder else {})}
            word = Transformer(path, model_kwargs={"trust_remote_code": trust}, processor_kwargs=processor_kwargs,
                               config_kwargs={"trust_remote_code": trust})
            if decoder:
                ensure_eos(word.tokenizer)
            pool = Pooling(word.get_embedding_dimension(), pooling_mode=args.pooling_mode)
            model = SentenceTransformer(modules=[word, pool, Normalize()], device=device)
    if args.max_seq_length:
        model.max_seq_length = args.max_seq_length
    return full_precision(model)


def full_precision(model):
    """Train float32 weights: a checkpoint stored in fp16/bf16 would otherwise be trained in that dtype.

    AdamW updates on fp16 weights underflow and overflow (a MiniLM saved in fp16
    reached NaN within one epoch on the sample); --bf16/--fp16 give mixed
    precision through autocast on top of float32 weights, as intended.
    """
    import torch

    low = {p.dtype for p in model.parameters() if p.dtype in (torch.float16, torch.bfloat16)}
    if low:
        logger.warning("model weights are stored in %s: training float32 weights (use --bf16/--fp16 for mixed "
                       "precision)", ", ".join(sorted(str(d) for d in low)))
        model.float()
    return model


def ensure_eos(tokenizer) -> None:
    """Decoders embed through the last token, which should be EOS; they also need a pad token to batch."""
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token_id is None:
        logger.warning("decoder tokenizer has no EOS token: last-token pooling uses the last text token")
        return
    ids = tokenizer("a")["input_ids"]
    if not ids or ids[-1] != tokenizer.eos_token_id:
        logger.warning("the tokenizer does not append EOS (add_eos_token unsupported): last-token pooling "
                       "uses the last text token")
