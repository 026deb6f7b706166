"""The executor seam: inline and process-pool executors give the driver the same results and errors."""
from concurrent.futures import wait

import pytest

from tvmnas.errors import TvmnasError
from tvmnas.executor import InlineExecutor, LocalExecutor, make_executor


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
