"""The statistics behind every verdict: how sure a figure is, and whether two figures differ.

Pure numpy + scipy (no torch, no runtime): the bench, `compare`, `recommend`, the pipeline's verdict and the seed
summaries all call these, and docs/statistics.md says what each figure means.

- One file's top-1: the Wilson score interval of a binomial proportion (Wilson 1927), which keeps its coverage
  near the nominal level where the Wald interval does not (Newcombe 1998; Agresti & Coull 1998).
- Two files on the same test images: the exact McNemar test (McNemar 1947), i.e. a two-sided binomial test of the
  discordant pairs b against c with p = 0.5 (the exact conditional form, Edwards 1948; Fagerland, Lydersen &
  Laake 2013), and a paired bootstrap percentile interval of the difference in accuracy (Efron & Tibshirani
  1993, ch. 13), resampling images, so that both files always see the same resampled images.
- Per-image results travel as a packed bit array (1 = right) with the test set's fingerprint: two results can
  be paired only when their fingerprints are equal.
- Two models over training seeds: the difference of the mean accuracies with Welch's interval (Welch 1947),
  which does not assume equal variances.
- Latency over independent trials: the median of the trial medians with its min-max, and the ratio of two
  files' latencies with a bootstrap interval over trials; "faster" only where that interval excludes 1.
"""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .records import BenchRow

CONFIDENCE = 0.95
ALPHA = 0.05  # the significance level of every "tied / different" decision unless an option says otherwise
RESAMPLES = 10_000
ENCODING = "packbits-base64"  # per_image["correct"]: np.packbits of the hit vector (big-endian bits), base64
PER_IMAGE = "per_image"  # the bench row's field


# ---------------------------------------------------------------- one proportion


