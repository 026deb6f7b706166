"""Model files: the checks of a path that need neither TVM nor torch, so the CLI refuses a missing
file or an unknown format at once instead of after seconds of imports, and writing a torch module as
one (.onnx, .pt2) at a fixed input shape. torch is imported only by the writers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from tvmnas.errors import ModelLoadError

MODEL_SUFFIXES = (".onnx", ".pt2", ".pt", ".tflite")


def check_model_file(path: Path) -> None:
    """ModelLoadError unless `path` is an existing file with a model suffix (.onnx, .pt2 or .tflite)."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model file '{path}' does not exist")
    if not path.is_file():
        raise ModelLoadError(f"model file '{path}' is not a file")
    suffix = path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise ModelLoadError(f"'{path}': unknown model format '{suffix}' (expected .onnx, .pt2 or .tflite)")


def sample_input(input_shape: tuple[int, ...], seed: int = 0) -> "torch.Tensor":
    """A seeded standard-normal float32 tensor of `input_shape`, independent of the global RNG."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randn(input_shape, generator=gen, dtype=torch.float32)


def export_onnx(model: "torch.nn.Module", input_shape: tuple[int, ...], path: str | Path,
                keep_batchnorm: bool = False, output_name: str = "output") -> Path:
    """Export `model` to ONNX (TorchScript exporter, opset 17) with one input "input" and one output.

    The exporter folds eval-mode BatchNorm into the preceding Conv by default; `keep_batchnorm`
    turns its constant folding off so BatchNormalization nodes reach the importer (to test folding).
    """
    import torch

    path = Path(path)
    torch.onnx.export(model, (sample_input(input_shape),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=[output_name], do_constant_folding=not keep_batchnorm)
    return path


def export_pt2(model: "torch.nn.Module", input_shape: tuple[int, ...], path: str | Path) -> Path:
    """Export `model` with torch.export at the fixed `input_shape` and save it as a .pt2 program."""
    import torch

    path = Path(path)
    torch.export.save(torch.export.export(model, (sample_input(input_shape),)), str(path))
    return path
