"""Loading diffusion LMs and their tokenizers from a local directory or a hub id.

A directory written by ``save_pretrained`` (safetensors + config + tokenizer) or a hub id whose
config has ``model_type: llada`` loads into :class:`~bgpo.models.llada.LLaDAModelLM` — the
project's own code, no ``trust_remote_code``.
"""

from __future__ import annotations

import os

import torch
from transformers import AutoConfig, AutoTokenizer
from transformers.utils import logging as hf_logging

from bgpo.models.base import ModelInterfaceError, special_tokens
from bgpo.models.llada import LLaDAConfig, LLaDAModelLM

AutoConfig.register("llada", LLaDAConfig, exist_ok=True)
hf_logging.disable_progress_bar()  # a tiny checkpoint loads in milliseconds; the bar is noise

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
          "float16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[name]


def load_model(name_or_path: str, dtype: str = "float32", device: str = "cpu"):
    """Return ``(model, tokenizer)``; one-line errors for a missing path or a missing mask token."""
    looks_local = name_or_path.startswith((".", "/", "~")) or os.sep in name_or_path.rstrip(os.sep)
    if looks_local and not os.path.isdir(os.path.expanduser(name_or_path)):
        raise FileNotFoundError(f"model path {name_or_path!r} does not exist")
    path = os.path.expanduser(name_or_path)
    config = AutoConfig.from_pretrained(path)
    if config.model_type != "llada":
        raise ModelInterfaceError(
            f"{name_or_path}: model_type {config.model_type!r} is not supported (expected 'llada')"
        )
    tokenizer = AutoTokenizer.from_pretrained(path)
    if getattr(config, "mask_token_id", None) is None and tokenizer.mask_token_id is not None:
        config.mask_token_id = tokenizer.mask_token_id
    model = LLaDAModelLM.from_pretrained(path, config=config, dtype=resolve_dtype(dtype))
    special_tokens(model)  # fails early, with the reason, if there is no mask token
    return model.to(device), tokenizer
