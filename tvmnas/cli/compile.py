"""`tvmnas compile MODEL --target NAME --out DIR`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from tvmnas.cli import options
from tvmnas.cli.app import app


@app.command("compile")
def compile_command(
    model: Path = typer.Argument(..., help="Model file: .onnx, .tflite or a saved torch.export program (.pt2)."),
    target: str = options.target(),
    out: Path = options.out("Output folder for the C bundle: new, empty, or an earlier tvmnas bundle (then replaced); any other folder is refused."),
    ignore_budget: bool = typer.Option(False, "--ignore-budget", help="Emit even if flash/SRAM exceed the board's budget."),
    optimize: str = typer.Option("speed", "--optimize", help="speed (unrolled kernel windows) or size (rolled windows, "
                                 "inline padding: much smaller depthwise kernels, somewhat slower)."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="int8: quantize a float model (post-training, "
                                           "on --calibration) and compile integer-only kernels."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="Calibration inputs for --quantize: "
                                               ".npy with samples stacked on the batch axis."),
    no_import_check: bool = typer.Option(False, "--no-import-check", help="Skip running the imported model on the "
                                         "host against PyTorch/onnxruntime (catches importer faults; costs seconds)."),
) -> None:
    """Compile a network to a standalone C bundle (no runtime, no malloc, weights in flash)."""
    from tvmnas.model_file import check_model_file
    from tvmnas.output_dir import check_out_path
    from tvmnas.targets import load_target

    tgt = load_target(target)  # both checks come before TVM and torch are imported (seconds)
    check_model_file(model)
    check_out_path(out, inputs=[model])  # a refused --out costs nothing either
    from tvmnas.compiler import compile_model

    print(f"compiling {model} for {tgt.name} ...", file=sys.stderr)
    result = compile_model(model, tgt, out, ignore_budget=ignore_budget, optimize=optimize, quantize=quantize,
                           calibration=calibration, import_check=not no_import_check)
    m = result.manifest
    print(
        f"wrote {out}: {m['precision']}, {len(m['kernels'])} kernels, arena {m['arena_bytes']:,} B "
        f"(lower bound {m['arena_lower_bound_bytes']:,} B), flash {m['flash_bytes']:,} B",
        file=sys.stderr,
    )
    print(json.dumps({k: m[k] for k in ("target", "precision", "arena_bytes", "flash_bytes", "inputs", "outputs")}))
