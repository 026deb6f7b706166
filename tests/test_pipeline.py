"""The end-to-end job on a reduced setting: every artifact, C on QEMU vs PyTorch on held-out images,
the report's content, resuming, and the report pieces on their own."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tvmnas.errors import TvmnasError, VerificationError
from tvmnas.pipeline import BUNDLE_DIR, STAGES, PipelineSettings, run_pipeline
from tvmnas.report import Heading, Image, Items, Paragraph, Table, plot_architecture, render_html, render_markdown
from tvmnas.search.genotype import CellEdge, CellGenotype, Genotype
from tvmnas.stage_results import BuildResult, TrainResult

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LOGIT_ATOL = 1e-3

# Seconds, not minutes: two small chain layers, one search epoch, two training epochs, 400 images.
REDUCED = PipelineSettings(
    limit_train=400, search_epochs=1, train_epochs=2, chain_layers=((8, 1), (8, 2)), verify_images=48,
    cost_model="mac",
)


def _require_tools() -> None:
    missing = [t for t in ("arm-none-eabi-gcc", "qemu-system-arm") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: run scripts/setup.sh or "
                    "'apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm'")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One reduced end-to-end run shared by the tests below."""
    _require_tools()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("pipeline") / "demo"
    result = run_pipeline(out, REDUCED)
    return out, result.summary


@pytest.mark.slow
@pytest.mark.ci
def test_every_artifact_is_written(demo: tuple[Path, dict]) -> None:
    out, _ = demo
    for name in ("report.md", "report.html", "summary.json", "model.pt2", "model.onnx", "genotype.json",
                 "metrics.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in ("model.h", "model.c", "model_weights.c", "model_weights.h", "Makefile", "manifest.json",
                 "examples/classify.c"):
        assert (out / BUNDLE_DIR / name).is_file(), name
    for name in ("cycles_per_layer.png", "memory.png", "architecture.png"):
        assert (out / "plots" / name).read_bytes()[:8] == PNG_MAGIC, name
    assert not (out / "plots" / "pareto.png").exists()  # not a sweep
    manifest = json.loads((out / BUNDLE_DIR / "manifest.json").read_text())
    assert manifest["target"] == "cortex-m4" and manifest["kernels"]
    genotype = Genotype.load(out / "genotype.json")
    assert genotype.space == "chain" and len(genotype.layers) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"precision", "settings", "dataset", "input_shape", "target", "cost_model",
                            "cost_model_note", "search", "train", "compile", "build", "verify", "profile",
                            "test_accuracy"}
    assert set(summary["search"]) == {"genotype_path", "genotype", "cost_unit", "cost", "violations",
                                      "search_val_accuracy", "cost_weight"}
    assert (set(summary["train"]), set(summary["compile"]), set(summary["build"])) == (
        {"model_dir", "metrics"}, {"bundle", "manifest"}, {"elf", "profile_elf", "memory"})
    assert set(summary["verify"]) == {"images", "source", "classes_agree", "max_abs_logit_diff", "mean_abs_logit_diff",
                                      "logit_tolerance", "emulated_accuracy", "reference_accuracy", "instructions_min",
                                      "instructions_max", "passed"}


@pytest.mark.slow
@pytest.mark.ci
def test_c_on_qemu_matches_pytorch_on_held_out_images(demo: tuple[Path, dict]) -> None:
    """Run the built ELF again on held-out test images and compare with the exported PyTorch model."""
    from tvmnas.data import load_dataset
    from tvmnas.measure.runner import run
    from tvmnas.targets import load_target

    out, summary = demo
    data = load_dataset("digits")
    images = data.test_x[-40:]  # the test split: never seen by search or training
    result = run(out / "work" / "build" / "model.elf", load_target("cortex-m4"), [x[None] for x in images])
    emulated = np.stack(result.outputs)
    module = torch.export.load(out / "model.pt2").module()
    with torch.no_grad():
        reference = np.concatenate([module(torch.from_numpy(x[None])).numpy() for x in images])
    assert emulated.shape == reference.shape == (40, 10)
    np.testing.assert_array_equal(emulated.argmax(1), reference.argmax(1))
    np.testing.assert_allclose(emulated, reference, atol=LOGIT_ATOL, rtol=0)
    assert all(n > 1000 for n in result.instructions)
    verify = summary["verify"]
    assert verify["passed"] and verify["classes_agree"] == verify["images"] == 48
    assert verify["max_abs_logit_diff"] <= LOGIT_ATOL


