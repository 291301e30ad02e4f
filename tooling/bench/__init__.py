"""Benchmarks (make bench, make bench-converge): they print figures, they assert nothing."""
