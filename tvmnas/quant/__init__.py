"""int8 quantization: TFLite's integer semantics as a numpy reference, a QDQ quantizer, a .tflite writer."""

from tvmnas.quant.quantize import quantize_model
from tvmnas.quant.reference import ReferenceModel

__all__ = ["ReferenceModel", "quantize_model"]
