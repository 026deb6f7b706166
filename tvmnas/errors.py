"""The project's one error family: every user-facing failure is a TvmnasError with a one-line message."""

from __future__ import annotations


class TvmnasError(Exception):
    """Base of every error the CLI reports as one line and a non-zero exit.

    `settings` names the parameters the message speaks of in words (e.g. 'out_dir' as "output
    folder"), so that a front end can name them its own way (the CLI: by their flags).
    """

    def __init__(self, *args: object, settings: tuple[str, ...] = ()) -> None:
        super().__init__(*args)
        self.settings = settings


class ModelLoadError(TvmnasError):
    """A model file is missing, unreadable or not a model."""


class UnsupportedModelError(TvmnasError):
    """A valid model in a form the MCU path does not compile (several inputs or outputs, for example)."""


class UnsupportedOperatorError(TvmnasError):
    """The network uses an operator the MCU path cannot compile."""

    def __init__(self, op: str, node: str, detail: str = "") -> None:
        self.op = op
        self.node = node
        msg = f"unsupported operator '{op}' at node '{node}'"
        super().__init__(msg + (f": {detail}" if detail else ""))


class BudgetExceededError(TvmnasError):
    """A model needs more flash or SRAM than the target board has."""

    def __init__(self, what: str, needed: int, budget: int, target: str) -> None:
        self.what = what
        self.needed = needed
        self.budget = budget
        super().__init__(
            f"{what} needs {needed:,} bytes but target '{target}' has {budget:,} bytes "
            f"(pass the budget override to compile anyway)", settings=("ignore_budget",)
        )


class UnknownTargetError(TvmnasError):
    """No descriptor exists for the requested target name."""


class ToolchainMissingError(TvmnasError):
    """arm-none-eabi-gcc or qemu-system-arm is not installed."""


class BuildError(TvmnasError):
    """The generated C failed to compile or link."""


class EmulatorError(TvmnasError):
    """The program on the emulator hung, faulted or exited with an error."""


class DatasetError(TvmnasError):
    """A data set is unknown, missing or not in a supported layout."""


class GenotypeError(TvmnasError):
    """A genotype file is missing, malformed or names an unknown operation."""


class BudgetViolationError(TvmnasError):
    """A searched architecture exceeds a cycle, flash or SRAM budget the user set."""

    def __init__(self, violations: list[str]) -> None:
        self.violations = list(violations)
        super().__init__("architecture over budget: " + "; ".join(self.violations))


class TargetDescriptorError(TvmnasError):
    """A target descriptor file is malformed (missing, unknown or mistyped keys)."""


class ProfileDatabaseError(TvmnasError):
    """A profile database file is unreadable, of another schema version, or not a profile database."""


class CostModelError(TvmnasError):
    """A cost surrogate file or its profile data is missing, malformed, or for another target."""


class VerificationError(TvmnasError):
    """The compiled C, run on the emulator, disagrees with the trained model beyond tolerance."""


class QuantizationError(TvmnasError):
    """An int8 model cannot be read or made: QOperator ONNX, an unquantized node, unsupported parameters."""


class CalibrationError(QuantizationError):
    """Calibration data for post-training quantization is missing, unreadable or of the wrong shape."""


class ImportCheckError(TvmnasError):
    """The imported model, run on the host, disagrees with its source framework (an importer fault)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args, settings=("import_check",))
