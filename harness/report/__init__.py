"""Reports for people and tools: tidy CSV tables, summary.md and the console table, PNG plots."""
