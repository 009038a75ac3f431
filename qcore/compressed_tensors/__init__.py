"""compressed-tensors checkpoints (the format of llm-compressor, read by vLLM and transformers): out and in.

- `args`: qcore specs ↔ the format's QuantizationArgs, its storage conventions, one compression format per scheme;
- `packing`: the format's int32 packing of codes narrower than 32 bits;
- `writer`: `export(model, DIR)` writes ``config.json`` + ``model.safetensors``;
- `reader`: `load(DIR)` builds QuantLinear layers from such a checkpoint;
- `vllm`: which vLLM scheme would serve each layer, or why none would.

None of these imports the compressed-tensors package: the format is written and
read from its definition, and the tests check the result with the package itself.
"""

from qcore.compressed_tensors.args import FORMAT_NAME, FormatError

__all__ = ["FORMAT_NAME", "FormatError"]
