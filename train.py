"""`python train.py [overrides]` from the repo root; the same as the `gdlab-train` command."""

from gdlab.train import main

if __name__ == "__main__":
    main()
