"""Hugging Face transformers models as qcore models: local folders in, their config recorded, rebuilt from it.

A model folder is what ``save_pretrained`` writes: ``config.json`` and
safetensors weights. It is loaded with the class its config names
(``architectures``, e.g. LlamaForCausalLM, so a causal LM keeps its head),
from local files only: nothing is ever downloaded. The config travels with
what qcore writes (checkpoint metadata, an exported ``config.json``), so the
architecture can be rebuilt without a factory.

transformers is an optional extra (``pip install 'qcore[hf]'``); it is imported
here, inside the functions, never when qcore is imported.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from torch import nn

from qcore.errors import QcoreError

CONFIG_FILE = "config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "tokenizer.model", "added_tokens.json", "generation_config.json")
EXTRA_HINT = "pip install 'qcore[hf]'"


class HFError(QcoreError, ValueError):
    """A Hugging Face folder or config that cannot be used; the message names it and says why."""


def transformers() -> Any:
    """The transformers module, offline; HFError with the install hint when it is missing."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers as module
    except ImportError:
        raise HFError(f"Hugging Face models need the transformers package ({EXTRA_HINT})") from None
    return module


def is_model_folder(path: str | os.PathLike[str]) -> bool:
    """A directory with ``config.json`` and safetensors weights (what ``save_pretrained`` writes)."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and any(path.glob("*.safetensors"))


def load_folder(path: str | os.PathLike[str]) -> nn.Module:
    """The model of a local folder, in eval mode, built by the class its config names (AutoModel otherwise)."""
    tf = transformers()
    path = Path(path)
    if not is_model_folder(path):
        raise HFError(f"{path}: not a Hugging Face model folder (config.json and *.safetensors expected)")
    config = tf.AutoConfig.from_pretrained(str(path), local_files_only=True)
    try:
        model = _model_class(tf, config).from_pretrained(str(path), local_files_only=True, config=config)
    except (OSError, ValueError) as exc:
        raise HFError(f"{path}: transformers cannot load it: {exc}") from None
    return model.eval()


def _model_class(tf: Any, config: Any) -> Any:
    for name in getattr(config, "architectures", None) or ():
        cls = getattr(tf, name, None)
        if cls is not None:
            return cls
    return tf.AutoModel


def root_of(model: nn.Module) -> tuple[str, nn.Module] | None:
    """(prefix, module) of the transformers model in `model`: itself, or its first such submodule
    (a sentence-transformers model wraps one); None when there is none."""
    tf = sys.modules.get("transformers")
    if tf is None:  # nothing can be a transformers model before transformers is imported
        return None
    for name, module in model.named_modules():
        if isinstance(module, tf.PreTrainedModel):
            return name, module
    return None


def config_of(module: nn.Module) -> dict[str, Any]:
    """The config of a transformers model as ``config.json`` holds it, its architecture named."""
    data = module.config.to_dict()  # type: ignore[union-attr, operator]
    data["architectures"] = data.get("architectures") or [type(module).__name__]
    data.pop("quantization_config", None)
    data.pop("_name_or_path", None)
    return data


def model_from_config(config: dict[str, Any], where: str) -> nn.Module:
    """The architecture a recorded config names, with uninitialized weights (a skeleton to load into)."""
    tf = transformers()
    data = {k: v for k, v in config.items() if k != "quantization_config"}
    if "model_type" not in data:
        raise HFError(f"{where}: the config names no model_type; pass a factory that builds the float model")
    try:
        hf_config = tf.AutoConfig.for_model(**data)
    except (KeyError, ValueError) as exc:
        raise HFError(f"{where}: transformers does not know this config ({exc})") from None
    from transformers.initialization import no_init_weights

    with no_init_weights():
        model = _model_class(tf, hf_config)._from_config(hf_config)
    return model.eval()


def copy_tokenizer(source: str | os.PathLike[str], directory: Path) -> list[str]:
    """Copy the tokenizer files of the model folder `source` (if it is one) into `directory`; the names copied."""
    source = Path(source)
    if not str(source) or not source.is_dir() or source.resolve() == directory.resolve():
        return []
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, directory / name)
            copied.append(name)
    return copied


def source_folder(module: nn.Module) -> str:
    """The local folder a transformers model was loaded from ('' when it was built otherwise)."""
    path = str(getattr(module, "name_or_path", "") or "")
    return path if path and Path(path).is_dir() else ""
