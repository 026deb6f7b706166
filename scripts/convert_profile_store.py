"""One-off conversion of profile data of the old format (gzipped JSON: version 1, kernels by hash with
name, features and MACs, networks with per-target calls) into profile store dumps (measure.store).

    python scripts/convert_profile_store.py            # each tvmnas/cost/data/profiles*.json.gz
                                                       #   -> profiles*.jsonl.gz beside it
    python scripts/convert_profile_store.py OLD NEW    # one file

Rerunnable: a newer old-format file converts the same way (the dump is rewritten whole). A network's
seed is its place in the old file, which is the place the old collector gave it in its list (its
weights' seed). Every kernel's features and MACs become a feature row; the kernel names of the old
file are not kept (a fit row's name is read from the calls). After writing, the fit rows of the dump
(every target and split) are checked against the old file's rows (hash, features, MACs,
instructions, cycles); a difference stops with a non-zero exit. Remove the old file once converted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tvmnas.cost.gzip_text import read_text
from tvmnas.measure.store import FeatureRow, NetworkRow, ProfileDB, canonical_json, open_profiles

DATA_DIR = Path(__file__).resolve().parents[1] / "tvmnas" / "cost" / "data"


def old_rows(doc: dict, target: str, split: str) -> list[dict]:
    """The old format's fit rows of `target` and `split` (its first call per kernel, in file order), without names."""
    rows: dict[str, dict] = {}
    for net in doc["networks"]:
        if net["split"] != split or target not in net["targets"]:
            continue
        for call in net["targets"][target]["calls"]:
            k = doc["kernels"][call["hash"]]
            rows.setdefault(call["hash"], {"hash": call["hash"], "features": k["features"], "macs": k["macs"],
                                           "instructions": call["instructions"], "cycles": call["cycles"]})
    return [rows[h] for h in sorted(rows)]


def convert(old: Path, new: Path) -> str:
    """Write the dump of `old` to `new`, check its rows, and say what it holds."""
    doc = json.loads(read_text(old))
    if not isinstance(doc, dict) or doc.get("version") != 1:
        sys.exit(f"error: {old} is not profile data of the old format (version 1)")
    precision = doc.get("precision", "float32")
    with ProfileDB(":memory:") as db:
        db.record_network([], [FeatureRow(precision, h, int(k["macs"]), canonical_json(k["features"]))
                               for h, k in sorted(doc["kernels"].items())])
        for seed, net in enumerate(doc["networks"]):
            db.record_network([NetworkRow(
                t, precision, net["name"], net["split"], seed, canonical_json(net["genotype"]), v["instructions"],
                v["cycles"], v["preamble_cycles"],
                canonical_json([[c["kernel"], c["hash"], c["instructions"], c["cycles"]] for c in v["calls"]]))
                for t, v in sorted(net["targets"].items())], [])
        db.dump(new)
    with open_profiles(new) as db:
        for target in db.targets(precision):
            for split in ("fit", "eval"):
                rows = [{k: v for k, v in r.items() if k != "name"} for r in db.kernel_rows(target, precision, split)]
                if rows != old_rows(doc, target, split):
                    sys.exit(f"error: {new}: the {split} rows of {target} differ from {old}'s")
    return f"{old} -> {new}: {precision}, {len(doc['networks'])} networks, {len(doc['kernels'])} kernels"


def main() -> None:
    if len(sys.argv) == 3:
        pairs = [(Path(sys.argv[1]), Path(sys.argv[2]))]
    elif len(sys.argv) == 1:
        pairs = [(p, p.with_name(p.name.removesuffix(".json.gz") + ".jsonl.gz"))
                 for p in sorted(DATA_DIR.glob("profiles*.json.gz"))]
    else:
        sys.exit(__doc__)
    for old, new in pairs:
        print(convert(old, new))


if __name__ == "__main__":
    main()
