"""The worker's collector settings: applied once per process, whoever calls first."""
import gc

from transforms import gc_tuning


def test_tune_gc_sets_the_thresholds_once():
    gc_tuning.tune_gc()
    assert gc.get_threshold() == gc_tuning.GC_THRESHOLDS
    assert gc.get_freeze_count() > 0  # what was alive at the first call is out of the collector's sight
    gc.set_threshold(700, 10, 10)
    gc_tuning.tune_gc()  # a second DoFn's setup in the same process changes nothing
    assert gc.get_threshold() == (700, 10, 10)
    gc.set_threshold(*gc_tuning.GC_THRESHOLDS)
