"""Data checks, run before every training: duplicates within and across the splits, the same
input with two labels, and the class counts per split.

A test image that also sits in the training data is scored on something the model has seen:
the test figures are optimistic by however many such copies there are, and nobody can tell from
the metrics. So every run hashes every example before training and says how many there are:

- **exact** duplicates: the same decoded pixels (or the same table row), by a 128-bit BLAKE2b
  digest of the example's bytes;
- **near** duplicates (images): the same picture re-encoded, resized or slightly edited, by the
  64-bit perceptual hash pHash (a DCT of the image at 32x32 grey, as the `imagehash` library
  computes it, bit for bit) within a small Hamming distance, `checks.near_duplicate_distance`,
  confirmed by the 32x32 grey thumbnails the hash is computed from (`checks.near_duplicate_difference`:
  pHash alone calls thousands of different small digits copies);
- **label conflicts**: one input (exact copies) carrying two or more labels;
- **class counts** per split.

What counts as a duplicate across splits depends on what the splits are for. With a held-out
test split (`train`, `val`, `test`) the leak is a test item with a copy on the training side;
`checks.drop_test_duplicates` drops those training (and validation) copies before the fit.
Cross-validated use cases pool every example into one set the folds are drawn from (`folds`):
any two copies there may land in different folds, so duplicates *within* the pool are the leak,
and the drop option keeps one example of each group of copies. External test sets (heart's other
sites) are held out like `test`.

Everything is vectorised: hashing 70,000 28x28 images takes a few seconds, and near duplicates
are found with a multi-index over the hash's bits (two hashes within d bits agree exactly on at
least one of d + 1 chunks), never by comparing every pair.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np

# The training side of a run, in the order reported; every other split is held out (evaluated on only).
TRAINING_SPLITS = ("train", "val", "folds")
EXAMPLES_PER_PAIR = 20  # duplicate pairs listed in the JSON artifact per pair of splits


@dataclass
class DataChecks:
    """What the checks found, by split. `duplicates` rows read "of `items` examples of `split`,
    `exact` have an exact copy in `against` and `near` more a near copy" (`split == against`:
    extra copies within the split, so that dropping them leaves one of each)."""

    kind: str  # "images" or "rows"
    splits: dict  # split name -> number of examples
    held_out: tuple  # the splits evaluated on, never trained on
    near_distance: int | None  # Hamming distance between pHashes; None for rows
    near_difference: float | None  # RMS grey difference of the 32x32 thumbnails
    class_counts: dict  # split -> {class name: count}
    duplicates: list  # rows: split, against, items, exact, near
    label_conflicts: dict  # groups, items, examples
    in_training: dict = field(default_factory=dict)  # held-out split -> (exact, near) examples with a copy in train or val
    examples: list = field(default_factory=list)  # pairs: split, index, against, index_against, kind, distance
    seconds: float = 0.0
    dropped: dict = field(default_factory=dict)  # split -> count, once `drop` ran
    # Per split, the local indices that `drop` removes (not in the JSON: they can be long).
    _to_drop: dict = field(default_factory=dict, repr=False)

    # --- reading the counts -----------------------------------------------------------------

    def count(self, split: str, against: str, kind: str = "both") -> int:
        """How many examples of `split` have a copy in `against` (exact, near, or both)."""
        for row in self.duplicates:
            if row["split"] == split and row["against"] == against:
                exact, near = row["exact"], row["near"] or 0
                return {"exact": exact, "near": near, "both": exact + near}[kind]
        return 0

    def held_out_in_training(self) -> dict:
        """{held-out split: (exact, near) examples of it with a copy anywhere on the training side}."""
        return {split: tuple(pair) for split, pair in self.in_training.items()}

    @property
    def to_drop(self) -> dict:
        """{split: sorted local indices} that `checks.drop_test_duplicates` removes: training copies
        of held-out examples; in a cross-validated pool, all but one of each group of copies."""
        return {split: indices for split, indices in self._to_drop.items() if len(indices)}

    def record_drop(self) -> None:
        """The run dropped `to_drop`: say so wherever the counts are shown."""
        self.dropped = {split: int(len(indices)) for split, indices in self.to_drop.items()}

    # --- what the run shows -------------------------------------------------------------------

    def lines(self) -> list[str]:
        """One or two lines for the console: the leaks first, then what else was found."""
        noun = "images" if self.kind == "images" else "rows"
        parts = []
        for split, (exact, nearly) in self.held_out_in_training().items():
            how = f" ({exact} exact, {nearly} near)" if self.kind == "images" else ""
            within = self.count(split, split)
            parts.append(f"{split} {self.splits[split]}: {exact + nearly} also in training{how}"
                         + (f", copies within it {within}" if within else ""))
        within = [f"{split} {self.count(split, split, 'exact')}" + (f" + {self.count(split, split, 'near')} near" if self.kind == "images" else "")
                  for split in self.splits if split not in self.held_out]
        parts.append("copies within " + ", ".join(within))
        conflicts = self.label_conflicts
        parts.append(f"{conflicts['items']} {noun} with two or more labels ({conflicts['groups']} groups)")
        lines = [f"data checks ({self.seconds:.1f} s): " + "; ".join(parts)]
        if self.dropped:
            lines.append("dropped before training (checks.drop_test_duplicates): "
                         + ", ".join(f"{count} of {split}" for split, count in self.dropped.items()))
        return lines

    def card_lines(self) -> list[str]:
        """The model card's summary: "N test images also appear in training"."""
        noun = "images" if self.kind == "images" else "rows"
        lines = []
        for split, (exact, nearly) in self.held_out_in_training().items():
            how = (f" ({exact} exact copies, {nearly} near copies: pHash distance <= {self.near_distance}, mean grey difference "
                   f"<= {self.near_difference:g} RMS)" if self.kind == "images" else "")
            lines.append(f"{exact + nearly} {split} {noun} also appear in training{how}.")
        if "folds" in self.splits:
            exact, nearly = self.count("folds", "folds", "exact"), self.count("folds", "folds", "near")
            how = f" ({exact} exact, {nearly} near)" if self.kind == "images" else ""
            lines.append(f"{exact + nearly} of the {self.splits['folds']} cross-validated {noun} are copies of another{how}, "
                         "which folds may split between training and validation.")
        if self.label_conflicts["groups"]:
            lines.append(f"{self.label_conflicts['items']} {noun} are copies carrying two or more labels "
                         f"({self.label_conflicts['groups']} groups).")
        if self.dropped:
            lines.append("Dropped before training (`checks.drop_test_duplicates`): "
                         + ", ".join(f"{count} {split} {noun}" for split, count in self.dropped.items()) + ".")
        return lines

    def table(self) -> dict:
        """The duplicate counts as columns, for `mlflow.log_table`."""
        columns = ("split", "against", "items", "exact", "near")
        return {name: [row[name] if row[name] is not None else -1 for row in self.duplicates] for name in columns}

    def metrics(self) -> dict:
        """A few numbers `compare` and the MLflow UI can sort by."""
        values = {f"data_{split}_in_training": sum(pair) for split, pair in self.held_out_in_training().items()}
        values["data_label_conflicts"] = self.label_conflicts["items"]
        values.update({f"data_dropped_{split}": count for split, count in self.dropped.items()})
        return values

    def to_dict(self) -> dict:
        return {"kind": self.kind, "splits": self.splits, "held_out": list(self.held_out), "near_duplicate_distance": self.near_distance,
                "near_duplicate_difference": self.near_difference,
                "seconds": round(self.seconds, 3), "class_counts": self.class_counts, "duplicates": self.duplicates,
                "held_out_in_training": {split: {"exact": e, "near": n} for split, (e, n) in self.in_training.items()},
                "label_conflicts": self.label_conflicts, "examples": self.examples, "dropped": self.dropped}


