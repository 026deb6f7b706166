"""The run-time policy in C: most accurate configuration within a cycle budget and free SRAM."""

from __future__ import annotations

import itertools
import subprocess

import pytest

from tvmnas.dynamic.kernel_merge import merge_kernels
from tvmnas.dynamic.policy import ConfigInfo, pick_config, policy_source
from tvmnas.measure.toolchain import require_host_compiler

INFOS = [
    ConfigInfo(0.80, 1000, 4000),
    ConfigInfo(0.90, 5000, 16000),
    ConfigInfo(0.85, 2000, 8000),
    ConfigInfo(0.90, 4000, 20000),   # as accurate as config 1, cheaper, more SRAM
]
BUDGETS = [0, 999, 1000, 1999, 2000, 4000, 5000, 10**6]
SRAM = [0, 3999, 4000, 8000, 16000, 19999, 20000, 10**6]

DRIVER = """
#include <stdio.h>
int main(void) {
  const unsigned budgets[] = {%s};
  const unsigned long sram[] = {%s};
  for (unsigned i = 0; i < sizeof budgets / sizeof budgets[0]; ++i)
    for (unsigned j = 0; j < sizeof sram / sizeof sram[0]; ++j)
      printf("%%d\\n", model_pick_config(budgets[i], (size_t)sram[j]));
  printf("%%u %%u %%u\\n", model_config_accuracy(2), model_config_cycles(3), model_config_accuracy(9));
  return 0;
}
"""


@pytest.fixture(scope="module")
def c_picks(tmp_path_factory) -> list[str]:
    require_host_compiler()
    tmp = tmp_path_factory.mktemp("policy")
    src = tmp / "policy.c"
    src.write_text("#include <stddef.h>\n#include <stdint.h>\n#define MODEL_NUM_CONFIGS 4\n" + policy_source(INFOS)
                   + DRIVER % (", ".join(map(str, BUDGETS)), ", ".join(map(str, SRAM))))
    exe = tmp / "policy"
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", str(src), "-o", str(exe)], check=True,
                   capture_output=True, text=True)
    return subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split("\n")


def test_c_policy_agrees_with_the_python_policy_everywhere(c_picks):
    expected = [str(pick_config(INFOS, b, s)) for b, s in itertools.product(BUDGETS, SRAM)]
    assert c_picks[: len(expected)] == expected


@pytest.mark.parametrize(
    "budget, sram, expected",
    [
        (999, 10**6, -1),        # nothing is that fast
        (10**6, 3999, -1),       # nothing fits that SRAM
        (1500, 10**6, 0),        # only the cheapest fits
        (2000, 10**6, 2),        # the better of the two that fit
        (10**6, 10**6, 3),       # tie on accuracy: the cheaper one
        (10**6, 19999, 1),       # the cheaper tie needs too much SRAM
    ],
)
def test_picks_the_most_accurate_configuration_that_fits(budget, sram, expected, c_picks):
    row = BUDGETS.index(budget) * len(SRAM) + SRAM.index(sram) if budget in BUDGETS and sram in SRAM else None
    assert pick_config(INFOS, budget, sram) == expected
    if row is not None:
        assert c_picks[row] == str(expected)


def test_table_accessors(c_picks):
    assert c_picks[len(BUDGETS) * len(SRAM)] == "8500 4000 0"


A = "static void K(const float * restrict arg0, float * restrict arg1) {\n  for (int32_t i = 0; i < 8; ++i) {\n    arg1[i] = arg0[(i * 16)] * 2.0f;\n  }\n}\n"


def test_kernels_differing_only_in_integers_become_one_function():
    b = A.replace("i < 8", "i < 12")
    (merged,) = merge_kernels([A, b], ["k0", "k1"], "K")
    assert "int32_t tvmnas_n0" in merged.text and "i < tvmnas_n0" in merged.text and "(i * 16)" in merged.text
    assert merged.arguments == {A: (8,), b: (12,)}
    assert merged.text.startswith("static void k0(")


def test_kernels_differing_in_structure_or_floats_stay_apart():
    float_changed = A.replace("2.0f", "3.0f")
    local_changed = A.replace("{\n  for", "{\n  float t[4];\n  for", 1), A.replace("{\n  for", "{\n  float t[8];\n  for", 1)
    assert len(merge_kernels([A, float_changed], ["k0", "k1"], "K")) == 2
    assert len(merge_kernels(list(local_changed), ["k0", "k1"], "K")) == 2
    (alone,) = merge_kernels([A], ["k0"], "K")
    assert alone.arguments == {A: ()} and "static void k0(" in alone.text


def test_selection_keeps_the_largest_and_spreads_along_the_front():
    from tvmnas.dynamic.select import Candidate, choose, choose_nested, pareto_front
    from tvmnas.dynamic.supernet import SubnetConfig

    def cand(i: int, acc: float, cost: float) -> Candidate:
        return Candidate(SubnetConfig(i, (i,), (1,), (3,), (2,)), acc, cost, 0, 0)

    cands = [cand(1, 0.5, 10), cand(2, 0.6, 20), cand(3, 0.55, 30), cand(4, 0.7, 40), cand(5, 0.8, 80),
             cand(6, 0.75, 160)]
    assert [c.config.stem for c in pareto_front(cands)] == [1, 2, 4, 5]
    assert [c.config.stem for c in choose(cands, 3)] == [1, 2, 5]
    nested = choose_nested(cands, 3, cands[-1].config)       # the largest is dominated but kept
    assert [c.config.stem for c in nested] == [1, 5, 6]
