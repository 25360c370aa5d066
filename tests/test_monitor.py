"""The collapse alert in both its forms: diversity lost, and diversity never reached."""

from facegan.monitor import Monitor

REALS = 0.15


def test_generator_that_never_leaves_collapse_is_reported_once_after_patience():
    monitor = Monitor(collapse_patience=2)
    assert monitor.check_diversity(0.97, REALS, 156) == []  # a fresh generator's samples are alike: no alarm yet
    assert monitor.check_diversity(0.51, REALS, 312) == []  # still in the band, but within the patience
    (message,) = monitor.check_diversity(0.98, REALS, 468)
    assert "has not left mode collapse" in message and "0.98 vs 0.15" in message and "--instance-noise" in message
    assert monitor.check_diversity(0.98, REALS, 624) == []  # said once, not every epoch


def test_generator_that_leaves_collapse_in_time_raises_nothing():
    monitor = Monitor(collapse_patience=2)
    assert monitor.check_diversity(0.97, REALS, 156) == []
    assert monitor.check_diversity(0.51, REALS, 312) == []
    assert monitor.check_diversity(0.30, REALS, 468) == []
    assert monitor.check_diversity(0.32, REALS, 624) == []


def test_diversity_lost_after_it_existed_is_still_reported():
    monitor = Monitor(collapse_patience=2)
    assert monitor.check_diversity(0.25, REALS, 100) == []
    assert "losing diversity" in monitor.check_diversity(0.80, REALS, 200)[0]
    # ...and a collapsed generator that was once diverse gets no "never left" message later
    assert all("has not left" not in m for m in monitor.check_diversity(0.85, REALS, 300))
