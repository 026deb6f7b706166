"""The end-to-end run's report: report.md and report.html from one list of blocks, plus PNG plots
(per-layer estimated cycles, flash and SRAM against the board's budget, the architecture drawn,
and the Pareto front of a lambda sweep). Every cycle figure is labelled as an estimate."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvmnas.search.genotype import Genotype

PLOTS_DIR = "plots"
KIB = 1024


# ---------------------------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class Heading:
    """A section title."""

    text: str


@dataclass(frozen=True)
class Paragraph:
    """Plain text; `code` spans are written `like this` and become <code> in HTML."""

    text: str


@dataclass(frozen=True)
class Table:
    """A header row and body rows of text cells."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Image:
    """A PNG beside the report (relative path) with its caption."""

    path: str
    caption: str


@dataclass(frozen=True)
class Items:
    """A bulleted list."""

    items: tuple[str, ...]


Block = Heading | Paragraph | Table | Image | Items


def render_markdown(title: str, blocks: list[Block]) -> str:
    """The blocks as GitHub-flavoured Markdown."""
    out = [f"# {title}", ""]
    for b in blocks:
        if isinstance(b, Heading):
            out += [f"## {b.text}", ""]
        elif isinstance(b, Paragraph):
            out += [b.text, ""]
        elif isinstance(b, Table):
            out.append("| " + " | ".join(b.header) + " |")
            out.append("|" + "|".join("---" for _ in b.header) + "|")
            out += ["| " + " | ".join(row) + " |" for row in b.rows]
            out.append("")
        elif isinstance(b, Image):
            out += [f"![{b.caption}]({b.path})", "", f"*{b.caption}*", ""]
        elif isinstance(b, Items):
            out += [f"- {item}" for item in b.items]
            out.append("")
    return "\n".join(out)


def _inline_html(text: str) -> str:
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f3f3f3; }
td:not(:first-child) { font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-style: italic; color: #555; }
code { background: #f5f5f5; padding: 0 0.2rem; }
"""


def render_html(title: str, blocks: list[Block]) -> str:
    """The blocks as one standalone HTML page (images referenced beside it)."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h2>{html.escape(b.text)}</h2>")
        elif isinstance(b, Paragraph):
            out.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Table):
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline_html(h)}</th>" for h in b.header)
                       + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in b.rows]
            out.append("</tbody></table>")
        elif isinstance(b, Image):
            out.append(f'<figure><img src="{html.escape(b.path)}" alt="{html.escape(b.caption)}">'
                       f"<figcaption>{_inline_html(b.caption)}</figcaption></figure>")
        elif isinstance(b, Items):
            out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------- plots


def _figure(width: float, height: float):  # noqa: ANN202 (matplotlib Figure)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def layer_label(kernel: dict[str, Any]) -> str:
    """'3 conv2d3_add2' from a manifest kernel entry: index and the fused op name."""
    name = kernel["name"].removeprefix("fused_")
    return f"{kernel['index']} {name if len(name) <= 28 else name[:27] + '…'}"


