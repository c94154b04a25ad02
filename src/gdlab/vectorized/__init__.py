"""The vectorized launcher: a sweep's jobs that differ only in settings it can batch (the seed, the
learning rate, momentum, weight decay, and anything that only feeds them) train as one stacked model.

- :mod:`~gdlab.vectorized.grouping`: which jobs train together, and each job's config derived from its
  group's first (composed by Hydra) the way Hydra would compose it;
- :mod:`~gdlab.vectorized.stacked`: the stacked LightningModule (``torch.func``: ``stack_module_state``,
  ``functional_call``, ``vmap``) and its batches, each member in its own shuffle order;
- :mod:`~gdlab.vectorized.step`: the stacked gradient-descent step (plain, heavy ball, Nesterov), each
  member with its own rates, a stopped member frozen;
- :mod:`~gdlab.vectorized.metrics`: the module's epoch metrics, one value per member;
- :mod:`~gdlab.vectorized.members`: what makes each member a job of its own (run directory, log file,
  loggers, checkpoints, metrics.json, HParams entry);
- :mod:`~gdlab.vectorized.memory`: whether the members fit, before anything is allocated;
- :mod:`~gdlab.vectorized.train`: one group, from its members' configs to their records;
- :mod:`~gdlab.vectorized.launch`: the launcher's work (Hydra's plugin is
  ``hydra_plugins.gdlab_plugins.vectorized_launcher``).
"""
