"""The C printer's type, operator and math tables are a CLanguage that the target descriptor selects."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from tvmnas.codegen.c_printer import C99, language_for
from tvmnas.compiler import emit_kernels, lower_model
from tvmnas.errors import TargetDescriptorError
from tvmnas.frontend import import_model
from tvmnas.targets import DESCRIPTOR_DIR, list_targets, load_target, parse_descriptor


class Gate(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x) * x


def test_kernels_are_printed_with_the_tables_of_the_language_given() -> None:
    other = dataclasses.replace(C99, name="other", types={**C99.types, "float32": "float32_t"},
                                math_calls={**C99.math_calls, "sigmoid": "other_sigmoidf"})
    lowered, graph = lower_model(import_model(Gate().eval(), (1, 4, 4, 4)))
    default, printed = ("\n".join(k.text for k in emit_kernels(lowered, graph, language=lang).values())
                        for lang in (C99, other))
    assert "tvmnas_sigmoidf(" in default and "const float *" in default
    assert "other_sigmoidf(" in printed and "const float32_t *" in printed
    assert "tvmnas_sigmoidf" not in printed and "const float *" not in printed


def test_every_shipped_target_selects_c99() -> None:
    assert {language_for(t).name for t in list_targets()} == {"c99"}


def test_descriptor_may_name_its_c_language(tmp_path: Path) -> None:
    raw = json.loads((DESCRIPTOR_DIR / "cortex-m4.json").read_text())
    path = tmp_path / "cortex-m4.json"
    path.write_text(json.dumps({**raw, "c_language": "c99"}))
    assert language_for(parse_descriptor(path)) is C99


def test_unknown_c_language_names_the_target_and_the_known_ones() -> None:
    target = dataclasses.replace(load_target("cortex-m4"), c_language="helium")
    with pytest.raises(TargetDescriptorError, match=r"cortex-m4: c_language 'helium' is not one of \['c99'\]"):
        language_for(target)
