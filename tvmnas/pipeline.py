"""The end-to-end job: search, retrain, [quantization-aware training to int8], compile to C, build
for the target, verify on its emulator against the trained PyTorch model, profile per layer, and
write the report.

Every stage writes its artifact and then a record (work/stages/<stage>.json) holding its result and
the sha256 of each file it wrote; a rerun into the same folder with the same settings skips a stage
only when its record is whole and its files are there unchanged (otherwise the stage and those after
it run again), and search and training resume from their last epoch checkpoint. One run at a time
holds the folder (a lock in it). Progress goes to stderr.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.markup import escape

from tvmnas.data.arrays import ArrayDataset
from tvmnas.errors import BudgetViolationError, TvmnasError, VerificationError
from tvmnas.output_dir import OutputFolderError, check_out_path, folder_lock, output_kind, write_marker
from tvmnas.search.cost import Budgets, CostModel, MacCostModel
from tvmnas.search.genotype import SPACES, Genotype
from tvmnas.search.search import SearchConfig
from tvmnas.stage_results import (
    BuildResult,
    CompileResult,
    QuantizeResult,
    SearchResult,
    StageResult,
    TrainResult,
    VerifyResult,
)
from tvmnas.targets import DEFAULT_TARGET, Target, load_target

STAGES = ("search", "train", "compile", "build", "verify", "profile", "report")
# int8: QAT fine-tuning and export before compiling; the float32 model compiled, built and profiled
# beside it for the report's side-by-side comparison.
INT8_STAGES = ("search", "train", "quantize", "compile", "build", "verify", "profile", "float32", "report")
PRECISIONS = ("float32", "int8")
BUNDLE_DIR = "c_bundle"
WORK_DIR = "work"
SETTINGS_FILE = "settings.json"
MODEL_FILES = ("model.pt2", "model.onnx", "genotype.json", "metrics.json")
INT8_FILES = ("model_int8.onnx", "metrics_int8.json")
PROFILE_DB = "profiles.sqlite"  # under work/: the measured cost model's layer measurements
COST_MODELS = ("auto", "mac", "measured")
FLOAT32_DIR = "float32"  # under work/: the float32 build compiled for comparison in an int8 run


# The settings added with int8, as a run recorded before them had them.
INT8_SETTING_DEFAULTS = {"precision": "float32", "qat_epochs": 4, "int8_tolerance": 1}


def stage_names(precision: str) -> tuple[str, ...]:
    """The stages of a run at `precision`, in order."""
    return INT8_STAGES if precision == "int8" else STAGES


@dataclass(frozen=True)
class PipelineSettings:
    """Every setting of one end-to-end run. The defaults finish on digits in minutes on 2 cores.

    sweep: lambdas to sweep (empty = one search with cost_weight); the deployed model is then the
    fastest Pareto point whose test accuracy is within sweep_accuracy_drop of the front's best.
    cost_model: 'auto' (learned surrogate for the target when one is available, else MACs), 'mac', or
    'measured' (every candidate layer measured on the emulator at its exact shape, in `precision`).
    verify_images: held-out test images run on the emulator and compared with PyTorch.
    logit_tolerance: largest allowed |C logit - PyTorch logit| in verification (float32).
    precision: 'float32', or 'int8': the retrained network is fine-tuned with quantization-aware
    training for qat_epochs epochs, compiled to integer-only C, verified against the integer reference
    and the int8 PyTorch network (within int8_tolerance output steps, same class), checked against
    the board's budgets as int8, and reported beside its float32 build.
    """

    dataset: str = "digits"
    data_root: Path | None = None
    limit_train: int | None = None
    target: str = DEFAULT_TARGET
    space: str = "chain"
    cost_weight: float = 0.5
    sweep: tuple[float, ...] = ()
    sweep_accuracy_drop: float = 0.01
    cost_model: str = "auto"
    search_epochs: int = 10
    train_epochs: int = 20
    batch_size: int = 64
    seed: int = 0
    board_budgets: bool = True
    budget_cycles: float | None = None
    chain_layers: tuple[tuple[int, int], ...] = SearchConfig.chain_layers
    channels: int = 8
    cells: int = 3
    verify_images: int = 256
    logit_tolerance: float = 1e-3
    ignore_budget: bool = False
    precision: str = "float32"
    qat_epochs: int = 4
    int8_tolerance: int = 1

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise TvmnasError(f"unknown search space '{self.space}' (expected one of {', '.join(SPACES)})")
        if self.cost_model not in COST_MODELS:
            raise TvmnasError(f"unknown cost model '{self.cost_model}' (expected one of {', '.join(COST_MODELS)})")
        if self.search_epochs < 1 or self.train_epochs < 1:
            raise TvmnasError("search and train epochs must be at least 1")
        if self.verify_images < 1:
            raise TvmnasError(f"verify_images must be at least 1, got {self.verify_images}")
        if self.cost_weight < 0 or any(lam < 0 for lam in self.sweep):
            raise TvmnasError("cost weights (lambda) must be >= 0")
        if self.precision not in PRECISIONS:
            raise TvmnasError(f"unknown precision '{self.precision}' (expected one of {', '.join(PRECISIONS)})")
        if self.qat_epochs < 0 or self.int8_tolerance < 0:
            raise TvmnasError(f"qat_epochs ({self.qat_epochs}) and int8_tolerance ({self.int8_tolerance}) must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (paths as text, tuples as lists), as recorded in work/settings.json."""
        return json.loads(json.dumps(asdict(self), default=str))