def wilson_interval(correct: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval (Wilson 1927; no continuity correction) of `correct` successes in `n` trials,
    as fractions in [0, 1]. Computed by scipy.stats.binomtest(...).proportion_ci(method="wilson").
    Raises ValueError for n < 1 or correct outside [0, n]."""
    from scipy.stats import binomtest

    if n < 1 or not 0 <= correct <= n:
        raise ValueError(f"a proportion needs 0 <= correct <= n and n >= 1, got {correct} of {n}")
    ci = binomtest(int(correct), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


# ---------------------------------------------------------------- two files, the same images


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value (McNemar 1947; exact conditional form, Edwards 1948 / Fagerland et al.
    2013): b and c are the discordant counts (A right and B wrong; B right and A wrong); under "same accuracy"
    b ~ Binomial(b + c, 1/2). 1.0 when there are no discordant pairs."""
    from scipy.stats import binomtest

    if b < 0 or c < 0:
        raise ValueError(f"discordant counts are not negative, got {b}, {c}")
    if b + c == 0:
        return 1.0
    return float(binomtest(int(b), int(b + c), 0.5, alternative="two-sided").pvalue)


def paired_bootstrap_interval(
    b: int, c: int, n: int, confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval (Efron & Tibshirani 1993, ch. 13) of accuracy(A) - accuracy(B), as a
    fraction, resampling the n paired test images with replacement.

    Only the discordant images move the difference, so a resample of n images is drawn as its multinomial
    counts of (A-only right, B-only right, the rest) with probabilities (b/n, c/n, 1 - (b+c)/n): the same
    distribution as drawing n image indices, at a cost independent of n. Seeded: the same inputs give the same
    interval. Zero width when b = c = 0."""
    if n < 1 or b < 0 or c < 0 or b + c > n:
        raise ValueError(f"need 0 <= b + c <= n and n >= 1, got b={b}, c={c}, n={n}")
    if b + c == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    p = np.array([b / n, c / n, 0.0])
    p[2] = max(0.0, 1.0 - p[0] - p[1])
    draws = rng.multinomial(n, p / p.sum(), size=resamples)
    diffs = (draws[:, 0] - draws[:, 1]) / n
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedComparison:
    """Two result vectors over the same n test images. Accuracies and the difference are fractions (A - B)."""

    n: int
    correct_a: int
    correct_b: int
    b: int  # A right, B wrong
    c: int  # B right, A wrong
    p_value: float  # exact McNemar, two-sided
    interval: tuple[float, float]  # paired bootstrap interval of the difference
    confidence: float = CONFIDENCE

    @property
    def accuracy_a(self) -> float:
        return self.correct_a / self.n

    @property
    def accuracy_b(self) -> float:
        return self.correct_b / self.n

    @property
    def difference(self) -> float:
        return (self.b - self.c) / self.n

    def significant(self, alpha: float = ALPHA) -> bool:
        return self.p_value < alpha

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.n,
            "correct_a": self.correct_a,
            "correct_b": self.correct_b,
            "accuracy_a": self.accuracy_a,
            "accuracy_b": self.accuracy_b,
            "a_only": self.b,
            "b_only": self.c,
            "p_value": self.p_value,
            "difference": self.difference,
            "interval": list(self.interval),
            "confidence": self.confidence,
            "test": "exact McNemar",
            "interval_method": "paired bootstrap",
        }


def paired_comparison(
    hits_a: np.ndarray, hits_b: np.ndarray, confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0
) -> PairedComparison:
    """Compare two boolean hit vectors over the same images (same length, same order). ValueError if their
    lengths differ or they are empty."""
    a, b_ = np.asarray(hits_a, dtype=bool), np.asarray(hits_b, dtype=bool)
    if a.shape != b_.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"two result vectors of one length are needed, got {a.shape} and {b_.shape}")
    b, c = int(np.sum(a & ~b_)), int(np.sum(~a & b_))
    return PairedComparison(
        n=len(a),
        correct_a=int(a.sum()),
        correct_b=int(b_.sum()),
        b=b,
        c=c,
        p_value=mcnemar_exact(b, c),
        interval=paired_bootstrap_interval(b, c, len(a), confidence, resamples, seed),
        confidence=confidence,
    )


# ---------------------------------------------------------------- per-image results


def pack_hits(hits: np.ndarray) -> str:
    """A boolean hit vector -> compact text (np.packbits, base64): 1,250 bytes of bits for 10,000 images."""
    return base64.b64encode(np.packbits(np.asarray(hits, dtype=bool)).tobytes()).decode("ascii")


def unpack_hits(text: str, n: int) -> np.ndarray:
    """pack_hits' text -> the boolean vector of length n. ValueError if the text is not n packed bits."""
    try:
        raw = np.frombuffer(base64.b64decode(text.encode("ascii"), validate=True), dtype=np.uint8)
    except (ValueError, AttributeError, UnicodeEncodeError) as e:
        raise ValueError(f"per-image results are not {ENCODING} text ({e})") from None
    if len(raw) != (n + 7) // 8:
        raise ValueError(f"per-image results hold {8 * len(raw)} bits, not the {n} images they name")
    return np.unpackbits(raw, count=n).astype(bool)


def test_set_fingerprint(labels: np.ndarray, images: np.ndarray | None = None, classes: Sequence[str] = ()) -> str:
    """The identity of an ordered test set: sha256 over its class names, its labels in order and its decoded
    images (uint8, in order), 16 hex digits. Two results can be paired only on equal fingerprints: the same
    images, decoded at the same size, in the same order, with the same labels."""
    digest = hashlib.sha256("\n".join(classes).encode())
    y = np.ascontiguousarray(np.asarray(labels, dtype=np.int64))
    digest.update(f"{len(y)}:".encode() + y.tobytes())
    if images is not None:
        x = np.ascontiguousarray(images)
        digest.update(f"{x.dtype}:{x.shape}:".encode())
        digest.update(memoryview(x).cast("B"))
    return digest.hexdigest()[:16]


def per_image_record(hits: np.ndarray, test_set: str) -> dict[str, Any]:
    """What a bench row keeps of its accuracy pass: {"test_set", "images", "encoding", "correct"}."""
    hits = np.asarray(hits, dtype=bool)
    return {"test_set": test_set, "images": int(len(hits)), "encoding": ENCODING, "correct": pack_hits(hits)}


def row_hits(row: BenchRow) -> tuple[str, np.ndarray] | None:
    """(test-set fingerprint, hit vector) of a bench row, or None when the row has no (readable) per-image
    results (a bench file written before they were kept, or a row without an accuracy pass)."""
    record = row.per_image
    if not isinstance(record, Mapping) or record.get("encoding") != ENCODING:
        return None
    try:
        n = int(record["images"])
        hits = unpack_hits(str(record["correct"]), n)
    except (KeyError, TypeError, ValueError):
        return None
    if isinstance(row.correct, int) and int(hits.sum()) != row.correct:
        return None  # the bits and the count disagree: trust neither as a pair
    return str(record.get("test_set")), hits


# ---------------------------------------------------------------- two models over training seeds


@dataclass(frozen=True)
class WelchComparison:
    """Mean accuracy of A's runs minus B's (fractions), with Welch's interval and two-sided p-value."""

    mean_a: float
    mean_b: float
    sd_a: float
    sd_b: float
    n_a: int
    n_b: int
    df: float
    p_value: float
    interval: tuple[float, float]
    confidence: float = CONFIDENCE

    @property
    def difference(self) -> float:
        return self.mean_a - self.mean_b

    def as_dict(self) -> dict[str, Any]:
        return {
            "mean_a": self.mean_a,
            "mean_b": self.mean_b,
            "sd_a": self.sd_a,
            "sd_b": self.sd_b,
            "runs_a": self.n_a,
            "runs_b": self.n_b,
            "difference": self.difference,
            "df": self.df,
            "p_value": self.p_value,
            "interval": list(self.interval),
            "confidence": self.confidence,
            "test": "Welch's t",
        }


def welch_comparison(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> WelchComparison:
    """Welch's t (Welch 1947) on two samples of per-run accuracies: the difference of the means with its
    interval, mean difference +- t(df, 1 - (1 - confidence)/2) * sqrt(s_a^2/n_a + s_b^2/n_b), df by
    Welch-Satterthwaite; p from scipy.stats.ttest_ind(equal_var=False). ValueError with fewer than 2 runs a side
    (no variance to estimate). Zero spread on both sides gives a zero-width interval (p 1 on equal means)."""
    from scipy.stats import t as student_t, ttest_ind

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"Welch's interval needs at least 2 runs of each model, got {len(x)} and {len(y)}")
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    diff = float(x.mean() - y.mean())
    se = math.sqrt(va + vb)
    if se == 0.0:
        return WelchComparison(
            float(x.mean()),
            float(y.mean()),
            0.0,
            0.0,
            len(x),
            len(y),
            float("nan"),
            1.0 if diff == 0 else 0.0,
            (diff, diff),
            confidence,
        )
    df = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1))
    half = float(student_t.ppf(1 - (1 - confidence) / 2, df)) * se
    p = float(ttest_ind(x, y, equal_var=False).pvalue)
    return WelchComparison(
        float(x.mean()),
        float(y.mean()),
        float(x.std(ddof=1)),
        float(y.std(ddof=1)),
        len(x),
        len(y),
        float(df),
        p,
        (diff - half, diff + half),
        confidence,
    )