# --- the checks -----------------------------------------------------------------------------


def check(splits: dict, class_names, near_distance: int | None = 4, near_difference: float = 4.0) -> DataChecks:
    """Hash every example of `splits` ({name: Split}, images as uint8 arrays or rows as a
    DataFrame) and count duplicates within and across them. Splits not named in
    `TRAINING_SPLITS` are held out. Two images that are not exact copies are near copies when
    their pHashes differ in at most `near_distance` bits (None: exact copies only) and their 32x32
    grey thumbnails by at most `near_difference` grey levels, root mean square."""

    started = time.perf_counter()
    names = [name for name, split in splits.items() if split is not None]
    parts = [splits[name] for name in names]
    images = isinstance(parts[0].x, np.ndarray)
    kind = "images" if images else "rows"
    near_distance = near_distance if images else None
    sizes = np.array([len(part) for part in parts])
    offsets = np.r_[0, np.cumsum(sizes)]
    split_of = np.repeat(np.arange(len(parts)), sizes)
    labels = np.concatenate([np.asarray(part.y) for part in parts])

    digests = np.concatenate([exact_digests(part.x) for part in parts])
    _, group = np.unique(digests, return_inverse=True)
    group = group.reshape(-1)
    near_edges = None
    if near_distance is not None:
        hashed = [phash(part.x) for part in parts]
        hashes, thumbnails = np.concatenate([h for h, _ in hashed]), np.concatenate([t for _, t in hashed])
        left, right = near_pairs(hashes, near_distance)
        different = group[left] != group[right]  # an exact copy is not also a near one
        left, right = left[different], right[different]
        # pHash alone is too coarse for small images (on MNIST, 11,669 pairs of different digits share
        # one hash): a near copy must also look the same, pixel for pixel, at the hash's 32x32 grey.
        close = _thumbnails_within(thumbnails, left, right, near_difference)
        left, right = left[close], right[close]
        near_edges = (left, right, np.bitwise_count(hashes[left] ^ hashes[right]))

    duplicates, examples, to_drop = [], [], {}
    # Which splits each group of exact copies occurs in: one row per group.
    present = np.zeros((group.max() + 1 if len(group) else 0, len(parts)), dtype=bool)
    present[group, split_of] = True
    near_in = np.zeros((len(labels), len(parts)), dtype=bool)  # example -> has a near copy in split
    if near_edges is not None:
        left, right, _ = near_edges
        near_in[left, split_of[right]] = True
        near_in[right, split_of[left]] = True
    for a, name_a in enumerate(names):
        members = np.arange(offsets[a], offsets[a + 1])
        for b, name_b in enumerate(names):
            if a == b:
                exact, near, extra = _within(members, group, near_edges, split_of, a)
                if name_a == "folds":
                    to_drop.setdefault(name_a, set()).update((extra - offsets[a]).tolist())
            else:
                in_b = present[group[members], b]
                nearly = near_in[members, b] & ~in_b
                exact, near = int(in_b.sum()), int(nearly.sum())
                if name_a in TRAINING_SPLITS and name_b not in TRAINING_SPLITS:
                    copies = members[in_b | nearly] - offsets[a]
                    to_drop.setdefault(name_a, set()).update(copies.tolist())
                examples += _examples(name_a, name_b, a, b, offsets, group, members[in_b], members[nearly], near_edges)
            duplicates.append({"split": name_a, "against": name_b, "items": len(members), "exact": exact,
                               "near": near if near_distance is not None else None})

    # A held-out example copied into train and into val counts once.
    training = [i for i, name in enumerate(names) if name in TRAINING_SPLITS]
    in_training = {}
    for a, name in enumerate(names):
        if name not in TRAINING_SPLITS:
            members = np.arange(offsets[a], offsets[a + 1])
            exact = present[group[members]][:, training].any(axis=1)
            near = near_in[members][:, training].any(axis=1) & ~exact
            in_training[name] = (int(exact.sum()), int(near.sum()))

    counts = {name: dict(zip(class_names, np.bincount(np.asarray(part.y), minlength=len(class_names)).tolist()))
              for name, part in zip(names, parts)}
    conflicts = _label_conflicts(group, labels, split_of, offsets, names, class_names)
    return DataChecks(kind, dict(zip(names, sizes.tolist())), tuple(n for n in names if n not in TRAINING_SPLITS), near_distance,
                      near_difference if near_distance is not None else None, counts, duplicates, conflicts, in_training, examples,
                      time.perf_counter() - started, _to_drop={k: np.array(sorted(v), dtype=np.int64) for k, v in to_drop.items()})


