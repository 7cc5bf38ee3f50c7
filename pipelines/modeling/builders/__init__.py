"""Model builders by name. A builder takes plain parameters and returns an uncompiled
`keras.Model` that maps float images scaled to [0, 1] (or, for tables, the raw columns)
to class probabilities. Raw-input handling and augmentation are added around it by
`pipelines.modeling.models`, so every builder serves and trains the same way.

Builders are imported lazily: `python -m pipelines list` shows them without TensorFlow.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass

from pipelines.core.errors import UsageError


@dataclass(frozen=True)
class BuilderEntry:
    target: str  # "module:function"
    summary: str
    task: str = "image_classification"  # the kind of spec it serves (Spec.task)
    has_backbone: bool = False  # a pretrained backbone that `fine_tune_epochs` can unfreeze
    # Whether precision=auto may train it in mixed_bfloat16 on a CPU with AMX-BF16 (measured
    # per builder: dense and residual convs speed up, depthwise-separable MobileNets slow down).
    cpu_bfloat16: bool = True


BUILDERS = {
    "small_cnn": BuilderEntry(
        "pipelines.modeling.builders.small_cnn:build_small_cnn",
        "conv blocks (conv-BN-ReLU x N, max-pool) + dense head; fast on CPU for 28-32 px images",
    ),
    "residual_cnn": BuilderEntry(
        "pipelines.modeling.builders.residual_cnn:build_residual_cnn",
        "small ResNet (BN residual blocks, global pooling); deeper and stronger, slower on CPU",
    ),
    "tabular_mlp": BuilderEntry(
        "pipelines.modeling.builders.tabular_mlp:build_tabular_mlp",
        "MLP over raw named columns; imputation, missing indicators, normalisation and lookups inside the model",
        task="tabular_classification",
    ),
    "transfer": BuilderEntry(
        "pipelines.modeling.builders.transfer:build_transfer",
        "ImageNet-pretrained keras.applications backbone (mobilenet, mobilenet_v2, efficientnet_b0) + new head; fine-tunes its top",
        # Slower in mixed_bfloat16 than in float32 even with AMX-BF16 (docs/scaling.md).
        cpu_bfloat16=False,
        has_backbone=True,
    ),
}


def cpu_bfloat16_pays(name: str) -> bool:
    entry = BUILDERS.get(name)
    return entry.cpu_bfloat16 if entry else False


def get_builder(name: str):
    if name not in BUILDERS:
        raise UsageError(f"unknown model builder '{name}'; known: {', '.join(sorted(BUILDERS))}")
    module_name, _, function = BUILDERS[name].target.partition(":")
    return getattr(importlib.import_module(module_name), function)


_NOT_PARAMETERS = {"input_shape", "num_classes", "name", "train_frame", "numeric", "categorical"}


def default_params(name: str) -> dict:
    """A builder's tunable parameters with their defaults (what a spec's `model.params` holds)."""
    signature = inspect.signature(get_builder(name))
    return {k: p.default for k, p in signature.parameters.items() if k not in _NOT_PARAMETERS and p.default is not inspect.Parameter.empty}


def build(name: str, input_shape: tuple, num_classes: int, params: dict):
    builder = get_builder(name)
    accepted = set(inspect.signature(builder).parameters) - {"input_shape", "num_classes"}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise UsageError(f"builder '{name}' takes no parameter(s) {', '.join(unknown)}; it takes {', '.join(sorted(accepted))}")
    return builder(input_shape=input_shape, num_classes=num_classes, **params)
