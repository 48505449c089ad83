"""kernelshape benchmarks: ``python -m benchmarks`` runs every ``bench_*.py`` module's ``main()``;
``python -m benchmarks.bench_NAME`` runs one (``make bench`` = all). No timing is asserted."""