def _thumbnails_within(thumbnails: np.ndarray, left: np.ndarray, right: np.ndarray, limit: float) -> np.ndarray:
    """Whether each pair's 32x32 thumbnails differ by at most `limit` grey levels, root mean square.
    RMS, not the mean: re-encoding spreads small errors everywhere, while two different pictures
    differ a lot in a few places (two thin MNIST 1s: a mean difference under 2, RMS over 11).
    The 4x4 block means first: their mean absolute difference is a lower bound of the pixels'
    (triangle inequality), itself a lower bound of the RMS, so most pairs are ruled out on 64
    numbers instead of 1,024."""
    blocks = thumbnails.reshape(len(thumbnails), 8, 4, 8, 4).mean(axis=(2, 4), dtype=np.float32).reshape(len(thumbnails), 64)
    close = np.zeros(len(left), dtype=bool)
    for start in range(0, len(left), 65536):
        i, j = left[start : start + 65536], right[start : start + 65536]
        maybe = np.flatnonzero(np.abs(blocks[i] - blocks[j]).mean(axis=1) <= limit + 1e-3)
        difference = thumbnails[i[maybe]].astype(np.float32) - thumbnails[j[maybe]]
        close[start + maybe] = np.sqrt(np.mean(difference * difference, axis=(1, 2))) <= limit
    return close


