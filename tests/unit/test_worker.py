"""The worker's collector settings: applied once per process, whoever calls first."""
import gc

from transforms import worker


def test_tune_gc_sets_the_thresholds_once():
    worker.tune_gc()
    assert gc.get_threshold() == worker.GC_THRESHOLDS
    assert gc.get_freeze_count() > 0  # what was alive at the first call is out of the collector's sight
    gc.set_threshold(700, 10, 10)
    worker.tune_gc()  # a second DoFn's setup in the same process changes nothing
    assert gc.get_threshold() == (700, 10, 10)
    gc.set_threshold(*worker.GC_THRESHOLDS)
