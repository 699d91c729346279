"""`harness sweep`: sweep files, statistics across seeds, packed run folders, local and Ray executors."""
