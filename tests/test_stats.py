"""edgecifar.stats against worked textbook values: Wilson intervals (Newcombe 1998, Table I, method 3), the exact
McNemar test (Fagerland, Lydersen & Laake 2013's worked example), the paired difference of proportions (Agresti,
Categorical Data Analysis, 2nd ed., section 10.1: presidential approval ratings), Welch's t (the worked example
of Welch's test with 15 + 15 observations, t = -2.46, df = 24.99, p = 0.021); and the per-image store."""

from __future__ import annotations

import numpy as np
import pytest

from edgecifar import stats
from edgecifar.records import BenchRow


def bench_row(figures: dict) -> BenchRow:
    """A bench row holding `figures` (the keys a row names itself by, made up)."""
    return BenchRow.from_json({"model": "m", "variant": "v", "threads": 1, **figures})


@pytest.mark.parametrize(
    "x, n, low, high",
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_interval_matches_newcombe(x, n, low, high):
    got = stats.wilson_interval(x, n)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_wilson_interval_is_the_score_formula():
    """The closed form (Wilson 1927) at z = 1.959964, for a bench-sized count."""
    x, n, z = 9022, 10_000, 1.959963984540054
    p = x / n
    centre, half = (
        (p + z * z / (2 * n)) / (1 + z * z / n),
        z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)),
    )
    assert stats.wilson_interval(x, n) == pytest.approx((centre - half, centre + half), abs=1e-9)
    with pytest.raises(ValueError):
        stats.wilson_interval(3, 0)


def test_exact_mcnemar_matches_fagerland():
    # Fagerland et al. 2013: b = 1, c = 7 -> exact conditional p = 0.070 (= 2 * 9 / 256)
    assert stats.mcnemar_exact(1, 7) == pytest.approx(2 * 9 / 256)
    assert stats.mcnemar_exact(7, 1) == stats.mcnemar_exact(1, 7)
    assert stats.mcnemar_exact(0, 0) == 1.0 and stats.mcnemar_exact(5, 5) == 1.0
    # issue 27's figures: 517 against 493 discordant images
    assert stats.mcnemar_exact(517, 493) == pytest.approx(0.469, abs=0.001)


def test_paired_interval_matches_agresti():
    # Agresti (CDA 2nd ed., 10.1): 1,600 people, approve/approve 794, approve/disapprove 150, the reverse 86;
    # difference -0.04 with 95 % interval (-0.059, -0.021)
    low, high = stats.paired_bootstrap_interval(86, 150, 1600)
    assert low == pytest.approx(-0.059, abs=0.0015) and high == pytest.approx(-0.021, abs=0.0015)
    assert stats.paired_bootstrap_interval(86, 150, 1600) == (low, high)  # seeded


def test_identical_vectors_give_p_one_and_a_zero_width_interval():
    hits = np.random.default_rng(1).random(500) < 0.8
    found = stats.paired_comparison(hits, hits.copy())
    assert found.p_value == 1.0 and found.interval == (0.0, 0.0) and found.difference == 0.0
    assert (found.b, found.c) == (0, 0) and found.correct_a == found.correct_b == int(hits.sum())


def test_paired_comparison_counts_the_discordant_images():
    a = np.array([1, 1, 1, 0, 0, 1, 0, 1], dtype=bool)
    b = np.array([1, 0, 0, 1, 0, 1, 0, 0], dtype=bool)
    found = stats.paired_comparison(a, b)
    assert (found.b, found.c, found.n) == (3, 1, 8) and found.difference == pytest.approx(2 / 8)
    assert found.accuracy_a == 5 / 8 and found.accuracy_b == 3 / 8
    assert found.interval[0] <= found.difference <= found.interval[1]
    with pytest.raises(ValueError):
        stats.paired_comparison(a, b[:-1])


