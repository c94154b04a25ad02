"""`python eval.py ckpt_path=<file> [predict=true]` from the repo root; the same as `gdlab-eval`."""

from gdlab.entry import eval_main

if __name__ == "__main__":
    eval_main()
