"""``python eval.py ckpt_path=<file>``: a checkpoint's test metrics, and its predictions as CSV.

Data, model and loss are rebuilt from the run config the checkpoint carries
(``hyper_parameters["config"]``), so a checkpoint is all it needs; ``data=<option>`` or
``model=<option>`` on the command line replace those parts. The weights and the datamodule's state
(e.g. standardisation statistics) come from the checkpoint. Each evaluation writes a
directory of its own (``outputs/eval/<time>/``): ``metrics.json`` and, with ``predict=true``,
``predictions.csv``.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from gdlab.console import route_lightning_logs
from gdlab.data.batches import InMemoryBatches
from gdlab.errors import ConfigError, describe
from gdlab.factory import build
from gdlab.runs.checkpoint import check_fits, load_checkpoint
from gdlab.runs.record import to_number, write_metrics
from gdlab.runs.rundir import check_run_dir, save_config
from gdlab.validate import check_eval_settings, check_group_options, check_places

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.csv"


def run_config(cfg: DictConfig, ckpt: dict[str, Any]) -> DictConfig:
    """The checkpoint's run config, with ``data``/``model`` replaced where this command picks them, and
    this command's trainer (no loggers, no callbacks: evaluation writes nothing but its own files)."""
    saved = (ckpt.get("hyper_parameters") or {}).get("config")
    if not saved:
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} carries no run config (not written by gdlab's train.py): "
            "pass a checkpoint from outputs/runs/<time>/checkpoints/"
        )
    config = OmegaConf.create(saved)
    for group in ("data", "model"):
        if cfg.get(group) is not None:  # unresolved: ${seed} etc. then refer to the run's own values
            config[group] = OmegaConf.to_container(cfg[group], resolve=False)
    run_precision = (config.get("trainer") or {}).get("precision")
    config.trainer = cfg.trainer
    # The weights in the precision they were trained in (a 64-true run tested at 32-true would be rounded
    # first), unless this command sets trainer.precision itself.
    if run_precision is not None and not _typed("trainer.precision"):
        config.trainer.precision = run_precision
    config.callbacks, config.logger = {}, {}
    return config


def _typed(key: str) -> bool:
    """Whether this command's overrides set ``key``."""
    if not HydraConfig.initialized():
        return False
    return any(o.lstrip("+~").split("=", 1)[0] == key for o in HydraConfig.get().overrides.task)


def read_csv_numbers(path: str | Path) -> torch.Tensor:
    """Rows of numbers from a CSV file (a non-numeric first row is a header and skipped), float64."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"predict_input={path} does not exist: pass a CSV file with one input per row")
    rows = [r for r in csv.reader(path.read_text().splitlines()) if r and any(c.strip() for c in r)]
    if rows and not _numeric(rows[0]):
        rows = rows[1:]
    try:
        values = [[float(c) for c in r] for r in rows]
    except ValueError as err:
        raise ConfigError(
            f"predict_input={path}: {err}: every cell after the header must be a number"
        ) from err
    if not values or len({len(r) for r in values}) != 1:
        raise ConfigError(f"predict_input={path} needs at least one row of numbers, all rows of one length")
    return torch.tensor(values, dtype=torch.float64)


def _numeric(row: list[str]) -> bool:
    try:
        [float(c) for c in row]
    except ValueError:
        return False
    return True


def model_inputs(raw: torch.Tensor, datamodule: Any, setting: str) -> torch.Tensor:
    """Raw rows as model inputs. A datamodule with a ``features(x)`` method (polynomial: the powers of
    ``x``, standardised with the training statistics) transforms them; otherwise a row must hold one
    flattened input of the model's input shape."""
    features = getattr(datamodule, "features", None)
    if callable(features):
        return features(raw.squeeze(1) if raw.shape[1] == 1 else raw)
    shape = tuple(datamodule.input_shape)
    width = int(torch.tensor(shape).prod())
    if raw.shape[1] != width:
        raise ConfigError(
            f"{setting} has {raw.shape[1]} columns but the model takes {width} (input shape {shape}): "
            "one flattened input per row"
        )
    return raw.float().reshape(len(raw), *shape)