@dataclass
class PipelineResult:
    """Where the run wrote its outputs and the summary also saved as summary.json."""

    out_dir: Path
    summary: dict[str, Any]
    stage_seconds: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- progress


class StageLog:
    """Stage headers, timings and spinners on stderr (rich); silent when disabled."""

    def __init__(self, enabled: bool) -> None:
        from rich.console import Console

        self.enabled = enabled
        self.console = Console(stderr=True, quiet=not enabled)
        self.seconds: dict[str, float] = {}

    def header(self, index: int, name: str, what: str, total: int = len(STAGES)) -> None:
        """Announce stage `index` of the run's `total`."""
        self.console.rule(f"[bold]{index}/{total} {name}[/bold]: {escape(what)}", align="left")

    def skipped(self, name: str) -> None:
        """Say a stage's result was found in the output folder."""
        self.console.print(f"  [dim]{name}: already done (result in work/stages/{name}.json), skipped[/dim]")
        self.seconds[name] = 0.0

    def rerun(self, name: str, why: str) -> None:
        """Say a recorded stage runs again, and why."""
        self.console.print(f"  [yellow]{name}: {escape(why)}; running it again[/yellow]")

    def done(self, name: str, seconds: float, line: str) -> None:
        """Close a stage with its time and one line of result."""
        self.seconds[name] = seconds
        self.console.print(f"  [green]{name} done[/green] in {seconds:.1f} s: {escape(line)}")

    def status(self, text: str):  # noqa: ANN201 (rich Status context manager)
        """A spinner for steps without epochs."""
        return self.console.status(escape(text))


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename): a kill never leaves half a marker."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def _file_digests(paths: list[Path], root: Path) -> dict[str, str]:
    """sha256 of every file in `paths` (folders: every file below them), keyed by path relative to
    `root` where it lies inside it."""
    files = []
    for path in paths:
        path = Path(path)
        files.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    return {(str(f.relative_to(root)) if f.is_relative_to(root) else str(f)): _sha256(f) for f in files}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Stages:
    """Runs each stage once per output folder: its result and the digests of the files it wrote are
    stored in a record, and reused on rerun while those files are there unchanged."""

    def __init__(self, out: Path, log: StageLog, names: tuple[str, ...] = STAGES) -> None:
        self.root = Path(out)
        self.dir = self.root / WORK_DIR / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.names = names

    def run(self, name: str, what: str, fn: Callable[[], Any], line: Callable[[Any], str],
            outputs: Callable[[Any], list[Path]] = lambda result: [], kind: type[StageResult] | None = None) -> Any:
        """Return the stored result of `name`, or run `fn`, store its result, and return it.

        outputs(result): the files and folders the stage wrote, which later stages read. Running a
        stage drops the stored results of the stages after it, so they run again too.
        kind: the StageResult class `fn` returns (its record holds `to_json()`); None for a plain dict.
        """
        record = self.dir / f"{name}.json"
        self.log.header(self.names.index(name) + 1, name, what, len(self.names))
        stored = self._stored(name, record, kind)
        if stored is not None:
            self.log.skipped(name)
            return stored
        for later in self.names[self.names.index(name) + 1:]:  # their results were made from the old one
            (self.dir / f"{later}.json").unlink(missing_ok=True)
        start = time.monotonic()
        result = fn()
        recorded = result.to_json() if isinstance(result, StageResult) else result
        _write_json(record, {"result": recorded, "outputs": _file_digests(outputs(result), self.root)})
        self.log.done(name, time.monotonic() - start, line(result))
        return result

    def _stored(self, name: str, record: Path, kind: type[StageResult] | None = None) -> Any:
        """The stored result, or None (stage to run) when the record is missing, unreadable, of an
        older layout, or a file it lists is missing or changed."""
        if not record.is_file():
            return None
        try:
            stored = json.loads(record.read_text())
            result, digests = stored["result"], dict(stored["outputs"])
            if kind is not None:
                result = kind.from_json(result)
        except (OSError, ValueError, TypeError, KeyError) as err:
            self.log.rerun(name, f"its record {record.name} is unreadable or of an older tvmnas ({type(err).__name__})")
            return None
        for rel, digest in sorted(digests.items()):
            path = self.root / rel
            if not path.is_file():
                self.log.rerun(name, f"{rel} is missing")
                return None
            if _sha256(path) != digest:
                self.log.rerun(name, f"{rel} changed since the stage wrote it")
                return None
        return result


