"""MODEL_CARD.md written next to every exported model: what it is, what it was trained and
tested on, how well it did, and what it must not be used for."""

from __future__ import annotations

from pipelines.evaluation.operating_points import to_markdown
from pipelines.evaluation.report import headline
from pipelines.modeling.test_time_augmentation import view_count


def render(spec, metadata: dict, report: dict) -> str:
    shape = ", ".join(str(s) for s in spec.input_shape)
    if "cross_validation" in report:  # the final model trained on all the data: the estimate is the CV one
        split = f"- Trained on all {metadata['train_examples']} images. Estimate: {report['protocol']}."
        title = "Cross-validated metrics (mean +- sd over the folds)"
        rows = {k: f"{v['mean']:.4f} +- {v['sd']:.4f}" for k, v in report["cross_validation"].items()}
    else:
        split = (f"- Split: train {metadata['train_examples']}, validation {metadata['val_examples']}, test {metadata['test_examples']} "
                 f"(official test split; validation: {metadata.get('val_origin', 'official')}).")
        title = "Test metrics"
        rows = {k: f"{v:.4f}" for k, v in headline(report).items()}
    metrics = "\n".join(f"| {k} | {v} |" for k, v in rows.items())
    return f"""# Model card: {spec.title} (`{spec.name}`)

{spec.description}

## Model
- Builder `{spec.model.builder}` with {spec.model.params or "default parameters"}; \
augmentation during training: {", ".join(spec.model.augmentation) or "none"}.
- Test-time augmentation: {_views(spec)}.
- Input: `{metadata["input_dtype"]}` tensor `[batch, {shape}]` named `image`, raw pixels 0-255{_stacked(spec)}; \
scaling happens inside the model.
- Output: probabilities over {spec.num_classes} classes: {", ".join(spec.class_names)}.
- Trained {metadata["epochs_run"]} epochs, seed {spec.train.seed}; \
MLflow run `{metadata["mlflow_run_id"]}`; code `{metadata["git_commit"]}`.

## Data
- Source: {metadata["data_origin"]} (`{spec.data.loader}`), sha256 of the files used `{metadata["data_sha256"]}`.
{split}
{data_checks(metadata)}
## {title}
| metric | value |
|---|---|
{metrics}

{_operating_points(report)}## Intended use
{spec.intended_use or "Research and teaching."}

## Limitations
{spec.limitations or "Not evaluated outside the data set's own distribution."}
"""


def data_checks(metadata: dict) -> str:
    """The data checks' findings (`pipelines.data.checks`), as lines of the card's Data section:
    "N test images also appear in training" is what a reader of the test figures needs to know."""
    lines = (metadata.get("data_checks") or {}).get("summary", [])
    return "".join(f"- Data checks: {line}\n" for line in lines)


def _views(spec) -> str:
    transforms = tuple(spec.model.test_time_augmentation)
    if not transforms:
        return "none (one network pass per image)"
    return f"the served probabilities are the mean over {view_count(transforms)} views ({', '.join(transforms)} and their combinations)"


def _operating_points(report: dict) -> str:
    """Both decision rules of the one model (pipelines.evaluation.operating_points), when it has them."""
    if "operating_points" not in report:
        return ""

    return "#" + to_markdown(report["operating_points"]) + "\n"


def _stacked(spec) -> str:
    views = spec.data.views
    return f"; {views} photos of each object, RGB after RGB (view i is channels 3i to 3i+2)" if views > 1 else ""
