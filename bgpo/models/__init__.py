"""Diffusion language models: the interface, the built-in LLaDA-architecture model, loading."""

from bgpo.models.base import ModelInterfaceError, SpecialTokens, model_logits, special_tokens
from bgpo.models.llada import LLaDAConfig, LLaDAModelLM
from bgpo.models.loading import load_model, resolve_dtype
from bgpo.models.tokenizer import char_tokenizer

__all__ = [
    "LLaDAConfig",
    "LLaDAModelLM",
    "ModelInterfaceError",
    "SpecialTokens",
    "char_tokenizer",
    "load_model",
    "model_logits",
    "resolve_dtype",
    "special_tokens",
]
