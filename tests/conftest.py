"""Every TVM pass run inside a test has its input and output checked for well-formedness."""

from __future__ import annotations

import pytest
import tvm
from tvm.relax.ir.instrument import WellFormedInstrument


@pytest.fixture(autouse=True)
def well_formed_passes():
    with tvm.transform.PassContext(instruments=[WellFormedInstrument()]):
        yield
