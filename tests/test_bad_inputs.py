"""Bad inputs through the real command line: each case is one row of CASES.

Every case runs `python -m tvmnas ...` in a fresh folder holding the files it names and checks that
the command exits with the expected status, prints exactly one `error:` line containing the
expected text (no traceback, no pages of library warnings), changes no file outside its output
path, leaves no temp file behind, and leaves the output either complete or absent.

To add a case: add a row to CASES. Files it needs are named in `files`; each name is made by the
maker of the same name in MAKERS (add one there for a new kind of file). In `args`, a name from
`files` is used as is (the command runs in the case's folder).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    """One bad input: the command, the files it needs, and what must come out."""

    id: str
    args: tuple[str, ...]
    files: tuple[str, ...]
    message: str                 # a substring of the one `error:` line
    exit_code: int = 1
    out: str | None = None       # output path (folder or file) that must be complete or absent
    no_heavy_imports: bool = False  # refused before TVM and torch are imported


CASES = [
    Case("compile-missing-file", ("compile", "missing.onnx", "--out", "o"), (), "model file 'missing.onnx' does not exist",
         out="o", no_heavy_imports=True),
    Case("compile-unknown-target", ("compile", "good.onnx", "--target", "cortex-m99", "--out", "o"), ("good.onnx",),
         "unknown target 'cortex-m99'", out="o", no_heavy_imports=True),
    Case("compile-unknown-format", ("compile", "model.tflite2", "--out", "o"), ("model.tflite2",),
         "unknown model format '.tflite2'", out="o", no_heavy_imports=True),
    Case("compile-corrupt-onnx", ("compile", "random.onnx", "--out", "o"), ("random.onnx",),
         "'random.onnx' is not a valid ONNX model", out="o"),
    Case("compile-random-pt2", ("compile", "random.pt2", "--out", "o"), ("random.pt2",),
         "'random.pt2' is not a readable torch.export program", out="o"),
    Case("compile-bad-optimize", ("compile", "good.onnx", "--optimize", "fast", "--out", "o"), ("good.onnx",),
         "optimize must be one of speed, size", out="o"),
    Case("compile-unsupported-op", ("compile", "erfinv.pt2", "--out", "o"), ("erfinv.pt2",),
         "unsupported operator 'erfinv", out="o"),
    Case("compile-over-budget", ("compile", "dense260.onnx", "--target", "cortex-m0", "--out", "o"), ("dense260.onnx",),
         "bytes but target 'cortex-m0' has 262,144 bytes", out="o"),
    Case("compile-dynamic-height", ("compile", "dynamic_hw.onnx", "--out", "o"), ("dynamic_hw.onnx",),
         "input 'image' has a dynamic dimension 2 ('height'", out="o"),
    Case("compile-two-inputs", ("compile", "two_inputs.onnx", "--out", "o"), ("two_inputs.onnx",),
         "the model has 2 inputs (a, b): only models with one input", out="o"),
    Case("compile-qoperator-onnx", ("compile", "qlinearconv.onnx", "--out", "o"), ("qlinearconv.onnx",),
         "node 'qconv' is QLinearConv, a QOperator-format op; export QDQ instead", out="o"),
    Case("compile-corrupt-tflite", ("compile", "random.tflite", "--out", "o"), ("random.tflite",),
         "'random.tflite' is not a TFLite model", out="o"),
    Case("compile-tflite-unsupported-op", ("compile", "l2norm.tflite", "--out", "o"), ("l2norm.tflite",),
         "unsupported operator 'L2_NORMALIZATION' at node 'normalized'", out="o"),
    Case("compile-tflite-float-input-int8-weights", ("compile", "hybrid.tflite", "--out", "o"), ("hybrid.tflite",),
         "node 'logits' has int8 weights and a float32 input (dynamic-range quantization)", out="o"),
    Case("profile-dynamic-height", ("profile", "dynamic_hw.onnx"), ("dynamic_hw.onnx",),
         "input 'image' has a dynamic dimension 2"),
    Case("profile-two-inputs", ("profile", "two_inputs.onnx"), ("two_inputs.onnx",), "the model has 2 inputs (a, b)"),
    Case("cost-predict-dynamic-height", ("cost", "predict", "dynamic_hw.onnx"), ("dynamic_hw.onnx",),
         "input 'image' has a dynamic dimension 2"),
    Case("cost-predict-missing-file", ("cost", "predict", "missing.onnx"), (), "model file 'missing.onnx' does not exist",
         no_heavy_imports=True),
    Case("run-output-is-directory", ("run", "bundle", "--input", "x.npy", "--output", "outdir"),
         ("bundle", "x.npy", "outdir"), "--output outdir is a directory"),
    Case("run-not-a-bundle", ("run", "outdir", "--input", "x.npy", "--output", "y.npy"), ("outdir", "x.npy"),
         "outdir is not a bundle: no manifest.json", out="y.npy"),
    Case("train-corrupt-image", ("train", "genotype.json", "--dataset", "corrupt_images", "--out", "o"),
         ("genotype.json", "corrupt_images"), "image 'corrupt_images/b/broken.png' cannot be decoded", out="o"),
    Case("train-one-class", ("train", "genotype.json", "--dataset", "one_class", "--out", "o"),
         ("genotype.json", "one_class"), "has 1 class sub-folder(s) (only): a classifier needs at least 2", out="o"),
    Case("train-one-class-with-images", ("train", "genotype.json", "--dataset", "one_class_with_images", "--out", "o"),
         ("genotype.json", "one_class_with_images"), "has images in 1 class(es) (a): a classifier needs at least 2",
         out="o"),
]


# ---- file makers: name -> writes that file (or folder) at the given path ------------------------------


def _export_onnx(module, example, path: Path, **kwargs) -> None:
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(module.eval(), example, str(path), dynamo=False, **kwargs)


def make_good_onnx(path: Path) -> None:
    from tvmnas.model_file import export_onnx
    from zoo import ZOO

    entry = ZOO["m0_cnn"]
    export_onnx(entry.build(), entry.input_shape, path)


def make_dense260_onnx(path: Path) -> None:  # 270 KB of weights: over the cortex-m0's 256 KB flash
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(260, 260), torch.nn.ReLU(), torch.nn.Linear(260, 4))
    _export_onnx(model, (torch.zeros(1, 260),), path, input_names=["x"], output_names=["y"])


def make_dynamic_hw_onnx(path: Path) -> None:
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU())
    _export_onnx(model, (torch.zeros(1, 1, 8, 8),), path, input_names=["image"], output_names=["y"],
                 dynamic_axes={"image": {0: "batch", 2: "height"}})


def make_two_inputs_onnx(path: Path) -> None:
    import torch

    class Add(torch.nn.Module):
        def forward(self, a, b):
            return a + b

    _export_onnx(Add(), (torch.zeros(1, 4), torch.zeros(1, 4)), path, input_names=["a", "b"], output_names=["sum"])


def make_erfinv_pt2(path: Path) -> None:
    import torch

    class ErfInv(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return torch.erfinv(torch.tanh(self.conv(x)))

    torch.export.save(torch.export.export(ErfInv().eval(), (torch.zeros(1, 1, 6, 6),)), str(path))


def make_qlinearconv_onnx(path: Path) -> None:  # QOperator ONNX: int8 arithmetic as one node
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int8(0), "z"),
             numpy_helper.from_array(np.ones((2, 1, 3, 3), np.int8), "w")]
    node = helper.make_node("QLinearConv", ["x", "s", "z", "w", "s", "z", "s", "z"], ["y"], name="qconv")
    graph = helper.make_graph([node], "q", [helper.make_tensor_value_info("x", TensorProto.INT8, [1, 1, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, [1, 2, 4, 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _tflite_file(path: Path, build: Callable) -> None:
    from tvmnas.quant.tflite_writer import _Builder

    b = _Builder()
    inputs, outputs = build(b, b.fb)
    path.write_bytes(b.finish(inputs, outputs))


def make_l2norm_tflite(path: Path) -> None:  # an int8 operator the .tflite reader does not read
    def build(b, fb):
        b.tensor("x", [1, 8], fb.TensorType.INT8, scale=0.05, zero_point=0)
        b.tensor("normalized", [1, 8], fb.TensorType.INT8, scale=1 / 128, zero_point=0)
        b.op(fb.BuiltinOperator.L2_NORMALIZATION, [0], [1])
        return [0], [1]

    _tflite_file(path, build)


def make_hybrid_tflite(path: Path) -> None:  # float activations, int8 weights (dynamic-range quantization)
    def build(b, fb):
        b.tensor("x", [1, 4], fb.TensorType.FLOAT32)
        b.tensor("w", [2, 4], fb.TensorType.INT8, np.ones((2, 4), np.int8), 0.1, 0)
        b.tensor("logits", [1, 2], fb.TensorType.FLOAT32)
        b.op(fb.BuiltinOperator.FULLY_CONNECTED, [0, 1, -1], [2], fb.BuiltinOptions.FullyConnectedOptions,
             fb.FullyConnectedOptionsT())
        return [0], [2]

    _tflite_file(path, build)


def make_random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def make_bundle(path: Path) -> None:  # enough of a bundle for `run` to read its manifest
    path.mkdir()
    manifest = {"target": "cortex-m4", "inputs": [{"name": "x", "shape": [1, 4], "dtype": "float32"}],
                "outputs": [{"name": "y", "shape": [1, 4], "dtype": "float32"}]}
    (path / "manifest.json").write_text(json.dumps(manifest))


def make_x_npy(path: Path) -> None:
    np.save(path, np.zeros((1, 4), dtype=np.float32))


def make_folder(path: Path) -> None:
    path.mkdir()
    (path / "keep.txt").write_text("the user's file")


def _images(root: Path, classes: dict[str, int]) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / name / f"{i}.png")


def make_corrupt_images(path: Path) -> None:
    _images(path, {"a": 3, "b": 3})
    (path / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)


def make_one_class(path: Path) -> None:
    _images(path, {"only": 4})


def make_one_class_with_images(path: Path) -> None:
    _images(path, {"a": 4})
    (path / "b").mkdir()


def make_genotype(path: Path) -> None:
    shutil.copy(REPO / "benchmarks" / "genotypes" / "digits_chain_lambda0.json", path)


MAKERS: dict[str, Callable[[Path], None]] = {
    "good.onnx": make_good_onnx,
    "dense260.onnx": make_dense260_onnx,
    "dynamic_hw.onnx": make_dynamic_hw_onnx,
    "two_inputs.onnx": make_two_inputs_onnx,
    "erfinv.pt2": make_erfinv_pt2,
    "random.onnx": make_random_bytes,
    "random.pt2": make_random_bytes,
    "model.tflite2": make_random_bytes,
    "random.tflite": make_random_bytes,
    "qlinearconv.onnx": make_qlinearconv_onnx,
    "l2norm.tflite": make_l2norm_tflite,
    "hybrid.tflite": make_hybrid_tflite,
    "bundle": make_bundle,
    "x.npy": make_x_npy,
    "outdir": make_folder,
    "corrupt_images": make_corrupt_images,
    "one_class": make_one_class,
    "one_class_with_images": make_one_class_with_images,
    "genotype.json": make_genotype,
}


# ---- the checks --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    """Every file any case needs, made once."""
    root = tmp_path_factory.mktemp("bad-input-files")
    for name in sorted({f for case in CASES for f in case.files}):
        MAKERS[name](root / name)
    return root


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Relative path -> (sha256 or '<dir>', mtime_ns) of everything under root."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        digest = "<dir>" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        state[rel] = (digest, path.stat().st_mtime_ns if path.is_file() else 0)
    return state


def outside(state: dict[str, tuple[str, int]], out: str | None) -> dict[str, tuple[str, int]]:
    if out is None:
        return state
    return {k: v for k, v in state.items() if k != out and not k.startswith(out + "/")}


def run_cli(args: tuple[str, ...], cwd: Path, *python_flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *python_flags, "-m", "tvmnas", *args], cwd=cwd,
                          capture_output=True, text=True)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, library: Path, tmp_path: Path) -> None:
    for name in case.files:
        source = library / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name)
        else:
            shutil.copy2(source, tmp_path / name)
    before = snapshot(tmp_path)
    proc = run_cli(case.args, tmp_path, *(("-X", "importtime") if case.no_heavy_imports else ()))

    assert proc.returncode == case.exit_code, proc.stderr
    stderr = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    if case.no_heavy_imports:
        imported = {ln.rsplit("|", 1)[-1].strip() for ln in stderr if ln.startswith("import time:")}
        assert not {"tvm", "torch"} & imported, "refused only after importing TVM or torch"
        stderr = [ln for ln in stderr if not ln.startswith("import time:")]
    errors = [ln for ln in stderr if ln.startswith("error:")]
    assert len(errors) == 1 and case.message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(stderr) <= 3, f"more than progress, a note and the error on stderr:\n{proc.stderr}"

    after = snapshot(tmp_path)
    assert outside(after, case.out) == outside(before, case.out), "a file outside the output changed or appeared"
    if case.out is not None and (tmp_path / case.out).is_dir():
        assert (tmp_path / case.out / "manifest.json").is_file(), "output folder left half-written"