def _within(members, group, near_edges, split_of, split) -> tuple[int, int, np.ndarray]:
    """(exact extra copies, near extra copies, the examples beyond the first of each group) in
    one split: connected components over exact and near links, so that a chain of near copies
    counts as one picture."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not len(members):
        return 0, 0, members
    local = group[members]
    exact_groups = len(np.unique(local))
    exact = len(members) - exact_groups
    first = members[0] if len(members) else 0
    rows, cols = [np.arange(len(members))], [np.searchsorted(np.unique(local), local) + len(members)]
    if near_edges is not None:
        left, right, _ = near_edges
        inside = (split_of[left] == split) & (split_of[right] == split)
        rows.append(left[inside] - first)
        cols.append(right[inside] - first)
    # Examples and exact groups as one graph: example i -- its group node, and near links between examples.
    size = len(members) + exact_groups
    graph = coo_matrix((np.ones(sum(len(r) for r in rows)), (np.concatenate(rows), np.concatenate(cols))), shape=(size, size))
    _, component = connected_components(graph, directed=False)
    component = component[: len(members)]
    _, keep = np.unique(component, return_index=True)
    extra = np.setdiff1d(np.arange(len(members)), keep) + first
    both = len(members) - len(keep)
    return exact, both - exact, extra


def _examples(split, against, a, b, offsets, group, exact_members, near_members, near_edges) -> list:
    """A few pairs to look at: the example's index in its split and its copy's in the other."""
    found = []
    if len(exact_members):
        groups_b, first_b = np.unique(group[offsets[b] : offsets[b + 1]], return_index=True)
        for index in exact_members[:EXAMPLES_PER_PAIR]:
            copy = first_b[np.searchsorted(groups_b, group[index])]
            found.append({"split": split, "index": int(index - offsets[a]), "against": against,
                          "index_against": int(copy), "kind": "exact", "distance": 0})
    if near_edges is not None and len(near_members):
        left, right, distance = near_edges
        wanted = near_members[:EXAMPLES_PER_PAIR]
        in_b = lambda index: (index >= offsets[b]) & (index < offsets[b + 1])  # noqa: E731
        for mine, other in ((left, right), (right, left)):
            hits = np.flatnonzero(np.isin(mine, wanted) & in_b(other))
            _, first = np.unique(mine[hits], return_index=True)
            for edge in hits[first]:
                found.append({"split": split, "index": int(mine[edge] - offsets[a]), "against": against,
                              "index_against": int(other[edge] - offsets[b]), "kind": "near", "distance": int(distance[edge])})
    return found


def _label_conflicts(group, labels, split_of, offsets, names, class_names) -> dict:
    """Groups of exact copies whose labels differ: how many, how many examples, and a few of them."""
    pairs = np.unique(np.stack([group, labels]), axis=1)
    groups, label_count = np.unique(pairs[0], return_counts=True)
    conflicting = groups[label_count > 1]
    involved = np.flatnonzero(np.isin(group, conflicting))
    examples = []
    for g in conflicting[:EXAMPLES_PER_PAIR]:
        members = involved[group[involved] == g]
        examples.append([{"split": names[split_of[i]], "index": int(i - offsets[split_of[i]]), "label": class_names[labels[i]]}
                         for i in members[:10]])
    return {"groups": int(len(conflicting)), "items": int(len(involved)), "examples": examples}


# --- hashes ---------------------------------------------------------------------------------


def exact_digests(x) -> np.ndarray:
    """A 16-byte digest per example: BLAKE2b of an image's pixels, or of a row's values."""
    if not isinstance(x, np.ndarray):
        import pandas as pd

        # One 64-bit hash per row over every column's values (NaN equal to NaN), dtype-aware.
        hashed = pd.util.hash_pandas_object(x.reset_index(drop=True), index=False, categorize=True).to_numpy(np.uint64)
        return np.ascontiguousarray(hashed).view("S8")
    flat = x.reshape(len(x), -1)
    return np.array([hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat], dtype="S16")


def phash(images: np.ndarray, batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit perceptual hashes as uint64, the 32x32 grey thumbnails they were computed from).

    The hash is `imagehash.phash`, bit for bit (tests/test_checks.py compares them): PIL's grey
    (luma) conversion, PIL's Lanczos resize to 32x32, a 2-D DCT-II, and the 8x8 lowest
    frequencies compared with their median. The library does it image by image (~20 s for
    70,000 images here); the same integer arithmetic as matrix products over a batch takes
    about a second."""
    height, width = images.shape[1:3]
    batch = batch or int(np.clip(2**27 // (height * width * 8), 1, 8192))  # ~128 MiB of float64 pixels at a time
    rows, cols = _lanczos_matrix(height), _lanczos_matrix(width)
    n = np.arange(32)
    # Unnormalised DCT-II as scipy.fftpack.dct computes it: 2 * sum x[n] cos(pi k (2n + 1) / 2N), k < 8.
    basis = 2 * np.cos(np.pi * np.arange(8)[:, None] * (2 * n[None, :] + 1) / 64)
    weights = np.left_shift(np.uint64(1), np.arange(63, -1, -1, dtype=np.uint64))  # imagehash's bit order
    hashes = np.empty(len(images), dtype=np.uint64)
    thumbnails = np.empty((len(images), 32, 32), dtype=np.uint8)
    for start in range(0, len(images), batch):
        grey = _grey(np.asarray(images[start : start + batch])).astype(np.float64)
        # PIL resizes horizontally first, rounding to 8 bits after each pass; float64 holds its
        # 22-bit fixed-point sums exactly, so BLAS gives the same integers.
        small = _fixed_point(rows @ _fixed_point(grey @ cols.T))
        thumbnails[start : start + batch] = small
        low = (basis @ small @ basis.T).reshape(len(small), 64)
        bits = low > np.median(low, axis=1, keepdims=True)
        hashes[start : start + batch] = (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
    return hashes, thumbnails


_PRECISION_BITS = 22  # Pillow's Resample.c: 32 - 8 - 2


def _lanczos_matrix(size: int, out: int = 32) -> np.ndarray:
    """Pillow's Lanczos (a = 3) coefficients from `size` to `out` pixels as a dense (out, size)
    matrix of its fixed-point integers (`precompute_coeffs` and `normalize_coeffs_8bpc`)."""
    scale = size / out
    filterscale = max(scale, 1.0)
    support = 3.0 * filterscale
    matrix = np.zeros((out, size))
    for xx in range(out):
        center = (xx + 0.5) * scale
        low, high = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), size)
        x = np.arange(low, high)
        weight = np.sinc((x - center + 0.5) / filterscale) * np.sinc((x - center + 0.5) / filterscale / 3)
        weight[np.abs((x - center + 0.5) / filterscale) >= 3] = 0
        total = weight.sum()
        weight = weight / total if total != 0 else weight
        scaled = weight * (1 << _PRECISION_BITS)
        matrix[xx, low:high] = np.where(scaled < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5))
    return matrix


