"""Kill an extraction at every rename and write it makes in its store, then resume it (run by
test_kill_every_step.py in a subprocess; not a test module itself).

The driver loads the backbone once, then forks one child per run so that no child pays for the
imports: a counting child finds the N filesystem steps of a clean run; for every step k a child is
killed with SIGKILL just before step k (or, for data and journal writes, after writing half of it),
optionally a second child is killed at the first step of its resume, and a last child resumes and
checks the store. Prints one JSON summary line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

from PIL import Image  # noqa: E402

from deepfeat.backbones import load_backbone  # noqa: E402
from deepfeat.data.datasets import folder_dataset  # noqa: E402
from deepfeat.data.transforms import Preprocess  # noqa: E402
from deepfeat.features.activations import LayerActivations  # noqa: E402
from deepfeat.features.pipeline import extract, load_features  # noqa: E402
from deepfeat.features.store import FeatureStore  # noqa: E402

SMALL = Preprocess(
    resize="shorter", size=40, crop=32, interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3
)
REAL = {"replace": os.replace, "pwrite": os.pwrite, "write": os.write, "truncate": os.truncate}


class Steps:
    """Counts the store's renames and writes; kills the process at step ``kill_at``."""

    def __init__(self, root: Path):
        self.root = str(root)
        self.count = 0
        self.kill_at: int | None = None
        self.torn = False
        self.kinds: list[str] = []

    def _inside(self, path) -> bool:
        return os.fspath(path).startswith(self.root)

    def _fd_inside(self, fd: int) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}").startswith(self.root)
        except OSError:
            return False

    def step(self, kind: str, half=None) -> None:
        self.count += 1
        self.kinds.append(kind)
        if self.count == self.kill_at:
            if self.torn and half is not None:
                half()
            os.kill(os.getpid(), signal.SIGKILL)

    def install(self) -> None:
        def replace(src, dst, *a, **k):
            if self._inside(dst):
                self.step("rename")
            return REAL["replace"](src, dst, *a, **k)

        def pwrite(fd, data, offset):
            if self._fd_inside(fd):
                self.step("pwrite", lambda: REAL["pwrite"](fd, bytes(data)[: len(data) // 2], offset))
            return REAL["pwrite"](fd, data, offset)

        def write(fd, data):
            if self._fd_inside(fd):
                self.step("append", lambda: REAL["write"](fd, bytes(data)[: len(data) // 2]))
            return REAL["write"](fd, data)

        def truncate(path, length):
            if self._inside(path):
                self.step("truncate")
            return REAL["truncate"](path, length)

        os.replace, os.pwrite, os.write, os.truncate = replace, pwrite, write, truncate


def make_data(folder: Path) -> None:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        for i in range(2):
            arr = rng.integers(0, 255, size=(36, 44, 3), dtype=np.uint8)
            path = folder / c / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path)
    (folder / "b" / "2-broken.png").write_bytes(b"")  # a failed row in every entry


def run(store: Path, data: Path, bb) -> dict:
    ds = folder_dataset(data)
    res = extract(
        ds,
        bb,
        [LayerActivations("stage6", ["avg", "max"])],
        store=store,
        preprocess=SMALL,
        batch_size=2,
        workers=0,
        progress=False,
    )
    return {k: np.asarray(fs.features) for k, fs in res.features.items()}, res


def in_child(fn) -> int:
    """Run ``fn`` in a forked child; its exit status (-9 when killed)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = fn() or 0
        except BaseException:
            traceback.print_exc()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def verify(store: Path, data: Path, bb, reference: dict) -> str | None:
    """Problems after a final resume, or None."""
    features, res = run(store, data, bb)
    if len(res.failures) != 1 or res.repaired:
        return f"failures {res.failures}, repaired {res.repaired}"
    for key, ref in reference.items():
        if features[key].shape != ref.shape or not np.allclose(features[key], ref, rtol=1e-4, atol=1e-5):
            return f"{key}: features differ from a clean run"
    strays = [p.name for p in store.rglob(".*.tmp*")]
    if strays:
        return f"temporary files left: {strays}"
    ds = folder_dataset(data)
    for meta in FeatureStore(store).entries():
        entry = Path(meta["path"])
        if not meta.get("complete") or meta.get("dim") is None or meta.get("layer_shape") is None:
            return f"{entry.name}: meta.json {meta}"
        if (meta["n_valid"], meta["n_failed"]) != (4, 1):
            return f"{entry.name}: counts {meta['n_valid']}, {meta['n_failed']}"
        rows = np.load(entry / "features.npy")
        valid = np.load(entry / "valid.npy")
        if valid.tolist() != [True, True, True, True, False] or not np.isnan(rows[~valid]).all():
            return f"{entry.name}: mask {valid.tolist()} or failed rows not NaN"
    loaded = load_features(ds, bb, [LayerActivations("stage6", ["avg", "max"])], store, preprocess=SMALL)
    for key, ref in reference.items():
        if not np.allclose(np.asarray(loaded[key].features), ref, rtol=1e-4, atol=1e-5):
            return f"{key}: load_features differs"
    return None


def main(work: Path) -> None:
    bb = load_backbone("efficientnet_lite0")
    data = work / "data"
    make_data(data)
    ref_path = work / "reference.npz"

    def reference():
        ds = folder_dataset(data)
        res = extract(
            ds,
            bb,
            [LayerActivations("stage6", ["avg", "max"])],
            preprocess=SMALL,
            batch_size=2,
            progress=False,
        )
        np.savez(
            ref_path, **{k.replace("/", "__"): np.asarray(fs.features) for k, fs in res.features.items()}
        )

    assert in_child(reference) == 0
    ref = {k.replace("__", "/"): v for k, v in np.load(ref_path).items()}

    def count():
        steps = Steps(work / "count")
        steps.install()
        run(work / "count", data, bb)
        (work / "steps.json").write_text(json.dumps(steps.kinds))

    assert in_child(count) == 0
    kinds = json.loads((work / "steps.json").read_text())
    cases = [(k, False) for k in range(1, len(kinds) + 1)]
    cases += [(k, True) for k in range(1, len(kinds) + 1) if kinds[k - 1] in ("pwrite", "append")]
    failures = []
    for n, (k, torn) in enumerate(cases):
        store = work / f"s{n}"
        store.mkdir()

        def killed(k=k, torn=torn, store=store):
            steps = Steps(store)
            steps.kill_at, steps.torn = k, torn
            steps.install()
            run(store, data, bb)
            return 3  # not killed: the step was never reached

        if in_child(killed) != -signal.SIGKILL:
            failures.append(f"step {k} ({kinds[k - 1]}): the run was not killed there")
            continue
        if n % 2 == 0:  # a second kill, at the first step of the resume

            def killed_again(store=store):
                steps = Steps(store)
                steps.kill_at = 1
                steps.install()
                run(store, data, bb)

            in_child(killed_again)
        problem_file = work / f"problem{n}.txt"

        def resume(store=store, problem_file=problem_file):
            problem = verify(store, data, bb, ref)
            if problem:
                problem_file.write_text(problem)
                return 1
            return 0

        if in_child(resume) != 0:
            detail = problem_file.read_text() if problem_file.exists() else "crashed (see stderr)"
            failures.append(f"killed at step {k} ({kinds[k - 1]}{', torn' if torn else ''}): {detail}")
    print(json.dumps({"steps": kinds, "cases": len(cases), "failures": failures}))


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
