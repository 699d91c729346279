"""Run folders on disk: atomic writes, pickle-free arrays, creating, reading and listing runs."""
