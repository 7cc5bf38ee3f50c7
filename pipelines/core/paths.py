"""Where things live: the repo's `data/` and `models/` artifact folders.

Every location can be moved with an environment variable, so tests and users can
point a run somewhere else without touching the code.
"""

import os
from pathlib import Path

from pipelines.core.errors import PipelineError

REPO_ROOT = Path(__file__).resolve().parents[2]  # pipelines/core/paths.py -> the checkout


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


def data_root() -> Path:
    """`data/`: committed samples under `samples/`, downloads under `raw/` (not committed)."""
    return _env_path("PIPELINES_DATA_ROOT", REPO_ROOT / "data")


def samples_dir(usecase: str) -> Path:
    # Samples are committed with the code, so they never move with PIPELINES_DATA_ROOT.
    return REPO_ROOT / "data" / "samples" / usecase


def download_dir(usecase: str) -> Path:
    return data_root() / "raw" / usecase


def models_root() -> Path:
    """`models/`: `models/<usecase>/<version>/` SavedModels (TensorFlow Serving layout)."""
    return _env_path("PIPELINES_MODELS_ROOT", REPO_ROOT / "models")


def usecase_models_dir(usecase: str) -> Path:
    return models_root() / usecase


def ensure_writable(folder: Path) -> None:
    """Create `folder` and prove it takes a file, or one PipelineError naming it."""

    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise PipelineError(f"cannot write to {folder} ({exc.strerror or exc}); set PIPELINES_MODELS_ROOT to a writable folder") from None


def checkpoints_dir(usecase: str) -> Path:
    # A non-integer folder name: TensorFlow Serving only looks at integer versions.
    return usecase_models_dir(usecase) / "checkpoints"


def reports_root() -> Path:
    """`reports/`: run comparisons (`compare`) and sweep summaries; not committed."""
    return _env_path("PIPELINES_REPORTS_ROOT", REPO_ROOT / "reports")
