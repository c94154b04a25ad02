"""Config helpers: where the configs live, printing the composed tree, saving it in the run dir."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gdlab.schema import register_schemas

# conf/ sits at the repository root, two levels above this package (src/gdlab/).
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
# conf/train.yaml's defaults start with the schema (gdlab.schema): it must be stored before any compose.
register_schemas()


def config_tree(cfg: DictConfig) -> str:
    """The composed config as YAML, groups first in the order a reader scans them."""
    order = ["data", "model", "loss", "optimizer", "trainer", "callbacks", "logger", "paths"]
    resolved = OmegaConf.to_container(cfg, resolve=True)
    keys = [k for k in order if k in resolved] + [k for k in resolved if k not in order]
    return OmegaConf.to_yaml({k: resolved[k] for k in keys}, sort_keys=False)


def print_config(cfg: DictConfig) -> None:
    """Print the composed config as a syntax-highlighted YAML tree (plain text without a terminal)."""
    from rich.console import Console
    from rich.syntax import Syntax

    Console().print(Syntax(config_tree(cfg), "yaml", theme="ansi_dark", background_color="default"))


def save_config(cfg: DictConfig, output_dir: str | Path) -> Path:
    """Save the resolved config as ``config.yaml`` in the run dir (Hydra's .hydra/ keeps the raw one)."""
    path = Path(output_dir) / "config.yaml"
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0:  # DDP: rank 0 writes the job's files
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path
