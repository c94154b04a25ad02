"""src/hydra_plugins/gdlab_plugins: without the sweep extra, each optional plugin's option is a stand-in whose
only job is to say which package to install; with it, the real plugins stay untouched."""

from __future__ import annotations

import pytest
from hydra.core.config_store import ConfigStore
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gdlab.errors import ConfigError
from hydra_plugins import gdlab_plugins


def test_each_missing_plugin_gets_a_stand_in_that_names_the_package_to_install(monkeypatch):
    stored = {}
    monkeypatch.setattr(  # Hydra's config store is global: record what would be stored, store nothing
        ConfigStore.instance(),
        "store",
        lambda group, name, node, provider: stored.update({(group, name): node}),
    )
    registered = gdlab_plugins.register_missing_plugins(is_installed=lambda module: False)
    assert sorted(registered) == sorted(gdlab_plugins.OPTIONAL_PLUGINS) == sorted(stored)
    for (group, option), (_module, distribution) in gdlab_plugins.OPTIONAL_PLUGINS.items():
        with pytest.raises(InstantiationException) as info:  # as Hydra builds a launcher or sweeper
            instantiate(OmegaConf.create(stored[(group, option)]))
        error = info.value.__cause__
        assert isinstance(error, ConfigError), repr(error)
        assert str(error) == gdlab_plugins.missing_plugin_message(group, option, distribution)
        assert f"`pip install {distribution}`" in str(error) and "pip install -e '.[sweep]'" in str(error)


def test_installed_plugins_are_left_alone(monkeypatch):
    stored = []
    monkeypatch.setattr(ConfigStore.instance(), "store", lambda **node: stored.append(node))
    assert (
        gdlab_plugins.register_missing_plugins() == [] and stored == []
    )  # the sweep extra is installed here
    registered = gdlab_plugins.register_missing_plugins(
        is_installed=lambda module: module != "hydra_joblib_launcher"
    )
    assert registered == [("hydra/launcher", "joblib")] and len(stored) == 1