# ---------------------------------------------------------------------------------------------- cost model


def search_cost_model(name: str, target: Target, *, precision: str = "float32",
                      db_path: Path | None = None) -> tuple[CostModel, str]:
    """The cost model the search uses and a sentence for the report saying which one and why.

    'auto' prices what is deployed: for an int8 build with a profile database, the measured cost
    (float32 costs misrank int8 layers: depthwise and element-wise work costs several times a dense
    SIMD convolution per MAC); otherwise the learned, distilled cost for `target` when tvmnas.cost
    provides one, and the MAC count without one. 'mac' always takes the MAC count; 'measured'
    measures every candidate layer on the emulator in `precision` at the search's exact shapes,
    kept in the profile database `db_path` (tvmnas.cost.measured).
    """
    if name not in COST_MODELS:
        raise TvmnasError(f"unknown cost model '{name}' (expected one of {', '.join(COST_MODELS)})")
    mac = MacCostModel()
    mac_note = "MAC count (cycles proxy = multiply-accumulates; parameters and activations at 4 bytes each)"
    if name == "mac":
        return mac, mac_note + ", as requested"
    if name == "measured" or (precision == "int8" and db_path is not None):
        return _measured_cost_model(target, precision, db_path)
    learned = _learned_cost_model(target)
    if learned is None:
        return mac, mac_note + f": no learned cost model is available for {target.name}"
    model, note = learned
    return model, note


def _measured_cost_model(target: Target, precision: str, db_path: Path | None) -> tuple[CostModel, str]:
    """The per-layer cost measured on the emulator (tvmnas.cost.measured.MeasuredCostModel)."""
    from tvmnas.cost.measured import MeasuredCostModel

    if db_path is None:
        raise TvmnasError("the measured cost model needs a profile database path (none given)",
                          settings=("profile_db",))
    model = MeasuredCostModel(target, db_path, precision=precision)
    return model, (f"measured cost '{model.name}' ({model.unit}: every candidate layer compiled alone as its "
                   f"{precision} build at the search's exact shapes and run on the emulated {target.core}; "
                   f"profile database {db_path})")


def _learned_cost_model(target: Target) -> tuple[CostModel, str] | None:
    """The distilled differentiable cost shipped for `target` (tvmnas.cost), or None without one."""
    try:
        from tvmnas.cost.distill import DistilledCostModel
        from tvmnas.errors import CostModelError
    except ImportError:
        return None
    try:
        model = DistilledCostModel.shipped(target.name)
    except CostModelError as err:
        return MacCostModel(), f"MAC count (the learned cost model is not available: {err})"
    # The search prices every candidate once and keeps the table across steps; the learned model is
    # not trained here, so its parameters are frozen and the table holds plain values.
    model.mlp.requires_grad_(False)
    return model, (f"learned cost model '{model.name}' (file digest {model.digest}; {model.unit}: an MLP distilled "
                   f"from an XGBoost surrogate of kernels profiled on the emulated {target.core}"
                   + (f", cycles calibrated from {target.calibrated_from}" if target.calibrated_from else "") + ")")


# ---------------------------------------------------------------------------------------------- stages


def _search_config(settings: PipelineSettings, target: Target, cost_weight: float) -> SearchConfig:
    budgets = Budgets(
        settings.budget_cycles,
        target.flash_bytes if settings.board_budgets else None,
        target.sram_bytes if settings.board_budgets else None,
    )
    try:
        return SearchConfig(
            space=settings.space, target=target.name, epochs=settings.search_epochs, batch_size=settings.batch_size,
            seed=settings.seed, cost_weight=cost_weight, budgets=budgets, chain_layers=settings.chain_layers,
            channels=settings.channels, cells=settings.cells,
        )
    except ValueError as err:
        raise TvmnasError(f"bad search setting: {err}") from err


def _train_config(settings: PipelineSettings):  # noqa: ANN202 (TrainConfig, imported lazily)
    from tvmnas.train import TrainConfig

    return TrainConfig(epochs=settings.train_epochs, batch_size=settings.batch_size, seed=settings.seed)


