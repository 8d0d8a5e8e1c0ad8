"""The progress lines of long steps: counts, rate, ETA, throttled by a (fake, injected) clock."""

from connectome_assets.progress import Progress, duration, si


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_si_and_duration_read_as_a_person_writes_them():
    assert [si(v) for v in (0, 812, 1_500, 44_012_345, 151_900_000, 3.2e9, 0.5)] == ["0", "812", "1.50 k", "44.0 M", "152 M", "3.20 G", "0.50"]
    assert [duration(s) for s in (0, 21.4, 245, 7380)] == ["0 s", "21 s", "4 min 05 s", "2 h 03 min"]


def test_lines_are_throttled_and_the_eta_comes_from_the_known_total():
    clock, lines = Clock(), []
    progress = Progress("synapses", lines.append, total=1_000_000, every_seconds=10, clock=clock)
    clock.now += 4
    progress.advance(100_000)
    assert lines == []  # not yet 10 s since the start
    clock.now += 6
    progress.advance(150_000)
    assert lines == ["synapses: 2 batches, 250 k of 1.00 M rows (25%), 25.0 k rows/s, ETA 30 s"]
    clock.now += 5
    progress.advance(250_000)
    assert len(lines) == 1
    clock.now += 5
    summary = progress.finish()
    assert lines[-1] == "synapses: done, 3 batches, 500 k rows in 20 s, 25.0 k rows/s"
    assert summary == {"rows": 500_000, "batches": 3, "seconds": 20.0, "rows_per_second": 25000.0}


def test_without_an_amount_total_the_eta_comes_from_the_steps():
    clock, lines = Clock(), []
    progress = Progress("s3", lines.append, unit="voxels", step="shards", steps_total=8, every_seconds=0, clock=clock)
    clock.now += 30
    progress.advance(2**27, steps=2)
    assert lines == ["s3: 2/8 shards, 134 M voxels, 4.47 M voxels/s, ETA 1 min 30 s"]


def test_an_unknown_total_gives_no_eta():
    clock, lines = Clock(), []
    progress = Progress("exports", lines.append, every_seconds=0, clock=clock)
    clock.now += 2
    progress.advance(10)
    assert lines == ["exports: 1 batches, 10 rows, 5 rows/s"]
