"""The options tables of README.md and docs/configuration.md list every option the config tree has, so a
new config file cannot ship undocumented."""

from __future__ import annotations

import re

import pytest

from tests.conftest import CONFIG_DIR, REPO_ROOT

README = REPO_ROOT / "README.md"
CONFIGURATION = REPO_ROOT / "docs" / "configuration.md"


def _options() -> dict[str, list[str]]:
    """Config group (``data``, ``hydra/launcher``, ...) -> its option files' names."""
    groups: dict[str, list[str]] = {}
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        group = path.parent.relative_to(CONFIG_DIR).as_posix()
        if group != "." and not group.startswith("local"):
            groups.setdefault(group, []).append(path.stem)
    return groups


def _table_row(text: str, group: str) -> str:
    rows = [line for line in text.splitlines() if line.startswith(f"| `{group}` |")]
    assert len(rows) == 1, f"no single options row for `{group}`"
    return rows[0]


def _listed(row: str) -> set[str]:
    return set(re.findall(r"`([^`=\s]+)`", row))


@pytest.mark.parametrize("group", sorted(_options()))
def test_every_option_is_in_the_configuration_table(group):
    missing = set(_options()[group]) - _listed(_table_row(CONFIGURATION.read_text(), group))
    assert not missing, f"docs/configuration.md's row for `{group}` does not list: {sorted(missing)}"


@pytest.mark.parametrize("group", sorted(g for g in _options() if "/" not in g))
def test_every_option_is_in_the_readme_table(group):
    options = set(_options()[group])
    if group == "callbacks":  # the README names the compositions; one file per callback is in the docs
        options = {"default", "minimal", "none"}
    missing = options - _listed(_table_row(README.read_text(), group))
    assert not missing, f"README.md's row for `{group}` does not list: {sorted(missing)}"