def _fixed_point(sums: np.ndarray) -> np.ndarray:
    """Pillow's rounding of a fixed-point sum back to a pixel: (s + 2**21) >> 22, clipped to 0-255
    (in place: scaling by a power of two is exact in float64)."""
    sums += 1 << (_PRECISION_BITS - 1)
    sums *= 1.0 / (1 << _PRECISION_BITS)
    np.floor(sums, out=sums)
    return np.clip(sums, 0, 255, out=sums)


def _grey(images: np.ndarray) -> np.ndarray:
    """PIL's `convert("L")`: (R * 19595 + G * 38470 + B * 7471 + 2**15) >> 16 of RGB; grey as is.
    Stacked views (CUCUMBER-9 prototype 2, 3k channels): the first photo stands for the example."""
    if images.ndim == 3:
        return images
    if images.shape[-1] == 1:
        return images[..., 0]
    rgb = images[..., :3].astype(np.uint32)
    return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


def near_pairs(hashes: np.ndarray, distance: int, block: int = 4_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Every pair i < j of `hashes` (uint64) within `distance` bits. Equal hashes are collapsed
    first (a data set of small digits has thousands); the distinct ones are searched by
    multi-index hashing: cut the 64 bits into distance + 1 chunks; two hashes within `distance`
    bits agree exactly on at least one chunk, so only hashes sharing a chunk's value are compared."""
    unique, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    left, right = _distinct_pairs(unique, distance, block) if distance else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    # Back to examples: every member of u with every member of v, and the members of one value among themselves.
    order = np.argsort(inverse, kind="stable")
    first = np.r_[0, np.cumsum(counts)[:-1]]
    sizes = counts[left] * counts[right]
    step = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    width = np.repeat(counts[right], sizes)
    i = order[np.repeat(first[left], sizes) + step // width]
    j = order[np.repeat(first[right], sizes) + step % width]
    shared = np.flatnonzero(counts > 1)
    square = counts[shared] ** 2
    step = np.arange(square.sum()) - np.repeat(np.cumsum(square) - square, square)
    width = np.repeat(counts[shared], square)
    a, b = step // width, step % width
    keep = a < b
    base = np.repeat(first[shared], square)
    i, j = np.r_[i, order[(base + a)[keep]]], np.r_[j, order[(base + b)[keep]]]
    return np.minimum(i, j), np.maximum(i, j)


def _distinct_pairs(hashes: np.ndarray, distance: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs u < v of distinct hashes within `distance` (>= 1) bits, `block` candidates at a time."""
    n = len(hashes)
    bounds = np.linspace(0, 64, distance + 2).astype(np.uint64)
    found = []
    for low, high in zip(bounds[:-1], bounds[1:]):
        key = (hashes >> low) & np.uint64((1 << int(high - low)) - 1)
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        run_start = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
        run_end = np.r_[run_start[1:], n]
        partners = np.repeat(run_end, run_end - run_start) - np.arange(n) - 1  # later positions in the same run
        cumulative = np.cumsum(partners)
        start = 0
        while start < n:
            stop = max(int(np.searchsorted(cumulative, (cumulative[start - 1] if start else 0) + block, "right")), start + 1)
            positions = np.arange(start, min(stop, n))
            count = partners[positions]
            origin = np.repeat(positions, count)
            step = np.arange(len(origin)) - np.repeat(np.cumsum(count) - count, count) + 1
            i, j = order[origin], order[origin + step]
            close = np.bitwise_count(hashes[i] ^ hashes[j]) <= distance
            found.append(np.minimum(i[close], j[close]).astype(np.int64) * n + np.maximum(i[close], j[close]))
            start = stop
    pairs = np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)
    return pairs // max(n, 1), pairs % max(n, 1)
