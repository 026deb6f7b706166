"""The run-time policy of a dynamic bundle, as C text: given a cycle budget and free SRAM, pick the
most accurate configuration that fits.

The bundle carries one table row per configuration (accuracy in units of 0.01 %, estimated
cycles, arena bytes); `model_pick_config` scans it. Ties in accuracy go to the cheaper
configuration, then the lower index, so the choice is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigInfo:
    """What the policy knows about one configuration."""

    accuracy: float      # 0..1, held-out estimate
    cycles: int          # estimated cycles of one inference
    arena_bytes: int


POLICY_DECLARATIONS = """\
/* Run-time policy: the most accurate configuration whose estimated cycles fit `cycle_budget` and
 * whose arena fits `free_sram` bytes; -1 when none fits. Pure function of the table below. */
int model_pick_config(uint32_t cycle_budget, size_t free_sram);
/* Table entries of configuration k (accuracy in 0.01 % units, estimated cycles); 0 if k is invalid. */
uint32_t model_config_accuracy(int k);
uint32_t model_config_cycles(int k);
"""


def _row(info: ConfigInfo) -> str:
    return f"  {{{int(round(info.accuracy * 10000))}u, {int(info.cycles)}u, {int(info.arena_bytes)}u}},"


def policy_source(infos: list[ConfigInfo]) -> str:
    """The configuration table and the policy functions (needs MODEL_NUM_CONFIGS, <stddef.h>, <stdint.h>)."""
    rows = "\n".join(_row(i) for i in infos)
    return f"""\
typedef struct {{
  uint32_t accuracy_bp; /* held-out accuracy, 0.01 % units */
  uint32_t cycles;      /* estimated cycles per inference */
  uint32_t arena_bytes;
}} model_config_row;

static const model_config_row model_config_table[MODEL_NUM_CONFIGS] = {{
{rows}
}};

int model_pick_config(uint32_t cycle_budget, size_t free_sram) {{
  int best = -1;
  for (int k = 0; k < MODEL_NUM_CONFIGS; ++k) {{
    const model_config_row *row = &model_config_table[k];
    if (row->cycles > cycle_budget || (size_t)row->arena_bytes > free_sram) continue;
    if (best < 0 || row->accuracy_bp > model_config_table[best].accuracy_bp ||
        (row->accuracy_bp == model_config_table[best].accuracy_bp && row->cycles < model_config_table[best].cycles)) {{
      best = k;
    }}
  }}
  return best;
}}

uint32_t model_config_accuracy(int k) {{
  return (k >= 0 && k < MODEL_NUM_CONFIGS) ? model_config_table[k].accuracy_bp : 0u;
}}

uint32_t model_config_cycles(int k) {{
  return (k >= 0 && k < MODEL_NUM_CONFIGS) ? model_config_table[k].cycles : 0u;
}}
"""


def pick_config(infos: list[ConfigInfo], cycle_budget: int, free_sram: int) -> int:
    """The same choice as the C `model_pick_config`, in Python (for tests and the CLI)."""
    best = -1
    for k, info in enumerate(infos):
        if info.cycles > cycle_budget or info.arena_bytes > free_sram:
            continue
        acc, best_acc = round(info.accuracy * 10000), round(infos[best].accuracy * 10000) if best >= 0 else -1
        if best < 0 or acc > best_acc or (acc == best_acc and info.cycles < infos[best].cycles):
            best = k
    return best