def _stage_search(settings: PipelineSettings, data: ArrayDataset, target: Target, cost_model: CostModel,
                  work: Path, progress: bool) -> SearchResult:
    from tvmnas.search.search import search

    config = _search_config(settings, target, settings.cost_weight)
    found = search(data, work / "search", config, cost_model=cost_model, progress=progress)
    return SearchResult(
        genotype_path=str(work / "search" / "genotype.json"), genotype=str(found.genotype),
        cost_unit=found.cost_unit, cost=asdict(found.cost), violations=found.violations,
        search_val_accuracy=found.val_accuracy, cost_weight=settings.cost_weight,
    )


def _stage_sweep(settings: PipelineSettings, data: ArrayDataset, target: Target, cost_model: CostModel,
                 work: Path, progress: bool, executor: Any = None) -> SearchResult:
    from tvmnas.search.sweep import pareto_front, sweep

    config = _search_config(settings, target, settings.cost_weight)
    points = sweep(data, work / "sweep", list(settings.sweep), config, _train_config(settings),
                   cost_model=cost_model, measure=True, progress=progress, executor=executor)
    front = pareto_front(points)
    if not front:
        raise BudgetViolationError([f"every lambda in {list(settings.sweep)} gave an architecture over budget"])
    best = max(points[i].test_accuracy for i in front)
    good = [i for i in front if points[i].test_accuracy >= best - settings.sweep_accuracy_drop]
    chosen = min(good, key=lambda i: points[i].cycles)
    run_dir = Path(points[chosen].run_dir)
    found = json.loads((run_dir / "search" / "search.json").read_text())
    return SearchResult(
        genotype_path=str(run_dir / "train" / "genotype.json"), genotype=found["genotype"],
        cost_unit=found["cost_unit"], cost=found["cost"], violations=found["violations"],
        search_val_accuracy=found["search_val_accuracy"], cost_weight=points[chosen].cost_weight,
        model_dir=str(run_dir / "train"), points=[asdict(p) for p in points], front=front, chosen=chosen,
    )


def _stage_train(settings: PipelineSettings, data: ArrayDataset, found: SearchResult, work: Path,
                 progress: bool) -> TrainResult:
    if found.model_dir is not None:  # the sweep trained every point already
        model_dir = Path(found.model_dir)
    else:
        from tvmnas.train import train

        model_dir = work / "train"
        train(Genotype.load(Path(found.genotype_path)), data, model_dir, _train_config(settings),
              progress=progress)
    metrics = json.loads((model_dir / "metrics.json").read_text())
    return TrainResult(str(model_dir), metrics)


def _float_model(model_dir: Path) -> Any:
    """The retrained float network, a torch module (its genotype's model with the final training
    checkpoint's weights)."""
    import torch

    from tvmnas.models import build_model
    from tvmnas.train import CHECKPOINT_NAME

    model = build_model(Genotype.load(model_dir / "genotype.json"))
    model.load_state_dict(torch.load(model_dir / CHECKPOINT_NAME, map_location="cpu", weights_only=False)["model"])
    return model.eval()


def _stage_quantize(settings: PipelineSettings, data: ArrayDataset, trained: TrainResult, work: Path,
                    progress: bool) -> QuantizeResult:
    from tvmnas.training.qat import QATConfig, quantization_aware_train

    config = QATConfig(epochs=settings.qat_epochs, batch_size=settings.batch_size, seed=settings.seed)
    result = quantization_aware_train(_float_model(Path(trained.model_dir)), data, work / "qat", config,
                                      float_accuracy=trained.metrics["test_accuracy"], progress=progress)
    return QuantizeResult(str(work / "qat"), str(work / "qat" / "model_int8.onnx"), result.metrics)


def _stage_compile(settings: PipelineSettings, target: Target, trained: TrainResult, out: Path,
                   log: StageLog, quantized: QuantizeResult | None = None, bundle: Path | None = None,
                   ignore_budget: bool | None = None) -> CompileResult:
    """Compile the float model, or with `quantized` the int8 QDQ model (integer-only C, budgets checked
    against the int8 build)."""
    from tvmnas.compiler import compile_model

    model = Path(quantized.model) if quantized else Path(trained.model_dir) / "model.onnx"
    with log.status(f"compiling {model.name} to C for {target.name} (TVM)"):
        compiled = compile_model(model, target, bundle or out / BUNDLE_DIR,
                                 ignore_budget=settings.ignore_budget if ignore_budget is None else ignore_budget)
    return CompileResult(str(compiled.out_dir), compiled.manifest)


