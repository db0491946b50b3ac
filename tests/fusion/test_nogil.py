"""The numba kernels release the GIL, so the app's UI thread keeps running while the fusion worker is inside a
kernel (issue #5: "the UI thread never waits on it")."""
from __future__ import annotations

import importlib
import threading

import numba
import numpy as np
import pytest

KERNEL_MODULES = ("fusion.tsdf.kernels_nb", "fusion.warp", "fusion.graph", "fusion.frame", "tracker.solver", "tracker.association",
                  "fusion.synthetic.raster")


@pytest.mark.parametrize("name", KERNEL_MODULES)
def test_every_kernel_is_nogil(name):
    mod = importlib.import_module(name)
    kernels = [(k, v) for k, v in vars(mod).items()
               if isinstance(v, numba.core.registry.CPUDispatcher) and v.__module__ == name]
    assert kernels, f"no numba kernels found in {name}"
    for k, v in kernels:
        if v.targetoptions.get("inline") == "always":
            continue  # inlined into the callers, never called from Python
        assert v.targetoptions.get("nogil"), f"{name}.{k} holds the GIL"


def test_python_runs_while_a_kernel_runs_in_another_thread():
    from fusion.graph import GraphMotion, build_graph, skinning
    from fusion.warp import warp_points

    rng = np.random.default_rng(0)
    surf = rng.normal(size=(4000, 3)).astype(np.float32)
    surf /= np.linalg.norm(surf, axis=1, keepdims=True)
    g = build_graph(surf, None, radius=0.3, k=8)
    pts = rng.normal(size=(1_000_000, 3)).astype(np.float32)
    a, w = skinning(pts[:1000], g)
    a = np.resize(a, (len(pts), a.shape[1]))
    w = np.resize(w, (len(pts), w.shape[1]))
    m = GraphMotion.identity(g.num_nodes)
    warp_points(pts[:10], a[:10], w[:10], g.nodes, m.rotations, m.translations)  # compile outside the timing
    done = threading.Event()

    def work():
        numba.set_num_threads(1)  # thread-local: leaves a core to this thread's loop
        for _ in range(3):
            warp_points(pts, a, w, g.nodes, m.rotations, m.translations)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    n = 0
    while not done.is_set():
        n += 1
    t.join()
    # holding the GIL, the kernel would let this loop run only between the calls (a handful of ticks)
    assert n > 10000
