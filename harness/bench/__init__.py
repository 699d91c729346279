"""``harness bench``: images/s of the harness loop, a bare loop and inference, per backend."""
