"""One of two processes checking `train.on_every_process` (run by tests/test_train.py).

python tests/multihost_worker.py PORT PROCESS_ID FOLDER: prints one line per case.
"""

import pathlib
import sys
import time

import jax

port, me, folder = int(sys.argv[1]), int(sys.argv[2]), pathlib.Path(sys.argv[3])
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(f"localhost:{port}", 2, me, initialization_timeout=60)

from mscm_jax.training.train import TrainingError, on_every_process  # noqa: E402


def prepare() -> bool:
    """Process 0 prepares slowly; the others see whether it had finished when they started."""
    if me == 0:
        time.sleep(1.0)
        (folder / "prepared").write_text("")
    return (folder / "prepared").exists()


print("prepared before the others started:", on_every_process(prepare, "preparing", process_zero_first=True))
for failing in (0, 1):
    for first in (True, False):

        def open_data(failing=failing):
            if me == failing:
                raise ValueError(f"no data on process {failing}")
            return "data"

        case = f"fails on {failing}, zero first {first}:"
        try:
            print(case, on_every_process(open_data, "opening the data", first))
        except TrainingError as e:
            print(case, f"TrainingError: {e}")
        except ValueError as e:
            print(case, f"ValueError: {e}")