def plot_layer_cycles(manifest: dict[str, Any], profile: dict[str, Any], path: Path) -> None:
    """Horizontal bars: estimated cycles of each kernel call, in call order, with its share."""
    kernels = {k["index"]: k for k in manifest["kernels"]}
    rows = [(layer_label(kernels[k["index"]]) if k["index"] in kernels else str(k["index"]), k["cycles"])
            for k in profile["kernels"]]
    total = max(sum(c for _, c in rows), 1)
    fig = _figure(7.5, 1.2 + 0.32 * len(rows))
    ax = fig.add_subplot(1, 1, 1)
    y = list(range(len(rows)))
    ax.barh(y, [c for _, c in rows], color="tab:blue")
    ax.set_yticks(y, [label for label, _ in rows], fontsize=7)
    ax.invert_yaxis()
    for i, (_, c) in enumerate(rows):
        ax.annotate(f"{c:,} ({100 * c / total:.0f}%)", (c, i), xytext=(3, 0), textcoords="offset points",
                    va="center", fontsize=7)
    ax.set_xlim(0, max(c for _, c in rows) * 1.3 if rows else 1)
    ax.set_xlabel(f"cycles (estimate from the {profile['core']} timing table)")
    ax.set_title("Estimated cycles per layer (one inference)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def _memory_bar(ax: Any, parts: list[tuple[str, int, str]], budget: int, title: str) -> None:
    used = sum(n for _, n, _ in parts)
    left = 0
    for label, n, color in parts:
        ax.barh([0], [n], left=left, color=color, label=f"{label} {n / KIB:,.1f} KiB")
        left += n
    scale = max(used * 1.35, 1) if used < 0.25 * budget else budget * 1.08
    ax.set_xlim(0, scale)
    if budget <= scale:
        ax.axvline(budget, color="tab:red", linestyle="--", label=f"budget {budget / KIB:,.0f} KiB")
    ax.set_yticks([])
    ax.set_title(f"{title}: {used / KIB:,.1f} KiB of {budget / KIB:,.0f} KiB budget ({100 * used / budget:.1f}%)"
                 + ("" if budget <= scale else "  (budget off scale)"), fontsize=9)
    ax.set_xlabel("bytes")
    ax.legend(fontsize=7, loc="lower right")


def plot_memory(manifest: dict[str, Any], memory: dict[str, Any], target: dict[str, Any], path: Path) -> None:
    """Two stacked bars: flash (model code, weights, board support) and SRAM (arena, stack, other
    static data), each against the board's budget."""
    weights = int(manifest["weights_bytes"])
    model_code = max(int(manifest["flash_bytes"]) - weights, 0)
    support = max(int(memory["flash_bytes"]) - int(manifest["flash_bytes"]), 0)
    fig = _figure(7.5, 3.6)
    ax1 = fig.add_subplot(2, 1, 1)
    _memory_bar(ax1, [("weights", weights, "tab:orange"), ("model code", model_code, "tab:blue"),
                      ("harness + libc/libm", support, "tab:gray")], int(target["flash_bytes"]), "Flash")
    ax2 = fig.add_subplot(2, 1, 2)
    _memory_bar(ax2, [("arena", int(memory["arena_bytes"]), "tab:green"),
                      ("stack", int(memory["stack_bytes"]), "tab:purple"),
                      ("other static", int(memory["static_bytes"]), "tab:gray")], int(target["sram_bytes"]), "SRAM")
    fig.tight_layout()
    fig.savefig(path)


def _layout(graph: Any, genotype: Genotype) -> dict[str, tuple[float, float]]:
    """Positions: chain left to right; darts one row per cell kind, columns by topological depth."""
    import networkx as nx

    if genotype.space == "chain":
        order = list(nx.topological_sort(graph))
        return {n: (float(i), 0.0) for i, n in enumerate(order)}
    pos: dict[str, tuple[float, float]] = {}
    for row, kind in enumerate(("normal", "reduce")):
        sub = graph.subgraph([n for n in graph if n.startswith(kind + "/")])
        for depth, layer in enumerate(nx.topological_generations(sub)):
            for j, node in enumerate(sorted(layer)):
                stagger = 0.6 * (depth % 2)  # keeps edges that skip a column off the nodes between
                pos[node] = (float(depth), -row * 3.0 - j * 1.0 + (len(layer) - 1) / 2 + stagger)
    return pos


def _node_text(graph: Any, node: str, genotype: Genotype) -> str:
    if genotype.space == "chain":
        into = list(graph.in_edges(node, data=True))
        if not into:
            return f"input\n{'x'.join(str(v) for v in genotype.input_shape)}"
        d = into[0][2]
        op = "" if d["op"] == node else f"\n{d['op']}"
        return f"{node}{op}\n{d['out_channels']}ch s{d['stride']}"
    return node.split("/", 1)[1]


def plot_architecture(genotype: Genotype, path: Path) -> None:
    """The genotype's networkx graph drawn with its op names (chain: one box per layer; darts: the
    normal and reduction cells)."""
    graph = genotype.to_networkx()
    pos = _layout(graph, genotype)
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    width = 1.6 + 1.35 * (max(xs) - min(xs) + 1)
    height = 1.9 if genotype.space == "chain" else 1.0 + 0.8 * (max(ys) - min(ys) + 1)
    fig = _figure(min(width, 16), height)
    ax = fig.add_subplot(1, 1, 1)
    for a, b, d in graph.edges(data=True):
        ax.annotate("", xy=pos[b], xytext=pos[a],
                    arrowprops={"arrowstyle": "-|>", "color": "0.4", "shrinkA": 22, "shrinkB": 22,
                                "connectionstyle": "arc3,rad=0.08" if genotype.space == "darts" else "arc3"})
        if genotype.space == "darts":
            mx, my = (pos[a][0] + pos[b][0]) / 2, (pos[a][1] + pos[b][1]) / 2
            ax.text(mx, my, d["op"], fontsize=6, ha="center", va="center", color="tab:blue",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    for node, (x, y) in pos.items():
        ax.text(x, y, _node_text(graph, node, genotype), ha="center", va="center", fontsize=7,
                bbox={"boxstyle": "round,pad=0.35", "fc": "#e8f0fb", "ec": "tab:blue"})
    if genotype.space == "darts":
        for row, kind in enumerate(("normal cell", "reduction cell")):
            ax.text(min(xs) - 0.8, -row * 3.0, kind, rotation=90, va="center", ha="center", fontsize=8,
                    fontweight="bold")
    ax.set_xlim(min(xs) - 1.1, max(xs) + 0.6)
    ax.set_ylim(min(ys) - 0.9, max(ys) + 0.9)
    ax.axis("off")
    ax.set_title(str(genotype) if len(str(genotype)) < 110 else f"{genotype.space} genotype", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


# ---------------------------------------------------------------------------------------------- report


def cycles_basis(target: dict[str, Any]) -> str:
    """How a report's cycle figures were obtained: 'estimate', or 'calibrated from N kernels
    measured on BOARD' for a target calibrated from a board (tvmnas cost calibrate)."""
    note = target.get("calibrated_from") or ""
    return f"calibrated from {note}" if note else "estimate"


def _kib(n: int) -> str:
    return f"{n:,} B ({n / KIB:,.1f} KiB)"


def _pct(used: int, budget: int) -> str:
    return f"{100 * used / budget:.1f}%"


def _blocks(summary: dict[str, Any], plots: dict[str, str]) -> list[Block]:
    s, tgt, found = summary["settings"], summary["target"], summary["search"]
    metrics, manifest = summary["train"]["metrics"], summary["compile"]["manifest"]
    memory, verify, prof = summary["build"]["memory"], summary["verify"], summary["profile"]
    clock_mhz = tgt["clock_hz"] / 1e6
    latency_ms = prof["cycles"] / tgt["clock_hz"] * 1e3
    macs = int(metrics["macs"])
    sram_used = int(memory["sram_bytes"])
    flash_ok = memory["flash_bytes"] <= tgt["flash_bytes"]
    sram_ok = sram_used <= tgt["sram_bytes"]
    int8 = summary.get("precision") == "int8"
    blocks: list[Block] = [
        Paragraph(f"{summary['dataset']} {tuple(summary['input_shape'])} -> {s['space']} search space -> "
                  f"**{tgt['name']}** ({tgt['board_name']}, {clock_mhz:g} MHz), "
                  f"**{summary.get('precision', 'float32')}**. Searched architecture: `{found['genotype']}`."),
        Heading("Result"),
        Table(("figure", "value", "how it was obtained"), (
            _accuracy_row(summary),
            ("accuracy of the C code on QEMU", f"{verify['emulated_accuracy']:.2%}",
             f"{verify['images']} held-out test images"),
            _agreement_row(verify, int8),
            ("instructions per inference", f"{prof['instructions']:,}",
             f"exact, counted on QEMU {tgt['emulator_machine']} (-icount)"),
            ("cycles per inference", f"~{prof['cycles']:,} ({cycles_basis(tgt)})",
             f"{prof['core']} timing table applied to the executed instructions; not a board measurement"),
            ("latency at the board's clock", f"~{latency_ms:.2f} ms ({cycles_basis(tgt)})",
             f"estimated cycles / {clock_mhz:g} MHz"),
            ("multiply-accumulates", f"{macs:,}",
             f"exact count; ~{prof['cycles'] / max(macs, 1):.1f} estimated cycles per MAC"),
            ("parameters", f"{int(metrics['params']):,}", "after folding batch norm"),
            ("flash", f"{_kib(int(memory['flash_bytes']))}, {_pct(memory['flash_bytes'], tgt['flash_bytes'])} "
             f"of {tgt['flash_bytes'] / KIB:,.0f} KiB" + ("" if flash_ok else " **OVER BUDGET**"),
             f"whole test firmware (model {manifest['flash_bytes']:,} B incl. weights "
             f"{manifest['weights_bytes']:,} B), from the ELF"),
            ("SRAM", f"{_kib(sram_used)}, {_pct(sram_used, tgt['sram_bytes'])} of "
             f"{tgt['sram_bytes'] / KIB:,.0f} KiB" + ("" if sram_ok else " **OVER BUDGET**"),
             f"arena {memory['arena_bytes']:,} B + stack {memory['stack_bytes']:,} B + other static "
             f"{memory['static_bytes']:,} B, from the ELF"),
        )),
        Heading("Per-layer estimated cycles"),
        Image(plots["cycles"], "Estimated cycles per kernel call (estimate from a per-core timing table)"),
        Table(("kernel", "output shape", "instructions (exact)", "cycles (estimate)", "share"),
              tuple(_layer_rows(manifest, prof))),
        Heading("Memory against the board's budget"),
        Image(plots["memory"], f"Flash and SRAM of the test firmware against {tgt['board_name']}'s budget"),
        Paragraph(f"The arena (`MODEL_ARENA_SIZE` = {manifest['arena_bytes']:,} B) holds every intermediate "
                  f"tensor at a fixed offset; the planner's lower bound for this network is "
                  f"{manifest.get('arena_lower_bound_bytes', 0):,} B and laying the tensors end to end would "
                  f"take {manifest.get('arena_unshared_bytes', 0):,} B. Weights are `const` and stay in flash."),
        Heading("Architecture"),
        Image(plots["architecture"], f"The searched {s['space']} architecture (genotype.json)"),
        Paragraph(f"Search: {s['search_epochs']} epochs, lambda = {found['cost_weight']:g}, cost model: "
                  f"{summary['cost_model_note']}. The search's own cost figure for this architecture: "
                  f"{found['cost']['cycles']:,.0f} ({found['cost_unit']}). "
                  + ("Budget check passed." if not found["violations"]
                     else "Over the search budgets: " + "; ".join(found["violations"]) + ".")),
    ]
    if summary.get("float32"):
        blocks += _precision_blocks(summary)
    if "pareto" in plots:
        blocks += _sweep_blocks(found, plots["pareto"], float(s["sweep_accuracy_drop"]))
    blocks += [
        Heading("How the figures were obtained"),
        Items((
            "Instruction counts are exact: the generated C is built with arm-none-eabi-gcc "
            f"({' '.join(tgt['cflags'] + tgt['opt_flags'])}) and run on QEMU {tgt['emulator_machine']} with "
            "-icount; the counts cover `model_run` alone.",
            (f"Cycles: a timing table {cycles_basis(tgt)} (fitted per instruction class, flash reads "
             "included) applied to the executed instruction stream; kernels unlike the calibration set "
             "can still be off." if tgt.get("calibrated_from") else
             f"Cycles are an **estimate**: a per-core timing table ({prof['core']}) applied to the executed "
             "instruction stream. Flash wait states, caches, bus contention and FP result latencies are not "
             "modelled: expect tens of percent of error against a real board; use the figures to rank."),
            "Latency = estimated cycles / board clock, so it is an estimate too.",
            "Flash and SRAM are read from the linked ELF's sections and symbols (test firmware: model, harness, "
            "C library); the emulator itself does not enforce the board's budget.",
            (f"Accuracy is measured in PyTorch on the test split, the int8 network running the integer "
             f"arithmetic of the C code; the C output is checked on {verify['images']} held-out images against "
             f"that network and against the integer reference of `model_int8.onnx` ({verify['source']})."
             if int8 else
             f"Accuracy is measured in PyTorch on the test split; the C output is checked on "
             f"{verify['images']} held-out images against the exported PyTorch program ({verify['source']})."),
        )),
        Heading("Files"),
        Items((
            "`c_bundle/`: the C to drop into a firmware project (`model.h`, `model.c`, `model_weights.c/.h`, "
            "`Makefile` building `libmodel.a`, `examples/classify.c`, `manifest.json`)",
            "`model.pt2`, `model.onnx`: the trained float32 model; `genotype.json`: the architecture; "
            "`metrics.json`: training figures"
            + ("; `model_int8.onnx`: the int8 QDQ model compiled into `c_bundle/`; `metrics_int8.json`: "
               "its PTQ and QAT accuracies" if int8 else ""),
            "`summary.json`: every figure of this report, machine-readable; `work/`: intermediate files "
            "(checkpoints, logs, ELFs) that let a rerun resume",
        )),
    ]
    return blocks


def _accuracy_row(summary: dict[str, Any]) -> tuple[str, str, str]:
    s, metrics = summary["settings"], summary["train"]["metrics"]
    if summary.get("precision") != "int8":
        return ("test accuracy (PyTorch)", f"{metrics['test_accuracy']:.2%}",
                f"float32 model after {s['train_epochs']} epochs of retraining, whole {summary['dataset']} test split")
    q = summary["quantize"]["metrics"]
    return ("test accuracy (int8)", f"{q['test_accuracy']:.2%}",
            f"float32 model retrained {s['train_epochs']} epochs, then {q['qat_epochs']} epoch(s) of quantization-aware "
            f"training; the integer arithmetic the C code runs, whole {summary['dataset']} test split")


def _agreement_row(verify: dict[str, Any], int8: bool) -> tuple[str, str, str]:
    verdict = "passed" if verify["passed"] else "FAILED"
    if not int8:
        return ("C vs PyTorch agreement", f"{verify['classes_agree']}/{verify['images']} same class, "
                f"max abs logit diff {verify['max_abs_logit_diff']:.2g}",
                f"tolerance {verify['logit_tolerance']:g}; {verdict}")
    return ("int8 C vs PyTorch agreement", f"{verify['classes_agree']}/{verify['images']} same class, max output "
            f"diff {verify['max_lsb_diff_pytorch']} steps (LSB) vs the int8 PyTorch network, "
            f"{verify['max_lsb_diff_reference']} vs the integer reference",
            f"tolerance {verify['int8_tolerance']} steps of {verify['output_scale']:.3g}; {verdict}")


def _precision_blocks(summary: dict[str, Any]) -> list[Block]:
    """int8 and float32 builds of the same network side by side (same target, same measurement)."""
    f32, q = summary["float32"], summary["quantize"]["metrics"]
    i8_mem, f32_mem = summary["build"]["memory"], f32["memory"]
    i8_cycles, f32_cycles = summary["profile"]["cycles"], f32["cycles"]

    def ratio(f32_value: float, i8_value: float, less: str, more: str) -> str:
        if not f32_value or not i8_value:
            return "-"
        return f"{f32_value / i8_value:.2f}x {less}" if f32_value >= i8_value else f"{i8_value / f32_value:.2f}x {more}"

    rows = (
        ("test accuracy", f"{q['test_accuracy']:.2%} (PTQ alone: {q['ptq_test_accuracy']:.2%})",
         f"{f32['test_accuracy']:.2%}", f"{100 * (q['test_accuracy'] - f32['test_accuracy']):+.2f} points"),
        ("cycles per inference (estimate)", f"~{i8_cycles:,}", f"~{f32_cycles:,}", ratio(f32_cycles, i8_cycles, "fewer", "more")),
        ("flash, whole firmware", f"{i8_mem['flash_bytes']:,} B", f"{f32_mem['flash_bytes']:,} B",
         ratio(f32_mem["flash_bytes"], i8_mem["flash_bytes"], "smaller", "larger")),
        ("model flash (code + weights)", f"{summary['compile']['manifest']['flash_bytes']:,} B",
         f"{f32['manifest']['flash_bytes']:,} B",
         ratio(f32["manifest"]["flash_bytes"], summary["compile"]["manifest"]["flash_bytes"], "smaller", "larger")),
        ("SRAM", f"{i8_mem['sram_bytes']:,} B", f"{f32_mem['sram_bytes']:,} B",
         ratio(f32_mem["sram_bytes"], i8_mem["sram_bytes"], "smaller", "larger")),
        ("activation arena", f"{i8_mem['arena_bytes']:,} B", f"{f32_mem['arena_bytes']:,} B",
         ratio(f32_mem["arena_bytes"], i8_mem["arena_bytes"], "smaller", "larger")),
    )
    return [
        Heading("int8 and float32 side by side"),
        Table(("figure", "int8 (deployed)", "float32", "int8 vs float32"), rows),
        Paragraph("Same network, same target, same emulator and timing table; the float32 build is compiled "
                  "only for this comparison (the board's budgets are checked on the int8 build). Accuracies are "
                  "on the whole test split: int8 as the C code computes it (integer arithmetic), float32 in "
                  "PyTorch. Cycles are estimates."),
    ]


def _layer_rows(manifest: dict[str, Any], prof: dict[str, Any]) -> list[tuple[str, ...]]:
    kernels = {k["index"]: k for k in manifest["kernels"]}
    total = max(prof["cycles"], 1)
    rows = []
    for k in prof["kernels"]:
        entry = kernels.get(k["index"])
        shape = "x".join(str(v) for v in entry["output_shapes"][0]) if entry and entry["output_shapes"] else ""
        rows.append((layer_label(entry) if entry else str(k["index"]), shape, f"{k['instructions']:,}",
                     f"{k['cycles']:,}", f"{100 * k['cycles'] / total:.1f}%"))
    return rows


def _sweep_blocks(found: dict[str, Any], pareto_png: str, accuracy_drop: float) -> list[Block]:
    points, front, chosen = found["points"], set(found["front"]), found["chosen"]
    rows = tuple(
        (f"{p['cost_weight']:g}", f"{p['test_accuracy']:.2%}", f"{p['cycles']:,.0f}",
         f"{p['instructions']:,}" if p["instructions"] is not None else "-",
         f"{p['flash_bytes']:,}" if p["flash_bytes"] is not None else "-",
         ("chosen, " if i == chosen else "") + ("on the front" if i in front else
                                                ("over budget" if not p["budget_ok"] else "dominated")))
        for i, p in enumerate(points)
    )
    return [
        Heading("Lambda sweep"),
        Image(pareto_png, "Test accuracy against estimated cycles per lambda (cycles: estimate from emulation)"),
        Table(("lambda", "test accuracy", "cycles (estimate)", "instructions (exact)", "model flash B", "status"),
              rows),
        Paragraph(f"The deployed model (λ = {points[chosen]['cost_weight']:g}) is the fastest point on the "
                  f"Pareto front whose test accuracy is within {accuracy_drop:.1%} of the front's best."),
    ]


def write_report(out_dir: Path, summary: dict[str, Any], genotype: Genotype) -> dict[str, Path]:
    """Write out_dir/report.md, out_dir/report.html and out_dir/plots/*.png; return their paths by role."""
    out_dir = Path(out_dir)
    plot_dir = out_dir / PLOTS_DIR
    plot_dir.mkdir(parents=True, exist_ok=True)
    files = {"cycles": plot_dir / "cycles_per_layer.png", "memory": plot_dir / "memory.png",
             "architecture": plot_dir / "architecture.png"}
    plot_layer_cycles(summary["compile"]["manifest"], summary["profile"], files["cycles"])
    plot_memory(summary["compile"]["manifest"], summary["build"]["memory"], summary["target"], files["memory"])
    plot_architecture(genotype, files["architecture"])
    if "points" in summary["search"]:
        from tvmnas.search.sweep import SweepPoint, plot_pareto

        files["pareto"] = plot_dir / "pareto.png"
        points = [SweepPoint(**p) for p in summary["search"]["points"]]
        plot_pareto(points, summary["search"]["front"], files["pareto"],
                    f"{summary['settings']['space']} on {summary['dataset']}, {summary['target']['name']}")
    rel = {role: f"{PLOTS_DIR}/{path.name}" for role, path in files.items()}
    title = f"tvmnas: {summary['dataset']} on {summary['target']['name']}"
    blocks = _blocks(summary, rel)
    files["md"] = out_dir / "report.md"
    files["html"] = out_dir / "report.html"
    files["md"].write_text(render_markdown(title, blocks))
    files["html"].write_text(render_html(title, blocks))
    return files
