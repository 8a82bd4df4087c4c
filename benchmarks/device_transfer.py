"""On a GPU: what moving the members to the device on every call costs.

``predict_proba`` keeps the snapshots on the CPU and copies the predicting
members' tensors to the net's device once per call. This compares it, on the
same members and rows, with the plain member loop over states that already
live on the GPU (``torch.func.functional_call`` + softmax, all rows in one
tensor): the ratio is the price of not keeping a device copy between calls.

    python -m benchmarks.device_transfer      # needs CUDA; writes results/device_transfer.md
"""

import argparse
import pathlib
import time

import numpy as np
import torch
from torch.func import functional_call

from sksnapshot import SnapshotEnsembleClassifier

from ._common import RESULTS
from ._data import make_net

# module name in the table -> kind of benchmarks._data.NETS
KINDS = {"MLP 512-512": "mlp", "CNN1d": "cnn"}


def _median_ms(fn, rounds):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def measure(module_name, n_rows, m, rounds=30, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randn(2048, 40).astype(np.float32)
    y = rng.randint(0, 10, 2048)
    net = make_net(KINDS[module_name], max_epochs=m, lr=0.05, device="cuda")
    clf = SnapshotEnsembleClassifier(net, n_snapshots=m, validation_fraction=0,
                                     selection="all", weighting="uniform",
                                     random_state=seed).fit(X, y)
    X_pred = rng.randn(n_rows, 40).astype(np.float32)
    module = clf.net_.module_.eval()
    on_gpu = [{k: v.cuda() for k, v in s.items()} for s in clf.snapshots_]
    weights = clf.weights_.tolist()

    def plain():
        with torch.inference_mode():
            x = torch.as_tensor(X_pred, device="cuda")
            total = 0.0
            for w, state in zip(weights, on_gpu):
                total = total + w * torch.softmax(functional_call(module, state, (x,)), -1)
            return total.cpu().numpy()

    np.testing.assert_allclose(clf.predict_proba(X_pred), plain(), atol=1e-5)
    ours = _median_ms(lambda: clf.predict_proba(X_pred), rounds)
    base = _median_ms(plain, rounds)
    state_mb = sum(t.numel() * t.element_size() for t in clf.snapshots_[0].values()) / 2**20
    return {"module": module_name, "rows": n_rows, "members": m, "sksnapshot_ms": ours,
            "plain_ms": base, "ratio": ours / base, "member_mb": state_mb}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks.device_transfer needs a CUDA GPU.")
    rows = [measure(name, n, m, args.rounds) for name in KINDS
            for n in (256, 4096) for m in (1, 5)]
    lines = [
        f"# Per-call transfer of the members to the GPU\n\n`python -m benchmarks.device_transfer`"
        f" on {torch.cuda.get_device_name()}, torch {torch.__version__}. `predict_proba` (snapshots"
        " on the CPU, copied to the GPU once per call) against the plain member loop over states"
        " already on the GPU; medians of "
        f"{args.rounds} calls after a warm-up, synchronised.\n",
        "| module | rows | members | member size (MiB) | sksnapshot (ms) | plain loop, states on "
        "GPU (ms) | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['module']} | {r['rows']} | {r['members']} | {r['member_mb']:.2f} | "
                     f"{r['sksnapshot_ms']:.2f} | {r['plain_ms']:.2f} | {r['ratio']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "device_transfer.md").write_text(text)


if __name__ == "__main__":
    main()
