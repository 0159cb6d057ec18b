"""One worker of the MultiWorkerMirroredStrategy test (test_multiworker.py starts two of them
with TF_CONFIG naming two ports on 127.0.0.1): trains through `kbnn_apps.train.run_training`
(``kbnn train --strategy multi_worker``) and prints the outcome as JSON on the last line.

    TF_CONFIG=... python multiworker_worker.py WORK_DIR
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kbnn_apps.train import TrainConfig, run_training  # (standard library only)


def main():
    work = sys.argv[1]
    config = TrainConfig(model=os.path.join(work, "student.keras"), dataset="digits", epochs=2,
                         batch_size=32, steps_per_epoch=5, optimizer="bop",
                         bop_threshold=1e-6, bop_gamma=1e-2, learning_rate=1e-2,
                         strategy="multi_worker", out_dir=os.path.join(work, "out"), seed=5)
    results = run_training(config, convert=False, verbose=2, log=print)
    import numpy as np

    weights = results["model"].get_weights()
    print(json.dumps({
        "task": json.loads(os.environ["TF_CONFIG"])["task"],
        "chief": results["chief"],
        "replicas": results["replicas"],
        "history": results["histories"][0][1],
        "checksums": [float(np.sum(np.abs(w.astype(np.float64)))) for w in weights],
        "trainable": [float(np.sum(v.numpy().astype(np.float64)))
                      for v in results["model"].trainable_variables],
    }), flush=True)


if __name__ == "__main__":
    main()
