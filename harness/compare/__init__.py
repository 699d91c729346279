"""``harness compare``: obtain runs of one config, pair every evaluator, judge, and say where they part."""