def test_welch_matches_the_worked_example():
    a1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    a2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    found = stats.welch_comparison(a1, a2)
    assert found.df == pytest.approx(24.99, abs=0.01) and found.p_value == pytest.approx(0.021, abs=0.0005)
    t = found.difference / np.sqrt(np.var(a1, ddof=1) / 15 + np.var(a2, ddof=1) / 15)
    assert t == pytest.approx(-2.46, abs=0.005)
    low, high = found.interval
    assert low < found.difference < high < 0  # the interval excludes 0 exactly when p < 0.05
    with pytest.raises(ValueError, match="at least 2 runs"):
        stats.welch_comparison([0.9], [0.8, 0.81])


@pytest.mark.parametrize("n", [1, 7, 8, 9, 10_000])
def test_per_image_store_round_trips(n):
    hits = np.random.default_rng(n).random(n) < 0.5
    text = stats.pack_hits(hits)
    assert np.array_equal(stats.unpack_hits(text, n), hits)
    record = stats.per_image_record(hits, "abc")
    row = bench_row({"correct": int(hits.sum()), stats.PER_IMAGE: record})
    fingerprint, back = stats.row_hits(row)
    assert fingerprint == "abc" and np.array_equal(back, hits)
    assert len(text) <= 4 * ((n + 7) // 8 + 2) // 3 + 4  # packed bits: 1,668 characters for 10,000 images


def test_damaged_per_image_results_are_not_used():
    hits = np.ones(16, dtype=bool)
    record = stats.per_image_record(hits, "abc")
    assert stats.row_hits(bench_row({"per_image": {**record, "images": 40}})) is None  # not that many bits
    assert stats.row_hits(bench_row({"per_image": {**record, "correct": "not base64!"}})) is None
    assert stats.row_hits(bench_row({"correct": 3, "per_image": record})) is None  # the count disagrees with the bits
    assert stats.row_hits(bench_row({"accuracy": 0.9})) is None  # an older bench row
    with pytest.raises(ValueError):
        stats.unpack_hits(stats.pack_hits(hits), 30)


def test_fingerprint_names_images_labels_order_and_classes():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (6, 4, 4, 3), dtype=np.uint8), np.array([0, 1, 2, 0, 1, 2])
    base = stats.test_set_fingerprint(y, x, ["a", "b", "c"])
    assert base == stats.test_set_fingerprint(y.copy(), x.copy(), ["a", "b", "c"])
    other = x.copy()
    other[0, 0, 0, 0] ^= 1
    assert (
        len(
            {
                base,
                stats.test_set_fingerprint(y, other, ["a", "b", "c"]),  # one pixel
                stats.test_set_fingerprint(y[::-1], x[::-1], ["a", "b", "c"]),  # the order
                stats.test_set_fingerprint(y, x, ["a", "b", "d"]),
            }
        )
        == 4
    )  # a class name


def test_latency_ratio_and_what_may_be_called_faster():
    fast, slow = [1.0, 1.1, 0.9, 1.05, 1.0], [2.0, 2.1, 1.9, 2.2, 2.0]
    ratio, low, high = stats.latency_ratio(fast, slow)
    assert ratio == pytest.approx(0.5) and low <= ratio <= high < 1
    assert stats.speed_text(bench_row({"latency_trial_p50_ms": fast}), bench_row({"latency_trial_p50_ms": slow})) == (
        "2.0x faster"
    )
    overlapping = [1.0, 1.3, 0.8, 1.2, 0.9]
    text = stats.speed_text(bench_row({"latency_trial_p50_ms": fast}), bench_row({"latency_trial_p50_ms": overlapping}))
    assert text.startswith("as fast (p50 ratio")
    # an older bench: one figure each, said as such
    one = stats.speed_text(bench_row({"latency_p50_ms": 1.0}), bench_row({"latency_p50_ms": 2.0}))
    assert one == "2.0x faster on one measurement each"
    assert stats.spread([3.0, 1.0, 2.0]) == (2.0, 1.0, 3.0)
