"""``python -m gdlab [overrides]``: the same as ``python train.py`` and ``gdlab-train``."""

from gdlab.entry import train_main

train_main()
