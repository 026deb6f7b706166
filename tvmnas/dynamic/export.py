"""Export one selected sub-network as a standalone model (.pt2 and .onnx), like `tvmnas train` does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tvmnas.dynamic.select import load_selection
from tvmnas.errors import TvmnasError
from tvmnas.output_dir import staged_output
from tvmnas.train import export_model


def export_subnet(sel_dir: Path, config: int, out_dir: Path) -> dict[str, Any]:
    """Write model.pt2, model.onnx and subnet.json for configuration `config` of a selection.

    The sub-network keeps its BatchNorms (the compiler folds them), so `tvmnas compile` on the
    result gives the "compiled alone" baseline of that configuration. The folder appears whole or not at all.
    """
    selection = load_selection(sel_dir)
    if not 0 <= config < len(selection.subnets):
        raise TvmnasError(f"configuration {config} out of range: the selection has {len(selection.subnets)} "
                          "configurations", settings=("config",))
    entry = selection.entries[config]
    out_dir = Path(out_dir)
    with staged_output(out_dir, "subnet", inputs=[Path(sel_dir)]) as staging:
        info = export_model(selection.subnets[config], selection.spec.input_shape, staging)
        info.update({"config_index": config, "config": entry["config"], "holdout_acc": entry["holdout_acc"],
                     "cycles": entry["cycles"], "cost_unit": selection.meta.get("cost_unit")})
        (staging / "subnet.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info
