"""`python eval.py ckpt_path=<file> [predict=true]` from the repo root; the same as `gdlab-eval`."""

from gdlab.evaluate import main

if __name__ == "__main__":
    main()
