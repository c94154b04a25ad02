"""The default no-op profiler stays out of the way, and a real profiler is still one override away."""

from hydra.utils import instantiate
from lightning.pytorch.profilers import SimpleProfiler

from gdlab.profiler import NoProfiler


def _profiler(cfg_factory, *overrides):
    return instantiate(cfg_factory("trainer=cpu", *overrides).trainer, logger=False).profiler


def test_default_trainer_uses_the_free_profiler_and_it_nests(cfg_factory):
    profiler = _profiler(cfg_factory)
    assert isinstance(profiler, NoProfiler)
    seen = []
    with profiler.profile("run_training_epoch") as outer, profiler.profile("training_step") as inner:
        seen.append((outer, inner))
    assert seen == [(None, None)] and profiler.summary() == ""


def test_a_real_profiler_replaces_it(cfg_factory, tmp_path):
    assert isinstance(_profiler(cfg_factory, "debug=profiler"), SimpleProfiler)
    assert isinstance(_profiler(cfg_factory, "trainer.profiler=simple"), SimpleProfiler)
