"""The lessons of gradient descent, each behind one experiment: learning-rate regimes
(:mod:`~gdlab.lessons.lr_regimes`), steps that shrink near the optimum (:mod:`~gdlab.lessons.step_sizes`)
and convex vs non-convex losses (:mod:`~gdlab.lessons.nonconvex`)."""
