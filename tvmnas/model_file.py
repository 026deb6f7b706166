"""Checks of a model file's path that need neither TVM nor torch, so the CLI refuses a missing file
or an unknown format at once instead of after seconds of imports."""

from __future__ import annotations

from pathlib import Path

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
