"""From board measurements to a calibrated target: fit the timing table, re-estimate the stored
profile data with it, refit the cost surrogate and the distilled cost, and write the target into
the user's targets folder (tvmnas.board.user_targets) so every command uses it by name.

Re-estimation needs each stored kernel's instruction mix (tvmnas/cost/data/mix-<target>.json.gz,
made by scripts/collect_kernel_mix.py): kernels without one are left out of the refit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

from tvmnas.board.calibrate import fit_timing, kernel_features, timing_table_json
from tvmnas.board.features import LinearTiming
from tvmnas.board.measurements import MeasurementsError, read_measurements
from tvmnas.board.mix import load_mix
from tvmnas.board.user_targets import (
    CALIBRATION, DESCRIPTOR, DISTILLED, SURROGATE, TIMING, user_target_dir, user_targets_dir,
)
from tvmnas.cost.surrogate import DATA_DIR, XGB_ROUNDS, profiles_name
from tvmnas.errors import CostModelError, TvmnasError
from tvmnas.measure.store import open_profiles
from tvmnas.targets import DESCRIPTOR_DIR, Target, load_target

MIN_REFIT_KERNELS = 10


def load_set(set_dir: Path, target: Target) -> dict[str, Any]:
    """The kernels.json of a timing firmware folder, checked to be for `target`."""
    path = Path(set_dir) / "kernels.json"
    if not path.is_file():
        raise MeasurementsError(f"calibration set folder '{set_dir}' has no kernels.json "
                                f"(write one with `tvmnas cost calibration-set`)")
    try:
        doc = json.loads(path.read_text())
    except ValueError as err:
        raise MeasurementsError(f"'{path}' is not JSON: {err}") from err
    if doc.get("format") != "tvmnas-timing-firmware":
        raise MeasurementsError(f"'{path}' is not a tvmnas timing firmware manifest")
    if doc["target"] != target.name:
        raise MeasurementsError(f"calibration set '{set_dir}' was built for {doc['target']}, not {target.name}")
    return doc


def reestimated_rows(timing: LinearTiming, base: str, mix_path: Path | None = None,
                     split: str | None = "fit") -> list[dict[str, Any]]:
    """Stored float32 profile rows of `base` (the shipped profile store, `split`) whose kernels have
    a mix, with cycles re-estimated by `timing`."""
    mix_path = mix_path or DATA_DIR / f"mix-{base}.json.gz"
    if not Path(mix_path).is_file():
        raise CostModelError(f"no instruction mix of the stored profile data for {base} ({mix_path}); "
                             f"make it with scripts/collect_kernel_mix.py --target {base}")
    mix = load_mix(mix_path)["kernels"]
    with open_profiles(DATA_DIR / profiles_name()) as db:
        rows = db.kernel_rows(base, "float32", split=split)
    out = [{**r, "cycles": max(timing.cycles(mix[r["hash"]]), 1.0)} for r in rows if r["hash"] in mix]
    return out


def network_cycles(timing: LinearTiming, base: str, mix: Mapping[str, Mapping[str, float]],
                   split: str = "eval") -> dict[str, float]:
    """Whole-network cycles (sum over calls) by `timing`, for stored networks whose kernels all have a mix."""
    with open_profiles(DATA_DIR / profiles_name()) as db:
        nets = db.networks(base, "float32", split)
    out = {}
    for net in nets:
        hashes = [h for _, h, _, _ in net.call_list]
        if all(h in mix for h in hashes):
            out[net.name] = sum(timing.cycles(mix[h]) for h in hashes)
    return out


def descriptor_json(base: Target, name: str, board: str, note: str) -> dict[str, Any]:
    raw = json.loads((DESCRIPTOR_DIR / f"{base.name}.json").read_text())
    raw.update(name=name, timing_table=f"{name}.json", board_name=board, calibrated_from=note,
               description=f"{raw['description']}; timing {note}")
    return raw


def calibrate_target(measurements: Path, set_dir: Path, base_name: str, new_name: str, *,
                     board: str | None = None, rounds: int = XGB_ROUNDS, mix_path: Path | None = None,
                     progress: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole `tvmnas cost calibrate`: returns a summary; writes user_target_dir(new_name)."""
    from tvmnas.cost.distill import distill
    from tvmnas.cost.gzip_text import read_text
    from tvmnas.cost.surrogate import CostSurrogate

    base = load_target(base_name)
    if not new_name or not all(c.isalnum() or c in "-_." for c in new_name) or new_name.startswith("."):
        raise TvmnasError(f"target name '{new_name}' may use only letters, digits, '-', '_' and '.'")
    if (DESCRIPTOR_DIR / f"{new_name}.json").is_file():
        raise TvmnasError(f"target name '{new_name}' is a shipped target: choose another name")
    dest = user_target_dir(new_name)
    if dest.exists():
        raise TvmnasError(f"target '{new_name}' already exists in {user_targets_dir()}: choose another name "
                          f"or remove that folder")
    rows = read_measurements(measurements)
    manifest = load_set(set_dir, base)
    by_id = {k["id"]: k for k in manifest["kernels"]}
    feats = kernel_features(rows, by_id, str(set_dir))
    from tvmnas.measure.profile import timing_table_for

    fit = fit_timing(feats, [float(r.min) for r in rows], timing_table_for(base))
    unit = rows[0].unit
    board = board or (manifest["board"] if unit == "cycles" else f"QEMU {base.emulator_machine} (instructions)")
    note = f"{fit.kernels} kernels measured on {board}"
    progress(f"timing table fitted to {note}: median error {fit.summary()['median_abs_error']:.1%}")
    train = reestimated_rows(fit.timing, base.name, mix_path)
    if len(train) < MIN_REFIT_KERNELS:
        raise CostModelError(f"only {len(train)} stored kernels of {base.name} have an instruction mix: "
                             f"too few to refit the surrogate (need {MIN_REFIT_KERNELS})")
    progress(f"refitting the surrogate on {len(train)} re-estimated kernels ...")
    surrogate = CostSurrogate.fit(train, new_name, rounds=rounds)
    surrogate.meta["cycles_are"] = f"timing table {note}"
    featurised = json.loads(read_text(DATA_DIR / "distill-specs.json.gz"))
    progress(f"distilling the search cost from {len(featurised)} layer specs ...")
    distilled, distill_report = distill(surrogate, featurised)
    base_json = json.loads(base.timing_table_path.read_text())
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        (tmp / TIMING).write_text(json.dumps(timing_table_json(fit, base_json, board=board, source=str(measurements)),
                                             indent=2) + "\n")
        (tmp / DESCRIPTOR).write_text(json.dumps(descriptor_json(base, new_name, board, note), indent=2) + "\n")
        surrogate.save(tmp / SURROGATE)
        distilled.target, distilled.name = new_name, f"distilled:{new_name}"
        distilled.save(tmp / DISTILLED)
        summary = {"target": new_name, "base": base.name, "board": board, "unit": unit, "kernels": fit.kernels,
                   "note": note, "fit": fit.summary(), "weights": {k: round(v, 4) for k, v in fit.timing.weights.items()},
                   "base_weights": {k: round(v, 4) for k, v in fit.base.weights.items()},
                   "refit_kernels": len(train), "distill": distill_report, "folder": str(dest)}
        (tmp / CALIBRATION).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


__all__ = ["calibrate_target", "descriptor_json", "load_set", "network_cycles", "reestimated_rows"]
