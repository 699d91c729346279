"""``harness parity``: step-level parity of two backends against float64, and float32's own spread."""