def write_predictions(
    path: Path, preds: torch.Tensor, task: str, targets: torch.Tensor | None, inputs: torch.Tensor | None
) -> Path:
    """One row per sample: inputs (for a given file), target (for the test split), prediction(s).

    Regression: ``prediction`` (or ``prediction_<k>`` per output). Classification: the ``prediction``
    (arg-max class) and the softmax probabilities ``prob_<k>``.
    """
    preds = preds.double()
    columns: dict[str, torch.Tensor] = {}
    if inputs is not None:
        flat = inputs.reshape(len(inputs), -1)
        columns.update({f"input_{j}": flat[:, j] for j in range(flat.shape[1])})
    if targets is not None:
        t = targets.reshape(len(targets), -1)
        columns.update(
            {"target": t[:, 0]} if t.shape[1] == 1 else {f"target_{j}": t[:, j] for j in range(t.shape[1])}
        )
    if task == "classification":
        columns["prediction"] = preds.argmax(dim=1)
        probs = preds.softmax(dim=1)
        columns.update({f"prob_{k}": probs[:, k] for k in range(probs.shape[1])})
    elif preds.shape[1] == 1:
        columns["prediction"] = preds[:, 0]
    else:
        columns.update({f"prediction_{k}": preds[:, k] for k in range(preds.shape[1])})
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", *columns])
        for i, row in enumerate(zip(*(c.tolist() for c in columns.values()), strict=True)):
            writer.writerow([i, *row])
    return path


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test (and optionally predict with) the checkpoint ``cfg.ckpt_path``; return metrics.json's record."""
    route_lightning_logs()
    check_places(cfg)
    output_dir = Path(cfg.paths.output_dir)
    check_run_dir(output_dir, resuming=False)
    write_metrics(output_dir, {}, status="running")
    metrics: dict[str, Any] = {}
    try:
        check_group_options()
        check_eval_settings(cfg)
        ckpt = load_checkpoint(cfg.ckpt_path, "ckpt_path")
        config = run_config(cfg, ckpt)
        save_config(config, output_dir)  # what was evaluated: the run's config with this command's changes
        datamodule, module, trainer = build(config)
        check_fits(module, ckpt, f"ckpt_path={cfg.ckpt_path}", config.model.get("_target_", "?"))
        # Into parameters of the precision the trainer tests in (what Lightning's own checkpoint loading
        # does): loaded first, float64 weights would be rounded to float32 on the way in.
        module = trainer.precision_plugin.convert_module(module)
        module.load_state_dict(ckpt["state_dict"])
        # Lightning saves a datamodule's state_dict (e.g. standardisation statistics) under its class name.
        if type(datamodule).__qualname__ in ckpt:
            datamodule.load_state_dict(ckpt[type(datamodule).__qualname__])
        trainer.test(module, datamodule=datamodule, verbose=True)
        metrics.update({k: to_number(v) for k, v in trainer.callback_metrics.items()})
        # the optimizer step the weights are from (the run's metrics.json "step" for its final weights)
        metrics.update(ckpt_path=str(Path(cfg.ckpt_path).resolve()), step=ckpt.get("global_step"))
        if cfg.predict:
            transform = None
            if cfg.get("predict_input"):
                raw, targets = read_csv_numbers(cfg.predict_input), None
                x = model_inputs(raw, datamodule, f"predict_input={cfg.predict_input}")
            else:  # stored samples: the datamodule turns them into model inputs, batch by batch
                (x, targets), raw, transform = datamodule.splits["test"], None, datamodule.inputs
            batches = InMemoryBatches(x, batch_size=cfg.get("predict_batch_size"), transform=transform)
            preds = torch.cat(trainer.predict(module, dataloaders=batches))
            path = write_predictions(output_dir / PREDICTIONS_FILE, preds, datamodule.task, targets, raw)
            metrics["predictions"] = str(path.resolve())
            log.info("%d predictions written to %s", len(preds), path)
    except Exception as err:
        write_metrics(output_dir, metrics, status="failed", error=describe(err))
        raise
    path = write_metrics(output_dir, metrics, status="completed")
    log.info("evaluation written to %s", path)
    return {**metrics, "status": "completed"}