def _stage_build(target: Target, bundle: Path, work: Path, log: StageLog) -> BuildResult:
    from tvmnas.measure.runner import build, memory_usage

    with log.status(f"building the bundle for {target.emulator_machine} with arm-none-eabi-gcc"):
        elf = build(bundle, target, work / "build")
        profile_elf = build(bundle, target, work / "build_profile", profile=True)
    usage = memory_usage(elf, target)
    return BuildResult(str(elf), str(profile_elf), asdict(usage))


def _reference_logits(model_dir: Path, images: np.ndarray) -> np.ndarray:
    """Logits of the trained PyTorch model (the exported .pt2 program) for each image, one at a time."""
    import torch

    module = torch.export.load(model_dir / "model.pt2").module()
    with torch.no_grad():
        return np.stack([module(torch.from_numpy(x[None])).numpy()[0] for x in images]).astype(np.float32)


def _bundle_inputs(images: np.ndarray, manifest: dict[str, Any]) -> list[np.ndarray]:
    """The arrays the harness takes for each image: float32, or an int8 bundle's quantized values."""
    from tvmnas.quantized import bundle_input

    return [bundle_input(x[None], manifest, raw=False) for x in images]


def _stage_verify_int8(settings: PipelineSettings, data: ArrayDataset, target: Target, trained: TrainResult,
                       quantized: QuantizeResult, compiled: CompileResult, built: BuildResult, work: Path,
                       log: StageLog) -> VerifyResult:
    """int8: the C output against the integer reference of the exported QDQ model and against the
    int8 PyTorch network (evaluation mode), in output steps (LSB), and the classes."""
    import torch

    from tvmnas.quant.reference import ReferenceModel, dequantize
    from tvmnas.measure.runner import run
    from tvmnas.training.qat import load_qat

    n = min(settings.verify_images, len(data.test_x))
    images, labels = data.test_x[:n], data.test_y[:n]
    manifest = compiled.manifest
    inputs = _bundle_inputs(images, manifest)
    with log.status(f"running {n} held-out test images on QEMU {target.emulator_machine}, in the integer "
                    "reference and in PyTorch"):
        result = run(Path(built.elf), target, inputs, timeout_s=60 + 2 * n)
        reference = ReferenceModel(quantized.model)
        ref_q = np.stack([reference.run_int8(x.astype(np.int8))[0].reshape(-1) for x in inputs]).astype(np.int64)
        net = load_qat(_float_model(Path(trained.model_dir)), data.input_shape, Path(quantized.model_dir))
        with torch.no_grad():
            logits = net(torch.from_numpy(images)).numpy()
    out = net.output_qtensor()
    torch_q = np.rint(logits / out.scale).astype(np.int64) + out.zero_point
    emulated_q = np.stack(result.outputs).reshape(torch_q.shape).astype(np.int64)
    emulated = dequantize(emulated_q, out)
    np.save(work / "verify_emulated_logits.npy", emulated)
    np.save(work / "verify_reference_logits.npy", logits)
    same_class = emulated_q.argmax(1) == torch_q.argmax(1)
    lsb_torch = int(np.abs(emulated_q - torch_q).max())
    lsb_ref = int(np.abs(emulated_q - ref_q).max())
    verdict = VerifyResult(
        images=n, source=f"first {n} images of the {data.name} test split (never used by search or training)",
        precision="int8", classes_agree=int(same_class.sum()),
        max_lsb_diff_pytorch=lsb_torch, max_lsb_diff_reference=lsb_ref, int8_tolerance=settings.int8_tolerance,
        output_scale=float(out.scale), output_zero_point=out.zero_point,
        max_abs_logit_diff=float(np.abs(emulated - logits).max()),
        mean_abs_logit_diff=float(np.abs(emulated - logits).mean()),
        logit_tolerance=settings.int8_tolerance * float(out.scale),
        emulated_accuracy=float((emulated_q.argmax(1) == labels).mean()),
        reference_accuracy=float((torch_q.argmax(1) == labels).mean()),
        instructions_min=int(min(result.instructions)), instructions_max=int(max(result.instructions)),
        passed=bool(same_class.all() and max(lsb_torch, lsb_ref) <= settings.int8_tolerance),
    )
    if not verdict.passed:
        raise VerificationError(
            f"int8 C on {target.emulator_machine} disagrees on {n - verdict.classes_agree} of {n} images, "
            f"max output diff {lsb_torch} steps vs the PyTorch int8 network and {lsb_ref} vs the integer reference; "
            f"tolerance {settings.int8_tolerance}")
    return verdict


