"""pping: passive round-trip-time monitoring from TCP timestamps and ICMP echo."""

import os

# pping uses numpy for element-wise work only, never its BLAS. numpy's OpenBLAS would
# otherwise start a thread per core at import, ~0.07 s of CPU taken from the other
# core on a two-core machine (where the kernel program and the consumer need it) and
# idle threads for the life of a live monitor. Set before numpy is first imported;
# a value the user set is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
