"""Peak memory of a photo folder: loading plus one training epoch, at 1x and 4x the images.

`make bench-image-folder` (`python benchmarks/bench_image_folder.py [--size 96] [--copies 4]`).
The folder is the cucumber sample written as PNG files of SIZE x SIZE, each photo `--copies`
times (turned, so the copies are distinct files; scripts/sample_photos.py); the 4x folder has
four times the copies. Each measurement is a fresh process: the image_folder loader (the real
use-case file, schema and cache) and one epoch of `fit` through `pipelines.data.input_pipeline`,
with a deliberately small network (a strided convolution and a dense layer), so the epoch
costs seconds and what is measured is the data's memory, not a model's.

Three runs a scale:
- cold: decodes the folder into the cache, then the epoch (memory-mapped);
- warm: the cache as every later run reads it, memory-mapped, then the epoch;
- in RAM: the same cache copied into an array first (`np.array`), as loaders that hold the
  data in memory do; tf.data then holds it as a tensor (`from_tensor_slices` + `cache()`).

Memory is read from /proc/self/status every 10 ms: the peak of **RssAnon** (memory the process
owns: what grows when data is copied in) and the kernel's **VmHWM** (peak resident set, which
also counts the mapped cache's pages while they are in the page cache; the kernel can drop
those at any time, so they are not memory the run needs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class PeakSampler:
    """The largest RssAnon seen, sampled on a thread (the kernel keeps no peak of it)."""

    def __init__(self, interval: float = 0.01):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, status_kib("RssAnon"))
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, status_kib("RssAnon"))


def child(folder: Path, classes: list[str], size: int, mode: str) -> dict:
    """One measurement, in this (fresh) process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    from pipelines.core.runtime import import_keras
    from pipelines.data.dataset import Split
    from pipelines.data.input_pipeline import fit_arguments
    from pipelines.data.loaders import load_dataset
    from pipelines.usecases.spec_file import read_spec_file

    keras = import_keras()  # TensorFlow's own memory is in the baseline, before any data
    baseline = status_kib("RssAnon")
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "bench_photos.toml"
        path.write_text(f"""title = "bench"
task = "image_classification"
input_shape = [{size}, {size}, 3]
class_names = {json.dumps(classes)}
[data]
loader = "image_folder"
[data.options]
folder = "{folder}"
[model]
builder = "small_cnn"
""")
        spec = read_spec_file(path)
    with PeakSampler() as sampler:
        started = time.perf_counter()
        dataset = load_dataset(spec)
        loaded = time.perf_counter() - started
        train = dataset.train if mode != "ram" else Split(np.array(dataset.train.x), dataset.train.y)
        model = keras.Sequential([keras.Input((size, size, 3)), keras.layers.Rescaling(1 / 255),
                                  keras.layers.Conv2D(8, 5, strides=4, activation="relu"), keras.layers.GlobalAveragePooling2D(),
                                  keras.layers.Dense(len(classes), activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy")
        started = time.perf_counter()
        model.fit(**fit_arguments(train, 64, 0, training=True), epochs=1, verbose=0)
        epoch = time.perf_counter() - started
    return {"mode": mode, "images": len(dataset.files), "train_images": len(dataset.train), "train_mib": dataset.train.x.nbytes / 2**20,
            "baseline_anon_mib": baseline / 1024, "peak_anon_mib": sampler.peak / 1024, "vm_hwm_mib": status_kib("VmHWM") / 1024,
            "load_seconds": loaded, "epoch_seconds": epoch}


def measure(folder: Path, classes: list[str], size: int, mode: str, data_root: Path) -> dict:
    env = {**os.environ, "PIPELINES_DATA_ROOT": str(data_root), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, __file__, "--child", str(folder), "--size", str(size), "--mode", mode,
                             "--classes", json.dumps(classes)], capture_output=True, text=True, env=env, timeout=1800)
    if result.returncode:
        raise SystemExit(f"measurement failed ({mode}, {folder}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96, help="photo side in pixels (default 96)")
    parser.add_argument("--copies", type=int, default=4, help="copies of each of the 495 photos at 1x (default 4: 1,980 images)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="memmap", help=argparse.SUPPRESS)
    parser.add_argument("--classes", help=argparse.SUPPRESS)
    parser.add_argument("--no-record", action="store_true", help="print only; leave benchmarks/RESULTS.md as it is")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, json.loads(args.classes), args.size, args.mode)))
        return 0

    from results import record  # benchmarks/results.py, beside this script
    from sample_photos import cucumber_folder  # scripts/sample_photos.py

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-image-folder-") as scratch:
        for scale in (1, 4):
            folder = Path(scratch) / f"photos-{scale}x"
            started = time.perf_counter()
            counts = cucumber_folder(folder, size=args.size, copies=args.copies * scale)
            print(f"{scale}x: wrote {sum(counts.values())} PNGs of {args.size}x{args.size} in {time.perf_counter() - started:.0f} s",
                  flush=True)
            classes = sorted(counts)
            data_root = Path(scratch) / f"data-{scale}x"
            for mode in ("cold", "warm", "ram"):
                row = {"scale": f"{scale}x", **measure(folder, classes, args.size, mode, data_root)}
                rows.append(row)
                print(json.dumps(row), flush=True)
            shutil.rmtree(folder)
            shutil.rmtree(data_root)

    names = {"cold": "memory-mapped, decoding first", "warm": "memory-mapped cache", "ram": "the cache copied into RAM"}
    lines = ["| scale | images (train) | train pixels | run | peak RssAnon - baseline | peak VmHWM | load | epoch |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['scale']} | {row['images']:,} ({row['train_images']:,}) | {row['train_mib']:.0f} MiB | "
                     f"{names[row['mode']]} | **{row['peak_anon_mib'] - row['baseline_anon_mib']:.0f} MiB** | "
                     f"{row['vm_hwm_mib']:.0f} MiB | {row['load_seconds']:.1f} s | {row['epoch_seconds']:.1f} s |")
    growth = {mode: [r["peak_anon_mib"] - r["baseline_anon_mib"] for r in rows if r["mode"] == mode] for mode in names}
    summary = (f"From 1x to 4x the images, the memory the run itself holds (peak RssAnon above the baseline after "
               f"`import keras`, {rows[0]['baseline_anon_mib']:.0f} MiB) went from {growth['warm'][0]:.0f} to {growth['warm'][1]:.0f} MiB "
               f"memory-mapped, and from {growth['ram'][0]:.0f} to {growth['ram'][1]:.0f} MiB with the cache copied into RAM. "
               "VmHWM also counts the mapped cache's pages while they sit in the page cache, which the kernel reclaims under "
               "pressure. The network is a strided convolution and a dense layer, so that the epoch measures the data, not a model.")
    markdown = (f"The cucumber sample as {args.size}x{args.size} PNG files, each photo {args.copies} (1x) or {4 * args.copies} (4x) "
                f"times, turned; loading through the image_folder loader, then one epoch of `fit` (batch 64) through "
                f"`pipelines.data.input_pipeline`; each run a fresh process (`benchmarks/bench_image_folder.py`).\n\n"
                + "\n".join(lines) + "\n\n" + summary + "\n")
    print(markdown)
    if not args.no_record:
        record("image-folder", "Photo folders: peak memory at 1x and 4x the images", "make bench-image-folder", markdown, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