def _stage_verify(settings: PipelineSettings, data: ArrayDataset, target: Target, trained: TrainResult,
                  built: BuildResult, work: Path, log: StageLog) -> VerifyResult:
    from tvmnas.measure.runner import run

    n = min(settings.verify_images, len(data.test_x))
    images, labels = data.test_x[:n], data.test_y[:n]
    with log.status(f"running {n} held-out test images on QEMU {target.emulator_machine} and in PyTorch"):
        result = run(Path(built.elf), target, [x[None] for x in images], timeout_s=60 + 2 * n)
        reference = _reference_logits(Path(trained.model_dir), images)
    emulated = np.stack(result.outputs).reshape(reference.shape)
    np.save(work / "verify_emulated_logits.npy", emulated)
    np.save(work / "verify_reference_logits.npy", reference)
    diff = np.abs(emulated - reference)
    same_class = emulated.argmax(1) == reference.argmax(1)
    verdict = VerifyResult(
        images=n, source=f"first {n} images of the {data.name} test split (never used by search or training)",
        classes_agree=int(same_class.sum()), max_abs_logit_diff=float(diff.max()),
        mean_abs_logit_diff=float(diff.mean()), logit_tolerance=settings.logit_tolerance,
        emulated_accuracy=float((emulated.argmax(1) == labels).mean()),
        reference_accuracy=float((reference.argmax(1) == labels).mean()),
        instructions_min=int(min(result.instructions)), instructions_max=int(max(result.instructions)),
        passed=bool(same_class.all() and diff.max() <= settings.logit_tolerance),
    )
    if not verdict.passed:
        raise VerificationError(
            f"C on {target.emulator_machine} disagrees with PyTorch on {n - verdict.classes_agree} of {n} "
            f"images, max |logit diff| {verdict.max_abs_logit_diff:.3g} vs tolerance {settings.logit_tolerance:g}"
        )
    return verdict


def _stage_profile(data: ArrayDataset, target: Target, compiled: CompileResult, built: BuildResult,
                   log: StageLog) -> dict[str, Any]:
    from tvmnas.measure.profile import profile_elf

    with log.status(f"profiling one inference per kernel on {target.emulator_machine}"):
        profile = profile_elf(Path(built.profile_elf), target, _bundle_inputs(data.test_x[:1], compiled.manifest))
    figures = profile.to_json()
    figures["preamble_cycles"] = profile.preamble_cycles
    figures["latency_s"] = profile.cycles / target.clock_hz
    return figures


def _stage_float32(settings: PipelineSettings, data: ArrayDataset, target: Target, trained: TrainResult,
                   work: Path, log: StageLog) -> dict[str, Any]:
    """The float32 model compiled, built and profiled the same way, for the int8 run's side-by-side
    (not deployed: the board's budgets are not enforced on it)."""
    folder = work / FLOAT32_DIR
    compiled = _stage_compile(settings, target, trained, folder, log, bundle=folder / BUNDLE_DIR, ignore_budget=True)
    built = _stage_build(target, Path(compiled.bundle), folder, log)
    profile = _stage_profile(data, target, compiled, built, log)
    return {"bundle": compiled.bundle, "manifest": compiled.manifest, "memory": built.memory,
            "elf": built.elf, "profile_elf": built.profile_elf, "instructions": profile["instructions"],
            "cycles": profile["cycles"], "test_accuracy": trained.metrics["test_accuracy"]}


# ---------------------------------------------------------------------------------------------- the job


def _check_settings(work: Path, settings: PipelineSettings, restart: bool, cost_note: str) -> None:
    """Refuse to mix two runs' artifacts: a folder holds one settings.json, or is cleared by restart.
    The cost model the search used is part of the settings (a refitted model names another file digest)."""
    recorded = work / SETTINGS_FILE
    wanted = {**settings.to_dict(), "search_cost_model": cost_note}
    if recorded.is_file():
        if not restart:
            try:
                old = json.loads(recorded.read_text())
            except (OSError, ValueError) as err:
                raise TvmnasError(f"'{work.parent}' holds a run whose {WORK_DIR}/{SETTINGS_FILE} is unreadable "
                                  f"({type(err).__name__}): use another output folder, or restart to redo it",
                                  settings=("out_dir", "restart")) from err
            if isinstance(old, dict):  # a run recorded before the int8 settings existed was float32
                old = {**{k: v for k, v in INT8_SETTING_DEFAULTS.items() if k not in old}, **old}
            changed = settings_changes(old, wanted)
            if changed:
                raise TvmnasError(f"'{work.parent}' holds a run with other settings ({changed}): use another "
                                  f"output folder, or restart to redo it", settings=("out_dir", "restart"))
        else:
            shutil.rmtree(work)
    elif work.exists() and restart:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    _write_json(recorded, wanted)


