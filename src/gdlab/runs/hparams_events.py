"""One run's entry in TensorBoard's HParams dashboard, as the three summaries its plugin reads.

Built from tensorboard's public protos (``api_pb2``, ``plugin_data_pb2``, ``metadata``), because the
writer Lightning uses (``torch.utils.tensorboard.summary.hparams``) fixes what the dashboard shows:

- **experiment**: the columns. TensorBoard reads the experiment of *one* run for every run shown, and
  displays the first five hyperparameters after those marked ``differs``; gdlab marks the run's own
  choices (its overrides, the learning rate, its status), so those are the columns a sweep opens on, and
  lists the metrics losses first (the first five metrics are displayed).
- **session start**: the values and the trial ID (``group_name``); without one, TensorBoard names the
  row by its run path, which starts with the same ``multirun/<time>`` for every job of a sweep.
- **session end**: success (completed, stopped_early), failure (diverged or failed) or unknown (interrupted).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence

from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

Value = str | float | int | bool

STATUS = {
    "completed": api_pb2.STATUS_SUCCESS,
    "stopped_early": api_pb2.STATUS_SUCCESS,
    "diverged": api_pb2.STATUS_FAILURE,
    "failed": api_pb2.STATUS_FAILURE,
}


def _summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    data.version = metadata.PLUGIN_DATA_VERSION
    meta = metadata.create_summary_metadata(data)
    return Summary(value=[Summary.Value(tag=tag, metadata=meta, tensor=metadata.NULL_TENSOR)])


def _data_type(value: Value) -> int:
    if isinstance(value, bool):
        return api_pb2.DATA_TYPE_BOOL
    if isinstance(value, (int, float)):
        return api_pb2.DATA_TYPE_FLOAT64
    return api_pb2.DATA_TYPE_STRING


def experiment(params: Mapping[str, Value], metrics: Sequence[str], shown: Collection[str]) -> Summary:
    """The columns: ``params`` in their order (``shown`` ones marked ``differs``), then ``metrics``."""
    infos = [api_pb2.HParamInfo(name=k, type=_data_type(v), differs=k in shown) for k, v in params.items()]
    columns = api_pb2.Experiment(
        hparam_infos=infos,
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m)) for m in metrics],
    )
    return _summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=columns))


def session_start(params: Mapping[str, Value], trial_id: str) -> Summary:
    """This run's row: its values, named ``trial_id``."""
    start = plugin_data_pb2.SessionStartInfo(group_name=trial_id, start_time_secs=time.time())
    for key, value in params.items():
        if isinstance(value, bool):
            start.hparams[key].bool_value = value
        elif isinstance(value, (int, float)):
            start.hparams[key].number_value = value
        else:
            start.hparams[key].string_value = str(value)
    return _summary(
        metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start)
    )


def session_end(status: str | None) -> Summary:
    """How the run ended (``STATUS_UNKNOWN`` for a status without a counterpart)."""
    end = plugin_data_pb2.SessionEndInfo(
        status=STATUS.get(str(status), api_pb2.STATUS_UNKNOWN), end_time_secs=time.time()
    )
    return _summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end))


def entry(
    params: Mapping[str, Value],
    metrics: Sequence[str],
    trial_id: str,
    status: str | None,
    shown: Collection[str] = (),
) -> list[Summary]:
    """The three summaries of one run's HParams entry, in the order TensorBoard expects them."""
    return [experiment(params, metrics, shown), session_start(params, trial_id), session_end(status)]
