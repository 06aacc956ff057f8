"""The collector's settings of every uvicorn process, switched live for an A/B on one stack.

Loaded by Python at start-up when this folder is on PYTHONPATH (`python -m bench.gc_ab` puts it
there for the stack it starts). A thread reads the mode from $GC_PROBE_DIR/mode twice a second:
`none` (uvicorn's defaults, nothing frozen), `freeze` (collect, then `gc.freeze()`, as
`common.app.freeze_startup_heap` does), `freeze_thresh<N>` (freeze, and the youngest
generation's threshold at N). It writes the collections made and their wall time so far to
$GC_PROBE_DIR/<pid>. Not part of any service: a measuring tool only.
"""

import gc
import os
import sys
import threading
import time

_DIR = os.environ.get("GC_PROBE_DIR", "")


def _probe() -> None:
    app = next((arg for arg in sys.orig_argv if "create_app" in arg), "")
    made = [0, 0.0]
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            made[0] += 1
            made[1] += time.perf_counter() - started[0]

    gc.callbacks.append(callback)

    def loop() -> None:
        current = None
        while True:
            time.sleep(0.5)
            try:
                with open(os.path.join(_DIR, "mode")) as file:
                    mode = file.read().strip()
            except OSError:
                mode = "none"
            if mode != current:
                gc.unfreeze()
                gc.set_threshold(700, 10, 10)
                if mode.startswith("freeze"):
                    gc.collect()
                    gc.freeze()
                if "thresh" in mode:
                    gc.set_threshold(int(mode.split("thresh", 1)[1] or 10_000), 50, 100)
                current = mode
            with open(os.path.join(_DIR, str(os.getpid())), "w") as file:
                file.write(f"{app} {current} {made[0]} {made[1]:.4f}\n")

    threading.Thread(target=loop, daemon=True, name="gc-probe").start()


if _DIR and "uvicorn" in " ".join(getattr(sys, "orig_argv", sys.argv)):
    _probe()
