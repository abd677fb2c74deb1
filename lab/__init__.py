"""The lab: programs that measure and compare, built on the library above.

The lesson's PyTorch program as written (the baseline), the NumPy network's training loop, the speed
benchmark and the results table. Nothing in the library imports them.
"""
