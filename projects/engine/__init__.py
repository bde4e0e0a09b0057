"""Training/testing entry points behind tools/ (mmdet's CLI, CPU-capable distributed launch)."""
