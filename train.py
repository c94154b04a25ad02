"""`python train.py [overrides]` from the repo root; the same as the `gdlab-train` command."""

from gdlab.entry import train_main

if __name__ == "__main__":
    train_main()