@pytest.mark.slow
@pytest.mark.ci
def test_report_states_figures_and_labels_estimates(demo: tuple[Path, dict]) -> None:
    out, summary = demo
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    prof, target = summary["profile"], summary["target"]
    assert f"{prof['instructions']:,}" in md and f"~{prof['cycles']:,} (estimate)" in md
    assert f"{summary['train']['metrics']['test_accuracy']:.2%}" in md
    assert "latency at the board's clock" in md and "ms (estimate)" in md
    assert f"of {target['flash_bytes'] / 1024:,.0f} KiB" in md and f"of {target['sram_bytes'] / 1024:,.0f} KiB" in md
    assert "MAC count" in md  # which cost model the search used
    for png in ("plots/cycles_per_layer.png", "plots/memory.png", "plots/architecture.png"):
        assert f"]({png})" in md and f'src="{png}"' in html
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    # one table row per kernel call, with exact instructions
    for k in prof["kernels"]:
        assert f"| {k['instructions']:,} | {k['cycles']:,} |" in md


@pytest.mark.slow
@pytest.mark.ci
def test_bundle_builds_with_its_own_makefile(demo: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = demo
    bundle = tmp_path / "bundle"
    shutil.copytree(out / BUNDLE_DIR, bundle)
    # as the README says (make's built-in CC=cc would win over the Makefile's `CC ?=`)
    proc = subprocess.run(["make", "-C", str(bundle), "CC=arm-none-eabi-gcc", "AR=arm-none-eabi-ar"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (bundle / "libmodel.a").is_file()
    makefile = (bundle / "Makefile").read_text().splitlines()
    flags = next(line.split("=", 1)[1].split() for line in makefile if line.startswith("CFLAGS ?="))
    proc = subprocess.run(["arm-none-eabi-gcc", *flags, f"-I{bundle}", "-c", str(bundle / "examples" / "classify.c"),
                           "-o", str(tmp_path / "classify.o")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
@pytest.mark.ci
def test_rerun_skips_finished_stages_and_other_settings_are_refused(demo: tuple[Path, dict]) -> None:
    out, summary = demo
    again = run_pipeline(out, REDUCED)
    assert {s: again.stage_seconds[s] for s in STAGES[:-1]} == {s: 0.0 for s in STAGES[:-1]}
    assert again.summary["profile"] == summary["profile"]
    assert again.summary["verify"] == summary["verify"]
    (out / "work" / "stages" / "verify.json").unlink()  # redo verification: profiling follows it
    redo = run_pipeline(out, REDUCED)
    ran = {s for s in STAGES if redo.stage_seconds[s] > 0}
    assert ran == {"verify", "profile", "report"}
    assert redo.summary["verify"] == summary["verify"]
    with pytest.raises(TvmnasError, match="other settings"):
        run_pipeline(out, replace(REDUCED, train_epochs=3))
    # same settings, but the search would price architectures with another cost model (e.g. refitted)
    import tvmnas.pipeline as pipeline

    real = pipeline.search_cost_model
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "search_cost_model",
                   lambda name, target, **options: (real(name, target, **options)[0], "another cost model"))
        with pytest.raises(TvmnasError, match="other settings"):
            run_pipeline(out, REDUCED)


@pytest.mark.slow
@pytest.mark.ci
def test_a_rerun_trusts_files_not_records(demo: tuple[Path, dict]) -> None:
    """A deleted bundle file reruns compile and every stage after it; a truncated record reruns its stage."""
    out, summary = demo
    (out / BUNDLE_DIR / "model.c").unlink()
    again = run_pipeline(out, REDUCED)
    assert {s for s in STAGES if again.stage_seconds[s] > 0} == {"compile", "build", "verify", "profile", "report"}
    assert (out / BUNDLE_DIR / "model.c").is_file() and again.summary["verify"]["passed"]
    assert again.summary["profile"] == summary["profile"]
    record = out / "work" / "stages" / "profile.json"
    record.write_text(record.read_text()[:40])
    redo = run_pipeline(out, REDUCED)
    assert {s for s in STAGES if redo.stage_seconds[s] > 0} == {"profile", "report"}
    assert redo.summary["profile"] == summary["profile"]


@pytest.mark.slow
@pytest.mark.ci
def test_disagreement_with_pytorch_fails_with_one_line(demo: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    import tvmnas.pipeline as pipeline
    from tvmnas.data import load_dataset
    from tvmnas.targets import load_target

    out, summary = demo
    real = pipeline._reference_logits

    def shifted(model_dir: Path, images: np.ndarray) -> np.ndarray:
        logits = real(model_dir, images)
        logits[0, (logits[0].argmax() + 1) % logits.shape[1]] += 100.0
        return logits

    monkeypatch.setattr(pipeline, "_reference_logits", shifted)
    with pytest.raises(VerificationError, match=r"disagrees with PyTorch on 1 of 48 images") as err:
        pipeline._stage_verify(REDUCED, load_dataset("digits"), load_target("cortex-m4"),
                               TrainResult.from_json(summary["train"]), BuildResult.from_json(summary["build"]),
                               out / "work", pipeline.StageLog(False))
    assert "\n" not in str(err.value)


@pytest.mark.slow
@pytest.mark.ci
def test_sweep_report_has_the_pareto_plot(demo: tuple[Path, dict], tmp_path: Path) -> None:
    """The sweep part of the report, from the reduced run's figures plus two made-up sweep points."""
    from tvmnas.report import write_report

    out, summary = demo
    point = {"cost_weight": 0.0, "test_accuracy": 0.9, "cycles": 2e6, "cycles_source": "estimate, emulated",
             "instructions": 1_000_000, "macs": 100_000, "param_bytes": 10_000, "flash_bytes": 40_000,
             "arena_bytes": 10_000, "budget_ok": True, "run_dir": "x"}
    swept = dict(summary, search=dict(summary["search"], points=[point, dict(point, cost_weight=2.0, cycles=1e6,
                                                                             test_accuracy=0.88)],
                                      front=[1, 0], chosen=1))
    files = write_report(tmp_path, swept, Genotype.load(out / "genotype.json"))
    assert files["pareto"].read_bytes()[:8] == PNG_MAGIC
    md = files["md"].read_text()
    assert "## Lambda sweep" in md and "](plots/pareto.png)" in md
    assert "| 2 | 88.00% | 1,000,000 |" in md and "chosen, on the front" in md


def test_markdown_and_html_render_the_same_blocks() -> None:
    blocks = [Heading("Result"), Paragraph("cycles are an **estimate** of `model_run`"),
              Table(("a", "b"), (("1", "<2>"),)), Image("plots/x.png", "caption"), Items(("one", "two"))]
    md = render_markdown("T", blocks)
    html = render_html("T", blocks)
    assert md.startswith("# T\n") and "## Result" in md and "| 1 | <2> |" in md and "- two" in md
    assert "<strong>estimate</strong>" in html and "<code>model_run</code>" in html
    assert "<td>&lt;2&gt;</td>" in html and '<img src="plots/x.png"' in html and "<li>two</li>" in html


def test_darts_architecture_is_drawn(tmp_path: Path) -> None:
    cell = CellGenotype(edges=(CellEdge("sep_conv_3x3", 0), CellEdge("skip_connect", 1),
                               CellEdge("max_pool_3x3", 0), CellEdge("sep_conv_3x3", 2)), concat=(2, 3))
    genotype = Genotype(space="darts", input_shape=(1, 8, 8), num_classes=10, channels=8, cells=3,
                        reduction_cells=(1,), normal=cell, reduce=cell)
    plot_architecture(genotype, tmp_path / "arch.png")
    assert (tmp_path / "arch.png").read_bytes()[:8] == PNG_MAGIC


def test_bad_settings_fail_with_one_line() -> None:
    with pytest.raises(TvmnasError, match="unknown search space 'grid'"):
        PipelineSettings(space="grid")
    with pytest.raises(TvmnasError, match="unknown cost model 'fast'"):
        PipelineSettings(cost_model="fast")
    with pytest.raises(TvmnasError, match="lambda"):
        PipelineSettings(sweep=(0.5, -1.0))


def test_a_sweep_runs_its_arms_on_the_given_executor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_pipeline hands its executor to the sweep stage (the arms fan out on it)."""
    import tvmnas.pipeline as pipeline

    seen = []

    class Stop(Exception):
        pass

    def fake_sweep(settings, data, target, cost_model, work, progress, executor):
        seen.append(executor)
        raise Stop

    monkeypatch.setattr(pipeline, "_stage_sweep", fake_sweep)
    marker = object()
    with pytest.raises(Stop):
        run_pipeline(tmp_path / "sweep", replace(REDUCED, sweep=(0.0, 1.0)), executor=marker)
    assert seen == [marker]


def test_auto_cost_model_is_learned_where_shipped_else_macs() -> None:
    """'auto' takes the target's learned cost when one is shipped (frozen: plain values for the
    search's table), the MAC count otherwise, and says which in the report's sentence."""
    from tvmnas.pipeline import search_cost_model
    from tvmnas.search.layer_spec import LayerSpec
    from tvmnas.targets import list_targets, load_target

    spec = LayerSpec("mb_k3_e3", c_in=8, c_out=16, h=8, w=8, stride=2, kernel=3, expand=3)
    for target in list_targets():
        model, note = search_cost_model("auto", target)
        if model.name == "mac":
            assert note.startswith("MAC count")
        else:
            assert target.name in model.name and note.startswith("learned cost model")
        cycles = model.layer_cost(spec).cycles
        assert float(cycles) > 0 and not cycles.requires_grad
    model, note = search_cost_model("mac", load_target("cortex-m4"))
    assert model.name == "mac" and note.endswith("as requested")


def test_cli_lists_the_job_options() -> None:
    from tvmnas.cli import app

    result = CliRunner().invoke(app, ["run-all", "--help"])
    assert result.exit_code == 0
    for option in ("--dataset", "--target", "--space", "--cost-weight", "--sweep", "--search-epochs",
                   "--train-epochs", "--budget-cycles", "--out"):
        assert option in result.output


def test_script_reports_a_bad_target_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "search_and_compile.py"), "--out",
                           str(tmp_path / "o"), "--target", "cortex-z9", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown target 'cortex-z9'")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()
