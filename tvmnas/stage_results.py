"""What each stage of the end-to-end job (tvmnas.pipeline) hands the next: one small dataclass per
stage result, recorded in work/stages/<stage>.json and written into summary.json as the same JSON
object the stage always wrote (`to_json`; `from_json` reads a record back)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, TypeVar

R = TypeVar("R", bound="StageResult")


@dataclass(frozen=True)
class StageResult:
    """A stage's result; fields named in OPTIONAL are left out of its JSON while None."""

    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the stage record and of the stage's key in summary.json."""
        return {k: v for k, v in asdict(self).items() if not (v is None and k in self.OPTIONAL)}

    @classmethod
    def from_json(cls: type[R], raw: dict[str, Any]) -> R:
        """The result a stage record holds (KeyError where a required field is missing)."""
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw or f.name not in cls.OPTIONAL})


@dataclass(frozen=True)
class SearchResult(StageResult):
    """The architecture found: by one search, or chosen from a lambda sweep (then with the sweep's
    points, its Pareto front, the chosen point and the folder where the sweep retrained it)."""

    OPTIONAL: ClassVar[tuple[str, ...]] = ("model_dir", "points", "front", "chosen")

    genotype_path: str
    genotype: str
    cost_unit: str
    cost: dict[str, Any]
    violations: list[str]
    search_val_accuracy: float
    cost_weight: float
    model_dir: str | None = None
    points: list[dict[str, Any]] | None = None
    front: list[int] | None = None
    chosen: int | None = None


@dataclass(frozen=True)
class TrainResult(StageResult):
    """The retrained float network's folder (model.pt2, model.onnx, checkpoint) and its metrics."""

    model_dir: str
    metrics: dict[str, Any]


@dataclass(frozen=True)
class QuantizeResult(StageResult):
    """The QAT folder, the exported int8 QDQ ONNX model and its metrics."""

    model_dir: str
    model: str
    metrics: dict[str, Any]


@dataclass(frozen=True)
class CompileResult(StageResult):
    """The C bundle's folder and its manifest."""

    bundle: str
    manifest: dict[str, Any]


@dataclass(frozen=True)
class BuildResult(StageResult):
    """The firmware for the emulator, its profiling build and its memory use (runner.MemoryUsage)."""

    elf: str
    profile_elf: str
    memory: dict[str, Any]


@dataclass(frozen=True)
class VerifyResult(StageResult):
    """The C outputs on the emulator against the reference on held-out images; int8 runs add the
    output steps (LSB) against the PyTorch int8 network and the integer reference."""

    OPTIONAL: ClassVar[tuple[str, ...]] = ("precision", "max_lsb_diff_pytorch", "max_lsb_diff_reference",
                                           "int8_tolerance", "output_scale", "output_zero_point")

    images: int
    source: str
    classes_agree: int
    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    logit_tolerance: float
    emulated_accuracy: float
    reference_accuracy: float
    instructions_min: int
    instructions_max: int
    passed: bool
    precision: str | None = None
    max_lsb_diff_pytorch: int | None = None
    max_lsb_diff_reference: int | None = None
    int8_tolerance: int | None = None
    output_scale: float | None = None
    output_zero_point: int | None = None
