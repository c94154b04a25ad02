"""gdlab's Hydra config tree: ``conf/`` at the repository root, installed as the package ``gdlab.conf``
(Hydra finds it as ``pkg://gdlab.conf``; an editable install reads this folder itself).

Users add options of their own with ``--config-dir <dir>`` or ``hydra.searchpath=[file://<dir>]``, and
settings of their own in ``conf/local/default.yaml`` (git-ignored, read when it exists).
"""

CONFIG_PACKAGE = "gdlab.conf"
