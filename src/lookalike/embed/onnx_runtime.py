"""Run a torch backbone through ONNX Runtime: exported once, cached by a key, checked on load.

Measured on the 2-core development machine (benchmarks/README.md): ONNX Runtime runs
EfficientNet-Lite0 several times faster than eager PyTorch, at batch 1 and batch 32, with
vectors within 1e-6 cosine distance of the eager ones. The export needs the `onnx`
package and takes seconds, so it is written once to the user cache folder under a key
that names the weights hash; every process then checks the cached graph against eager
PyTorch on one probe input before trusting it (a stale or damaged file is exported again).
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.errors import LookalikeError
from lookalike.fileio import atomic_write_bytes

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# The cosine similarity every output of the probe must reach against eager PyTorch.
MIN_PROBE_COSINE = 0.9999
# Bump when the exported graph changes for the same weights (a new output, ...).
EXPORT_VERSION = 1


def available() -> bool:
    """Whether ONNX Runtime and the exporter's `onnx` package can be imported."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cache_dir() -> Path:
    """$LOOKALIKE_CACHE_DIR, else $XDG_CACHE_HOME/lookalike, else ~/.cache/lookalike."""
    explicit = os.environ.get("LOOKALIKE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lookalike"


class OnnxRunner:
    """`run(batch) -> {output: array}` for a torch module taking an NHWC float32 batch.

    `module` maps an (N, H, W, 3) tensor to a tuple of (N, D) tensors named `outputs`.
    `threads`: ONNX Runtime's intra-op threads (None: its default, one per core).
    Spinning is off: the indexer decodes and detects on the other core meanwhile, and
    spinning threads would take it from them.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        key: str,
        input_size: int,
        outputs: Sequence[str],
        threads: int | None = None,
    ) -> None:
        self.module = module
        self.path = cache_dir() / "onnx" / f"{key}-v{EXPORT_VERSION}.onnx"
        self.input_size = input_size
        self.outputs = list(outputs)
        self.threads = threads
        self._session: Any = None

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self._session is None:
            self._session = self._open_checked()
        arrays = self._session.run(self.outputs, {"x": np.ascontiguousarray(batch)})
        return dict(zip(self.outputs, arrays, strict=True))

    def _open_checked(self) -> Any:
        if self.path.is_file():
            session = self._try_open()
            if session is not None and self._agrees(session):
                return session
            log.warning("%s: stale or damaged ONNX export, exporting again", self.path)
        self._export()
        session = self._try_open()
        if session is None or not self._agrees(session):
            raise LookalikeError(
                f"{self.path}: the ONNX export does not reproduce the PyTorch model; "
                "set LOOKALIKE_RUNTIME=torch to run without ONNX Runtime"
            )
        return session

    def _try_open(self) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a truncated or foreign file: export it again
            log.warning("%s: cannot load (%s)", self.path, exc)
            return None

    def _agrees(self, session: Any) -> bool:
        import torch

        probe = np.random.default_rng(0).standard_normal(
            (2, self.input_size, self.input_size, 3), dtype=np.float32
        )
        with torch.inference_mode():
            expected = [t.numpy() for t in self.module(torch.from_numpy(probe))]
        try:
            got = session.run(self.outputs, {"x": probe})
        except Exception:  # the graph takes other inputs or names: not ours
            return False
        return all(
            a.shape == b.shape and min_cosine(a, b) >= MIN_PROBE_COSINE
            for a, b in zip(expected, got, strict=True)
        )

    def _export(self) -> None:
        import torch

        example = torch.zeros((2, self.input_size, self.input_size, 3))
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            # The TorchScript-based exporter warns that it is deprecated; it still works,
            # and needs neither onnxscript nor a dynamo trace of the model's Python code.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                self.module,
                (example,),
                buffer,
                dynamo=False,
                input_names=["x"],
                output_names=self.outputs,
                dynamic_axes={"x": {0: "n"}, **{o: {0: "n"} for o in self.outputs}},
                opset_version=17,
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, buffer.getvalue())


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest row-wise cosine similarity of two (N, D) arrays (1.0 for zero rows)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    dots = np.sum(a64 * b64, axis=1)
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 1.0)
    return float(cos.min()) if len(cos) else 1.0
