"""PyTorch -> one .tflite file with fp16 weights whose float32 output matches PyTorch (< 1e-3).

Shared by training/train_embedder.py (garment_v5) and training/train_detector.py (detector_v2).

Why the steps: casting a float32 model's weights to fp16 after conversion changes the outputs by
~0.5 % (what garment_v1 shipped with). Here the batch norms are folded into their convolutions in
PyTorch first and every weight is then rounded to fp16 *in the PyTorch model*, which becomes the
reference. The converter has nothing left to fold, so the fp16 weight cast after conversion is
exact and the .tflite (fp16 weights, float32 arithmetic) reproduces the reference to float32
rounding. The rounded reference is what the parity check, the committed parity file and the
model card's figures are about.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

MAX_RELATIVE_ERROR = 1e-3


def fold_batchnorms(model: nn.Module) -> nn.Module:
    """Fold every (conv, following batch norm) pair of EfficientNet-Lite blocks and nn.Sequential runs."""
    model.eval()

    def fold(owner: nn.Module, conv_name: str, bn_name: str) -> None:
        conv, bn = getattr(owner, conv_name, None), getattr(owner, bn_name, None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            setattr(owner, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(owner, bn_name, nn.Identity())

    for module in list(model.modules()):
        for conv_name, bn_name in (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")):
            fold(module, conv_name, bn_name)
        for conv_name, bn_name in (("stem", "bn0"), ("conv_head", "bn1"), ("_conv_stem", "_bn0"), ("_conv_head", "_bn1")):
            fold(module, conv_name, bn_name)
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for first, second in zip(names, names[1:]):
                fold(module, first, second)
    left = [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if left:
        raise SystemExit(f"batch norms left unfolded: {left}")
    return model


def round_weights_to_fp16(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.half().float())
    return model


def convert(module: nn.Module, example: np.ndarray, path: Path) -> Path:
    """float32 .tflite via litert-torch, then fp16 weights via ai-edge-quantizer (float32 compute)."""
    import litert_torch
    from ai_edge_quantizer import qtyping, quantizer

    float32_path = path.with_suffix(".float32.tflite")
    litert_torch.convert(module.eval(), (torch.from_numpy(example),)).export(str(float32_path))
    qt = quantizer.Quantizer(str(float32_path))
    for op in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D"):
        qt.update_quantization_recipe(
            regex=".*",
            operation_name=getattr(qtyping.TFLOperationName, op),
            algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING,
            op_config=qtyping.OpQuantizationConfig(
                weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
                compute_precision=qtyping.ComputePrecision.FLOAT,
                explicit_dequantize=True,
            ),
        )
    qt.quantize().export_model(str(path), overwrite=True)
    float32_path.unlink()
    return path


def run_tflite(path: Path, inputs: list[np.ndarray], threads: int = 1) -> tuple[list[list[np.ndarray]], list[dict], float]:
    """Every output for every input, the output details, and the median ms per input."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    (input_detail,) = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    results, times = [], []
    for x in inputs:
        interpreter.set_tensor(input_detail["index"], x)
        started = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - started)
        results.append([interpreter.get_tensor(d["index"]).copy() for d in outputs])
    return results, outputs, float(np.median(times) * 1000)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / (np.linalg.norm(want) + 1e-12))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def staging_path(path: Path) -> Path:
    """Where a conversion writes `path` first: moved in by install() only once it passed its checks,
    so a failed export leaves the model that was there whole."""
    return path.with_name(f"{path.stem}.new{path.suffix}")


def install(staged: Path, path: Path, manifest_path: Path, replace: bool = False) -> str:
    """Move the checked `staged` .tflite to `path`; its sha256. Refused (staged removed) when
    `manifest_path` already describes a different network: the index tells models apart by name
    alone and re-embeds only when the name changes, so a different network under the same name
    would leave vectors of two networks in one index."""
    digest = sha256(staged)
    if manifest_path.is_file() and not replace:
        existing = json.loads(manifest_path.read_text()).get("sha256")
        if existing != digest:
            staged.unlink()
            raise SystemExit(f"{manifest_path} describes a different network (sha256 {str(existing)[:12]}..., this "
                             f"export {digest[:12]}...): give this one a new --name (e.g. the next version; the index "
                             f"re-embeds only when the name changes), or --replace to overwrite it on purpose")
    os.replace(staged, path)
    return digest