def settings_changes(old: Any, new: dict[str, Any], shown: int = 3) -> str:
    """'train_epochs 2 -> 3, seed 0 -> 1': the settings that differ, first `shown` of them."""
    if not isinstance(old, dict):
        return "the recorded settings are not a JSON object"
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k, "unset") != new.get(k, "unset"))
    parts = [f"{k} {json.dumps(old.get(k, 'unset'))} -> {json.dumps(new.get(k, 'unset'))}" for k in keys[:shown]]
    if len(keys) > shown:
        parts.append(f"and {len(keys) - shown} more")
    return ", ".join(parts)


def check_run_folder(out: Path) -> Path:
    """Refuse an --out that is a file, holds files tvmnas did not write, or a folder that run-all did
    not make (before any work); a folder from an earlier run-all (marker, or a work/settings.json
    of a version before the marker) is resumed."""
    out = Path(out)
    if output_kind(out) is None and (out / WORK_DIR / SETTINGS_FILE).is_file():
        return out.resolve()
    return check_out_path(out, "run-all", replaced=False)


def _copy_model_files(model_dir: Path, out: Path, names: tuple[str, ...] = MODEL_FILES) -> None:
    for name in names:
        shutil.copyfile(model_dir / name, out / name)


def run_pipeline(
    out_dir: Path,
    settings: PipelineSettings = PipelineSettings(),
    *,
    dataset: ArrayDataset | None = None,
    restart: bool = False,
    progress: bool = False,
    executor: Any = None,
) -> PipelineResult:
    """Search, retrain, compile, build, verify on the emulator, profile and report into `out_dir`.

    out_dir gets report.md, report.html, plots/, summary.json, the C bundle (c_bundle/), model.pt2,
    model.onnx, genotype.json and metrics.json; intermediate files live in out_dir/work. At precision
    int8 the retrained model is fine-tuned with QAT and the bundle is int8 (out_dir also gets
    model_int8.onnx and metrics_int8.json), and the float32 build is profiled beside it. A rerun with
    the same settings resumes; other settings need `restart` (which clears work/ first).
    `dataset` replaces loading settings.dataset (its name must still describe it). `executor`
    (tvmnas.executor) runs the sweep's arms (default: one after another here).
    Raises VerificationError when the C output disagrees with PyTorch.
    """
    from tvmnas.data import load_dataset

    out = check_run_folder(Path(out_dir))
    target = load_target(settings.target)
    data = dataset if dataset is not None else load_dataset(
        settings.dataset, root=settings.data_root, limit_train=settings.limit_train)
    cost_model, cost_note = search_cost_model(settings.cost_model, target, precision=settings.precision,
                                              db_path=out / WORK_DIR / PROFILE_DB)
    try:  # only now, so bad settings leave no folder behind
        out.mkdir(parents=True, exist_ok=True)
        write_marker(out, "run-all")  # before the lock file, so a second run sees a run-all folder
    except OSError as err:
        raise OutputFolderError(f"output folder {out_dir}: cannot write it: {err.strerror or err}") from err
    with folder_lock(out, "run-all"):
        return _run_stages(out, settings, data, target, cost_model, cost_note, restart, progress, executor)


