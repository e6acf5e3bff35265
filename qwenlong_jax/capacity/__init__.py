"""Will it fit and how fast: the memory planner and the compile check's jobs."""
