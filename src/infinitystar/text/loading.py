"""Which text encoder a folder or a recipe names, loaded: used by the pipeline and by the trainers alike.

A text-encoder folder is either one of the package's own encoders (``infinitystar_text_encoder.json`` with a
``"type"`` and its ``"config"``: the encoder is rebuilt from them) or a T5 encoder folder (``config.json`` of a T5
model and its tokenizer). Dispatch is on the recorded type, never on an import path, so saved folders keep
loading when modules move; the class paths that older folders recorded are kept as aliases forever.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from infinitystar.checkpoints import CheckpointError
from infinitystar.files import read_json
from infinitystar.text.builtin import BuiltinTextEncoder
from infinitystar.text.encoders import TEXT_ENCODER_INDEX, TextEncoder

#: the package's own encoders by the ``"type"`` their folders record
ENCODER_TYPES: dict[str, type[TextEncoder]] = {"builtin": BuiltinTextEncoder}
#: class paths recorded by folders saved before the ``"type"`` field (the shipped model of version 0.1.0 among them)
LEGACY_CLASS_PATHS: dict[str, str] = {"infinitystar.builtin_text.BuiltinTextEncoder": "builtin"}


def encoder_type(spec: object, where: Path) -> str:
    """The encoder type an index records (``"type"``, or a legacy ``"class"`` path); a clear error otherwise."""
    if isinstance(spec, dict):
        name = spec.get("type")
        if name is None and "class" in spec:
            name = LEGACY_CLASS_PATHS.get(str(spec["class"]))
            if name is None:
                raise CheckpointError(
                    f"{where}: text encoder class {spec['class']!r} is not one this package knows; "
                    f"known types: {', '.join(ENCODER_TYPES)}"
                )
        if name in ENCODER_TYPES:
            return name
        if name is not None:
            raise CheckpointError(f"{where}: unknown text encoder type {name!r}; known: {', '.join(ENCODER_TYPES)}")
    raise CheckpointError(f'{where}: expected {{"type": ..., "config": {{...}}}}, got {spec!r:.200}')


def load_text_encoder(
    folder: str | os.PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> TextEncoder:
    """The text encoder saved in ``folder``: one of the package's own (by its recorded type), else T5."""
    folder = Path(folder)
    index = folder / TEXT_ENCODER_INDEX
    if index.is_file():
        spec = read_json(index, "text encoder index", CheckpointError)
        name = encoder_type(spec, index)
        return ENCODER_TYPES[name].from_config(spec.get("config", {}), device=device)
    from infinitystar.text.encoders import T5TextEncoder

    return T5TextEncoder(folder, device=device, dtype=dtype)


def make_text_encoder(spec: str, model_cfg, device: torch.device | str = "cpu") -> TextEncoder:
    """The text encoder a recipe or the CLI names: ``builtin`` (the fixed-embedding encoder sized for the
    transformer config ``model_cfg``) or a text-encoder folder (:func:`load_text_encoder`)."""
    if spec == "builtin":
        return BuiltinTextEncoder.for_config(model_cfg, device=device)
    return load_text_encoder(spec, device)
