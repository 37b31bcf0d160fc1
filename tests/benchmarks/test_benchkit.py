"""benchkit's comparisons: sides alternate, blocks taken under load are discarded or flagged, speed-ups are p50s.

No timing is asserted: the load meter and the idle wait are fakes, the sides record their calls.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks import benchkit


class FakeMeter:
    """Reports the next of a sequence of other processes' CPU shares, one per block."""

    def __init__(self, shares: Iterator[float]) -> None:
        self.value = next(shares)

    def share(self) -> float:
        return self.value


def recorder(calls: list[str], name: str):
    def side() -> str:
        calls.append(name)
        return name

    return side


def compare(shares: list[float], rounds: int = 4, block_rounds: int = 2, **policy: float) -> tuple:
    calls: list[str] = []
    waits: list[benchkit.LoadPolicy] = []
    sequence = iter(shares)
    comparison = benchkit.alternate(
        {"a": recorder(calls, "a"), "b": recorder(calls, "b")},
        rounds,
        warmup=1,
        block_rounds=block_rounds,
        policy=benchkit.LoadPolicy(**policy),
        meter=lambda: FakeMeter(sequence),
        wait=waits.append,
    )
    return comparison, calls, waits


def test_the_sides_alternate_call_by_call_after_the_warm_up() -> None:
    comparison, calls, waits = compare([0.0, 0.0])

    assert calls == ["a", "b"] * 5  # one warm-up round, then four measured rounds
    assert comparison.order == ["a", "b"] * 4
    assert comparison.results == {"a": ["a"] * 4, "b": ["b"] * 4}
    assert [len(comparison.samples[name]) for name in "ab"] == [4, 4]
    assert len(waits) == 2  # the idle wait runs before each block


def test_a_block_under_load_is_discarded_and_measured_again() -> None:
    comparison, _, waits = compare([0.05, 0.5, 0.02], max_other_share=0.1)

    assert [(block.kept, block.loaded) for block in comparison.blocks] == [(True, False), (False, True), (True, False)]
    assert len(comparison.order) == 12  # three blocks of two rounds of two sides
    assert [len(comparison.samples[name]) for name in "ab"] == [4, 4]  # only the kept blocks' samples
    assert len(waits) == 3
    assert not comparison.under_load
    assert "2 blocks kept, 1 discarded for load" in comparison.load_note()
    assert "others at most 5% in a kept block" in comparison.load_note()


def test_a_comparison_always_under_load_is_kept_and_flagged_once_the_budget_runs_out() -> None:
    comparison, _, _ = compare([0.9] * 10, max_other_share=0.1, retries=1.0)

    kept = [block.kept for block in comparison.blocks]
    assert kept == [False, False, True, True]  # two blocks needed, at least two discards allowed
    assert comparison.under_load
    assert "UNDER LOAD" in comparison.load_note()


def test_an_unknown_load_keeps_the_block_unflagged() -> None:
    comparison, _, _ = compare([None, None])

    assert [block.kept for block in comparison.blocks] == [True, True]
    assert not comparison.under_load


def test_the_speed_up_is_the_ratio_of_p50s_not_of_mean_rates() -> None:
    comparison = benchkit.Comparison(
        samples={"naive": [1.0, 2.0, 3.0, 100.0], "fast": [0.5, 1.0, 1.5]}, results={"naive": [], "fast": []}
    )

    assert comparison.p50("naive") == 2.5
    assert comparison.speedup("fast", "naive") == pytest.approx(2.5)  # mean rates would say 26.5x
    assert benchkit.speedup(30.0, 10.0) == pytest.approx(3.0)


def test_percentiles_interpolate_between_ranks() -> None:
    assert benchkit.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert benchkit.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95) == pytest.approx(4.8)
    assert benchkit.percentile([7.0], 95) == 7.0


def test_train_py_epochs_include_the_checkpoint_write_from_the_metric_lines_arrivals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(benchkit.REPO / "benchmarks"))  # the scripts import benchkit by bare name
    from bench_training import add_full_epochs

    rows = [{"epoch_seconds": 2.0}, {"epoch_seconds": 2.0}, {"epoch_seconds": 2.5}]
    add_full_epochs(rows, [10.0, 12.5, 15.0])  # seconds at which each epoch's metric line arrived

    assert [row["checkpoint_seconds"] for row in rows] == [0.25, 0.5, 0.0]  # the first: the median of the others
    assert [row["full_seconds"] for row in rows] == [2.25, 2.5, 2.5]  # the first: its own plus that median
