"""The cleaning loop's library (`kibble loop`, mode=clean): one round end to end, and the random-queue baseline arm.

tasks/loop.py is the entry point; the round's steps and bookkeeping live here so other callers
(benchmarks, scripts) and the baseline arm run exactly the same code.
"""
