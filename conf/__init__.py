"""gdlab's Hydra config tree, shipped inside the package: Hydra finds it as ``pkg://gdlab.conf``.

Users add their own options with ``--config-dir <dir>`` or ``hydra.searchpath=[file://<dir>]``.
"""

CONFIG_PACKAGE = "gdlab.conf"
