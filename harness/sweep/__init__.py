"""``harness sweep``: a matrix of settings and seeds, trained locally or on a Ray cluster, judged across seeds."""