def _run_stages(out: Path, settings: PipelineSettings, data: ArrayDataset, target: Target, cost_model: CostModel,
                cost_note: str, restart: bool, progress: bool, executor: Any = None) -> PipelineResult:
    from tvmnas.report import write_report

    work = out / WORK_DIR
    _check_settings(work, settings, restart, cost_note)
    log = StageLog(progress)
    names = stage_names(settings.precision)
    int8 = settings.precision == "int8"
    stages = Stages(out, log, names)
    log.console.print(escape(f"tvmnas: {data.name} {data.input_shape} -> {settings.space} space -> "
                             f"{target.name} ({target.board_name}), {settings.precision}; cost model: {cost_note}"))

    if settings.sweep:
        found = stages.run("search", f"lambda sweep {list(settings.sweep)} (search + retrain + emulate each)",
                           lambda: _stage_sweep(settings, data, target, cost_model, work, progress, executor),
                           lambda r: f"chose lambda={r.cost_weight:g}: {r.genotype}",
                           lambda r: [Path(r.genotype_path), *(Path(r.model_dir) / n for n in MODEL_FILES)],
                           kind=SearchResult)
    else:
        found = stages.run("search", f"{settings.search_epochs} epochs, lambda={settings.cost_weight:g}",
                           lambda: _stage_search(settings, data, target, cost_model, work, progress),
                           lambda r: r.genotype, lambda r: [Path(r.genotype_path)], kind=SearchResult)
    trained = stages.run("train", ("the chosen point, retrained by the sweep" if settings.sweep else
                                   f"{settings.train_epochs} epochs from scratch, export .pt2 / .onnx"),
                         lambda: _stage_train(settings, data, found, work, progress),
                         lambda r: f"test accuracy {r.metrics['test_accuracy']:.4f}",
                         lambda r: [Path(r.model_dir) / n for n in MODEL_FILES], kind=TrainResult)
    quantized = None
    if int8:
        quantized = stages.run("quantize", f"quantization-aware training, {settings.qat_epochs} epochs from the "
                                           "float model's calibrated ranges; export int8 QDQ ONNX",
                               lambda: _stage_quantize(settings, data, trained, work, progress),
                               lambda r: (f"int8 test accuracy {r.metrics['test_accuracy']:.4f} (PTQ "
                                          f"{r.metrics['ptq_test_accuracy']:.4f}, float32 "
                                          f"{r.metrics['float_test_accuracy']:.4f})"),
                               lambda r: [Path(r.model_dir) / n for n in (*INT8_FILES, "model_int8.pt")],
                               kind=QuantizeResult)
    compiled = stages.run("compile", f"TVM -> standalone {settings.precision} C for {target.name}",
                          lambda: _stage_compile(settings, target, trained, out, log, quantized),
                          lambda r: f"arena {r.manifest['arena_bytes']:,} B, "
                                    f"flash {r.manifest['flash_bytes']:,} B",
                          lambda r: [Path(r.bundle)], kind=CompileResult)
    built = stages.run("build", f"arm-none-eabi-gcc for {target.emulator_machine}",
                       lambda: _stage_build(target, Path(compiled.bundle), work, log),
                       lambda r: f"{Path(r.elf).name}: flash {r.memory['flash_bytes']:,} B, "
                                 f"SRAM {r.memory['sram_bytes']:,} B",
                       lambda r: [Path(r.elf), Path(r.profile_elf)], kind=BuildResult)
    verify_files = lambda r: [work / "verify_emulated_logits.npy", work / "verify_reference_logits.npy"]  # noqa: E731
    if int8:
        verified = stages.run("verify", "int8 C on QEMU vs the integer reference and the int8 PyTorch network",
                              lambda: _stage_verify_int8(settings, data, target, trained, quantized, compiled, built,
                                                         work, log),
                              lambda r: (f"{r.classes_agree}/{r.images} classes agree, max output diff "
                                         f"{r.max_lsb_diff_pytorch} steps vs PyTorch, "
                                         f"{r.max_lsb_diff_reference} vs the integer reference"),
                              verify_files, kind=VerifyResult)
    else:
        verified = stages.run("verify", "C on QEMU vs PyTorch on held-out images",
                              lambda: _stage_verify(settings, data, target, trained, built, work, log),
                              lambda r: f"{r.classes_agree}/{r.images} classes agree, "
                                        f"max |logit diff| {r.max_abs_logit_diff:.2g}",
                              verify_files, kind=VerifyResult)
    profiled = stages.run("profile", "exact instructions and estimated cycles per kernel",
                          lambda: _stage_profile(data, target, compiled, built, log),
                          lambda r: f"{r['instructions']:,} instructions, ~{r['cycles']:,} cycles (estimate)")
    compared = None
    if int8:
        compared = stages.run("float32", "the float32 model compiled, built and profiled for comparison",
                              lambda: _stage_float32(settings, data, target, trained, work, log),
                              lambda r: (f"float32: ~{r['cycles']:,} cycles (estimate), flash "
                                         f"{r['memory']['flash_bytes']:,} B, SRAM {r['memory']['sram_bytes']:,} B"),
                              lambda r: [Path(r["bundle"]), Path(r["elf"]), Path(r["profile_elf"])])

    _copy_model_files(Path(trained.model_dir), out)
    if quantized is not None:
        _copy_model_files(Path(quantized.model_dir), out, INT8_FILES)
    summary = {
        "precision": settings.precision,
        "settings": settings.to_dict(), "dataset": data.name, "input_shape": list(data.input_shape),
        "target": asdict(target), "cost_model": cost_model.name, "cost_model_note": cost_note,
        "search": found.to_json(), "train": trained.to_json(), "compile": compiled.to_json(),
        "build": built.to_json(), "verify": verified.to_json(), "profile": profiled,
    }
    if int8:
        summary["quantize"] = quantized.to_json()
        summary["float32"] = compared
    summary["test_accuracy"] = quantized.metrics["test_accuracy"] if int8 else trained.metrics["test_accuracy"]
    log.header(len(names), "report", "report.md, report.html and plots", len(names))
    start = time.monotonic()
    write_report(out, summary, Genotype.load(out / "genotype.json"))
    _write_json(out / "summary.json", summary)
    log.done("report", time.monotonic() - start, f"{out / 'report.html'}")
    return PipelineResult(out, summary, dict(log.seconds))

