"""Export of the network for deployment: ONNX graphs of the image encoder and the prompt decoder (TorchScript of
automatic mode is :mod:`medsa_monai.bundle.export`)."""

from .onnx import (
    ONNX_OPSET,
    ImageEncoderGraph,
    PromptDecoderGraph,
    export_checked,
    export_onnx,
    export_trained_onnx,
    read_onnx_spec,
    verify_onnx,
)

__all__ = ["ONNX_OPSET", "ImageEncoderGraph", "PromptDecoderGraph", "export_checked", "export_onnx",
           "export_trained_onnx", "read_onnx_spec", "verify_onnx"]
