"""`tvmnas run`: build a C bundle for its target's emulator, run it on one input, write the output."""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from tvmnas.cli import options
from tvmnas.cli.app import app
from tvmnas.errors import TvmnasError
from tvmnas.measure.runner import RunResult, build, memory_usage, run
from tvmnas.targets import Target, load_target


def read_manifest(bundle_dir: Path) -> dict:
    """The bundle's manifest.json as a dict (TvmnasError naming the file if absent or invalid)."""
    path = bundle_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise TvmnasError(f"{bundle_dir} is not a bundle: no manifest.json") from err
    except (OSError, json.JSONDecodeError) as err:
        raise TvmnasError(f"{path}: unreadable manifest ({err})") from err
    for key in ("target", "inputs", "outputs"):
        if key not in manifest:
            raise TvmnasError(f"{path}: manifest has no '{key}'")
    return manifest


def _shape_size(shape: list[int]) -> int:
    return int(math.prod(shape))


def load_input(paths: list[Path], manifest: dict) -> np.ndarray:
    """The model input: each .npy flattened, concatenated in the manifest's input order."""
    specs = manifest["inputs"]
    if len(paths) != len(specs):
        raise TvmnasError(f"the bundle takes {len(specs)} input(s) but {len(paths)} --input file(s) were given")
    parts = []
    for path, spec in zip(paths, specs):
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise TvmnasError(f"{path}: not a readable .npy file ({err})") from err
        expected = _shape_size(spec["shape"])
        if array.size != expected:
            raise TvmnasError(
                f"{path}: input '{spec['name']}' needs shape {spec['shape']} ({expected} values), got {list(array.shape)}"
            )
        parts.append(np.asarray(array, dtype=np.float32).reshape(-1))
    return np.concatenate(parts)


def write_output(path: Path, flat: np.ndarray, manifest: dict) -> None:
    """Write the output with the manifest's shape(s): one .npy, or an .npz keyed by output name."""
    specs = manifest["outputs"]
    sizes = [_shape_size(spec["shape"]) for spec in specs]
    if sum(sizes) > flat.size:
        raise TvmnasError(f"the guest returned {flat.size} values but the manifest's outputs need {sum(sizes)}")
    arrays, offset = {}, 0
    for spec, size in zip(specs, sizes):
        arrays[spec["name"]] = flat[offset : offset + size].reshape(spec["shape"])
        offset += size
    buffer = io.BytesIO()
    if len(arrays) == 1:
        np.save(buffer, next(iter(arrays.values())))
    else:
        np.savez(buffer, **arrays)
    check_output_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as err:
        raise TvmnasError(f"--output {path}: cannot write there ({err.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(buffer.getvalue())
        os.replace(tmp, path)  # never a half-written output file
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise TvmnasError(f"--output {path}: cannot write there ({err.strerror})") from None


def check_output_path(path: Path) -> None:
    """Refuse an --output that names a directory (checked before the build, and again on writing)."""
    if path.is_dir():
        raise TvmnasError(f"--output {path} is a directory: give a file name such as {path / 'y.npy'}")


def nonfinite_warning(x: np.ndarray, y: np.ndarray) -> str | None:
    """One warning line when the input or the output holds NaN or inf, else None.

    The C max/min behind ReLU, clip and max pooling is a branch-free select, which keeps instruction
    counts independent of the data but turns a NaN into a number where PyTorch and onnxruntime keep
    NaN; such an output can differ from the reference, so `run` says so."""
    bad_in = int(x.size - np.count_nonzero(np.isfinite(x)))
    bad_out = int(y.size - np.count_nonzero(np.isfinite(y)))
    if not bad_in and not bad_out:
        return None
    return (
        f"warning: {bad_in} of {x.size} input values and {bad_out} of {y.size} output values are NaN or inf; "
        "the C ReLU, clip and max pooling turn NaN into a number where PyTorch and onnxruntime keep NaN, "
        "so this output may differ from the reference"
    )


def cycles_estimate(elf: Path, target: Target, inputs: list[np.ndarray], configs: list[int] | None) -> int:
    """Estimated cycles of the model call: the same ELF rerun under the profiling plugin, its executed
    blocks weighted by the core's timing table (deterministic; an estimate, not a board measurement)."""
    from tvmnas.measure.profile import profile_elf

    return profile_elf(elf, target, inputs, configs=configs).cycles


@app.command("run")
def run_command(
    bundle: Path = typer.Argument(..., exists=True, file_okay=False, help="C bundle folder (tvmnas compile --out)."),
    inputs: list[Path] = typer.Option(..., "--input", "-i", exists=True, dir_okay=False, help="Input .npy (repeat per model input)."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the output .npy (.npz for several outputs)."),
    target_name: Optional[str] = options.target("Target name; default: the manifest's target.", default=None),
    config: Optional[int] = typer.Option(None, "--config", help="Configuration index of a dynamic bundle."),
    timeout_s: float = typer.Option(60.0, "--timeout", help="Seconds before a guest counts as hung."),
    raw: bool = typer.Option(False, "--raw", help="int8 bundle: the input holds int8 values and the output is "
                             "written as int8 (default: float32 in and out, quantized with the manifest's scales)."),
) -> None:
    """Build the bundle for the target's emulator, run it and print instructions (exact), cycles, flash and SRAM."""
    check_output_path(output)
    from tvmnas.quantized import bundle_input, bundle_output

    manifest = read_manifest(bundle)
    target = load_target(target_name or manifest["target"])
    user_input = load_input(inputs, manifest)
    x = bundle_input(user_input, manifest, raw)
    configs = None if config is None else [config]
    typer.echo(f"building {bundle} for {target.name} ({target.emulator_machine})", err=True)
    elf = build(bundle, target, bundle / "build" / target.name)
    typer.echo(f"running on qemu-system-arm -M {target.emulator_machine}", err=True)
    result: RunResult = run(elf, target, [x], configs=configs, timeout_s=timeout_s)
    y = bundle_output(result.outputs[0], manifest, raw, config)
    write_output(output, y, manifest)
    warning = nonfinite_warning(user_input, y)
    if warning:
        typer.echo(warning, err=True)
    usage = memory_usage(elf, target)
    summary = {
        "target": target.name,
        "precision": manifest.get("precision", "float32"),
        "instructions": result.instructions[0],
        "instructions_note": "exact (QEMU -icount), model_run only",
        "cycles": cycles_estimate(elf, target, [x], configs),
        "cycles_note": f"estimated from the {target.core} timing table (targets/timing), not measured on a board",
        "flash_bytes": usage.flash_bytes,
        "sram_bytes": usage.sram_bytes,
        "arena_bytes": usage.arena_bytes,
        "stack_bytes": usage.stack_bytes,
        "config": config,
        "output": str(output),
    }
    print(json.dumps(summary))
