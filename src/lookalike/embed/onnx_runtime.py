"""Run a torch backbone through ONNX Runtime: exported once, cached by a key, checked on load.

Measured on the 2-core development machine (benchmarks/README.md): ONNX Runtime runs
EfficientNet-Lite0 several times faster than eager PyTorch, at batch 1 and batch 32, with
vectors within 1e-6 cosine distance of the eager ones. The export needs the `onnx`
package and takes seconds, so it is written once to the user cache folder under a key
that names the weights hash, and checked against eager PyTorch on a probe input; the
check is recorded beside the graph with the graph's sha256, so later processes open the
graph without importing torch (a stale, damaged or unrecorded file is checked again, and
exported again when it fails).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.embed.cache import cache_dir
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
    """Whether ONNX Runtime and the exporter's `onnx` package are installed.

    Looked up, not imported: importing `onnx` costs about a second here, and only an
    export needs it.
    """
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


class OnnxRunner:
    """`run(batch) -> {output: array}` for a torch module taking an NHWC float32 batch.

    `module()` gives the torch module (built only when needed: to export, or to check an
    export that has no record yet); it maps an (N, H, W, 3) tensor to a tuple of (N, D)
    tensors named `outputs`.
    `threads`: ONNX Runtime's intra-op threads (None: its default, one per core).
    Spinning is off: the indexer decodes and detects on the other core meanwhile, and
    spinning threads would take it from them.

    Beside each export lies its record (`.json`): the sha256 of the graph, the
    onnxruntime version that reproduced the PyTorch outputs with it, and the output
    dimensions. `open_recorded()` opens a graph whose bytes have the recorded hash under
    the recorded onnxruntime without torch at all (the fast start of a query); anything
    else is checked against PyTorch again and the record rewritten.
    """

    def __init__(
        self,
        module: Callable[[], torch.nn.Module],
        key: str,
        input_size: int,
        outputs: Sequence[str],
        threads: int | None = None,
    ) -> None:
        self.module = module
        self.path = cache_dir() / "onnx" / f"{key}-v{EXPORT_VERSION}.onnx"
        self.record_path = self.path.with_suffix(".json")
        self.input_size = input_size
        self.outputs = list(outputs)
        self.threads = threads
        self._session: Any = None

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self._session is None:
            self._session = self._open_checked()
        arrays = self._session.run(self.outputs, {"x": np.ascontiguousarray(batch)})
        return dict(zip(self.outputs, arrays, strict=True))

    def open_recorded(self) -> dict[str, int] | None:
        """Open the export its record vouches for: {output: dimension}, or None (no record,
        another graph or onnxruntime than recorded: `run` will check it against PyTorch)."""
        record = self._read_record()
        if record is None:
            return None
        try:
            graph = self.path.read_bytes()
        except OSError:
            return None
        # The bytes hashed are the bytes loaded: a file swapped in between cannot slip in.
        if hashlib.sha256(graph).hexdigest() != record["onnx_sha256"]:
            log.warning("%s: differs from its record, checking it again", self.path)
            return None
        session = self._try_open(graph)
        if session is None:
            return None
        self._session = session
        return dict(record["outputs"])

    def _read_record(self) -> dict[str, Any] | None:
        import onnxruntime as ort

        try:
            record = json.loads(self.record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        expected = {
            "export_version": EXPORT_VERSION,
            "onnxruntime": ort.__version__,
            "input_size": self.input_size,
        }
        if not isinstance(record, dict) or any(record.get(k) != v for k, v in expected.items()):
            return None
        outputs = record.get("outputs")
        if not isinstance(outputs, dict) or list(outputs) != self.outputs:
            return None
        if not all(isinstance(d, int) for d in outputs.values()):
            return None
        return record if isinstance(record.get("onnx_sha256"), str) else None

    def _open_checked(self) -> Any:
        module = self.module()
        if self.path.is_file():
            session = self._open_and_record(module)
            if session is not None:
                return session
            log.warning("%s: stale or damaged ONNX export, exporting again", self.path)
        self._export(module)
        session = self._open_and_record(module)
        if session is None:
            raise LookalikeError(
                f"{self.path}: the ONNX export does not reproduce the PyTorch model; "
                "set LOOKALIKE_RUNTIME=torch to run without ONNX Runtime"
            )
        return session

    def _open_and_record(self, module: torch.nn.Module) -> Any:
        """The session of the export when it reproduces `module`, its record written; else None."""
        import onnxruntime as ort

        graph = self.path.read_bytes()
        session = self._try_open(graph)
        dims = None if session is None else self._agrees(module, session)
        if dims is None:
            return None
        record = {
            "export_version": EXPORT_VERSION,
            "onnxruntime": ort.__version__,
            "input_size": self.input_size,
            "outputs": dims,
            "onnx_sha256": hashlib.sha256(graph).hexdigest(),
        }
        try:
            atomic_write_bytes(self.record_path, json.dumps(record, indent=1).encode())
        except OSError as exc:  # a read-only cache: checked again next time
            log.warning("%s: cannot record the checked export (%s)", self.record_path, exc)
        return session

    def _try_open(self, graph: bytes) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a truncated or foreign file: export it again
            log.warning("%s: cannot load (%s)", self.path, exc)
            return None

    def _agrees(self, module: torch.nn.Module, session: Any) -> dict[str, int] | None:
        """{output: dimension} when the session reproduces `module` on a probe, else None."""
        import torch

        probe = np.random.default_rng(0).standard_normal(
            (2, self.input_size, self.input_size, 3), dtype=np.float32
        )
        with torch.inference_mode():
            expected = [t.numpy() for t in module(torch.from_numpy(probe))]
        try:
            got = session.run(self.outputs, {"x": probe})
        except Exception:  # the graph takes other inputs or names: not ours
            return None
        agree = all(
            a.shape == b.shape and min_cosine(a, b) >= MIN_PROBE_COSINE
            for a, b in zip(expected, got, strict=True)
        )
        if not agree:
            return None
        return {o: int(a.shape[1]) for o, a in zip(self.outputs, expected, strict=True)}

    def _export(self, module: torch.nn.Module) -> None:
        import torch

        example = torch.zeros((2, self.input_size, self.input_size, 3))
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            # The TorchScript-based exporter warns that it is deprecated; it still works,
            # and needs neither onnxscript nor a dynamo trace of the model's Python code.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
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
