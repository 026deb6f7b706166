"""The executor seam: inline and process-pool executors give the driver the same results and errors."""
from concurrent.futures import wait

import pytest

from tvmnas.errors import TvmnasError
from tvmnas.executor import InlineExecutor, LocalExecutor, as_finished, make_executor


def _square(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative {x}")
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_results_and_errors_reach_the_driver(workers):
    with make_executor("local", workers) as ex:
        assert isinstance(ex, InlineExecutor if workers == 1 else LocalExecutor)
        futs = [ex.submit(_square, x) for x in (3, -1, 4)]
        wait(futs)
    assert futs[0].result() == 9 and futs[2].result() == 16
    with pytest.raises(ValueError, match="negative -1"):
        futs[1].result()


def test_unknown_executor_is_one_line():
    with pytest.raises(TvmnasError, match="unknown executor 'slurm'") as err:
        make_executor("slurm", 2)
    assert err.value.settings == ("executor",)


@pytest.mark.parametrize("workers", [1, 2])
def test_as_finished_yields_every_task_once_with_its_index(workers):
    with make_executor("local", workers) as ex:
        seen = {i: fut.result() for i, fut in as_finished(ex, _square, [(x,) for x in range(7)], in_flight=3)}
    assert seen == {x: x * x for x in range(7)}


CALLS: list[int] = []


def _logged(x: int) -> int:
    CALLS.append(x)
    return x


def test_as_finished_submits_lazily_inline():
    # Inline: task i+1 starts only after the driver has seen task i, so it can save each result first.
    CALLS.clear()
    seen_before = []
    for i, fut in as_finished(InlineExecutor(), _logged, [(x,) for x in range(3)]):
        seen_before.append(list(CALLS))
    assert seen_before == [[0], [0, 1], [0, 1, 2]]