# ---------------------------------------------------------------- latency over trials


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max) of per-trial figures."""
    v = np.asarray(values, dtype=float)
    return float(np.median(v)), float(v.min()), float(v.max())


def latency_ratio(
    trials_a: Sequence[float],
    trials_b: Sequence[float],
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(ratio, low, high): median(A's trial latencies) / median(B's), with a percentile bootstrap interval
    (Efron & Tibshirani 1993) resampling each file's trials independently. With one trial a side the interval
    is the ratio itself (no spread measured: callers must not call it a difference)."""
    a, b = np.asarray(trials_a, dtype=float), np.asarray(trials_b, dtype=float)
    if len(a) == 0 or len(b) == 0 or np.any(a <= 0) or np.any(b <= 0):
        raise ValueError("latency trials must be positive and non-empty")
    ratio = float(np.median(a) / np.median(b))
    if len(a) == 1 and len(b) == 1:
        return ratio, ratio, ratio
    rng = np.random.default_rng(seed)
    ra = np.median(rng.choice(a, size=(resamples, len(a))), axis=1)
    rb = np.median(rng.choice(b, size=(resamples, len(b))), axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(ra / rb, [tail, 100 - tail])
    return ratio, float(low), float(high)


def trials_of(row: BenchRow, percentile: str = "p50") -> list[float]:
    """A bench row's per-trial latencies at `percentile` (ms), or its single figure for a row written before
    trials were kept, or [] when it has none."""
    trials = row.latency_trials_at(percentile)
    if isinstance(trials, list) and trials and all(isinstance(t, (int, float)) and t > 0 for t in trials):
        return [float(t) for t in trials]
    single = row.latency(percentile)
    return [float(single)] if isinstance(single, (int, float)) and single > 0 else []


def speed_text(fast: BenchRow, slow: BenchRow, percentile: str = "p50") -> str:
    """How `fast`'s latency compares with `slow`'s, said only as far as the trials support it: "1.8x faster"
    where the ratio's interval excludes 1, "1.8x faster on one measurement each" without trials, and "as fast
    (ratio 0.95x, 95 % interval 0.90-1.02)" where the interval includes 1."""
    a, b = trials_of(fast, percentile), trials_of(slow, percentile)
    if not a or not b:
        return "latency not measured"
    ratio, low, high = latency_ratio(b, a)  # slow / fast: > 1 means `fast` is faster
    if len(a) == 1 and len(b) == 1:
        word = "faster" if ratio >= 1 else "slower"
        return f"{max(ratio, 1 / ratio):.1f}x {word} on one measurement each"
    if low > 1:
        return f"{ratio:.1f}x faster"
    if high < 1:
        return f"{1 / ratio:.1f}x slower"
    return f"as fast ({percentile} ratio {ratio:.2f}x, {100 * CONFIDENCE:.0f} % interval {low:.2f}-{high:.2f})"


def busy_note(loads: Sequence[float | None], cores: int | None) -> str | None:
    """A note for the header when the CPU was busy with other work while the bench ran (a 1-minute load average
    above the cores available, at its start or end): its latencies are then the contention's as much as the
    files'. None on a quiet machine, or where the load is not known."""
    known = [x for x in loads if x is not None]
    if not known or not cores or max(known) <= cores:
        return None
    return (
        f"the CPU was busy while this bench ran (load average up to {max(known):g} on {cores} cores): its "
        f"latencies are contended, read them as such; accuracy is not affected"
    )
