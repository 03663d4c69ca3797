"""numpy's BLAS held to one thread: the pipeline's parallelism is its own threads.

Each session runs on a thread of its own and each detector on another, and the models
are set to one thread per call (MediaPipe's XNNPACK in :mod:`monitor.features.face`,
onnxruntime in the backends). numpy's OpenBLAS still starts a pool of one thread per
core, and its idle threads busy-wait after every product: on 2 cores, 3 live sessions
spent a tenth of a core there (tools/bench_live.py capacity, docs/LIVE.md). The products
the pipeline makes (landmark fits, warps, small embeddings) are far too small to gain
from a second thread.
"""

from __future__ import annotations


def limit_blas_threads() -> None:
    """The BLAS libraries loaded by now (numpy's, scipy's) run every call on the calling
    thread. Called as each session starts (half a millisecond), after its detectors
    loaded what they need."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
