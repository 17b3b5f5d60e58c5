"""Fault-injection campaign: kill -9 a training run at random moments, restart it, compare.

    python -m benchmarks.chaos [--kills=20] [--seed=0] [--workdir=/tmp/rawtf_ae_chaos] [--norelative]

Trains a small model once uninterrupted (the reference), then runs the same command again and
again in another workdir, each time killing it with SIGKILL after a random delay (during
start-up, training steps, checkpoint writes or the deletion of old checkpoints), checks that
every checkpoint left behind is readable, and finally lets it finish. It prints: kills that
landed, checkpoints found corrupt, the most steps lost to a kill, and whether the final weights
equal the reference bit for bit. `tests/training/test_reliability.py` runs a short version in CI.

As a user types it, each run starts in the campaign's folder with a relative `--workdir`
(`--norelative`: absolute paths); a run that starts from scratch although a checkpoint exists
counts as a failure (`fresh_starts`), since its final weights would still match the reference.
"""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = [
    "--config.model.layer_sizes=(784,64,16)",
    "--config.model.activation=selu,linear",
    "--config.data.num_train=1000",
    "--config.data.num_validation=100",
    "--config.train.batch_size=32",
    "--config.train.log_every_steps=5",
    "--config.train.eval_every_steps=100000",
    "--config.train.checkpoint_every_steps=5",
    "--config.train.steps_per_loop=5",
    "--config.train.keep_checkpoints=2",
    "--config.train.export=False",
]


def _command(workdir, relative, steps):
    """The command line, run in the workdir's parent (and naming it relatively by default)."""
    typed = os.path.basename(workdir) if relative else workdir
    return [
        sys.executable,
        os.path.join(REPO, "train.py"),
        f"--workdir={typed}",
        f"--config.train.num_steps={steps}",
        *FLAGS,
    ]


def _environment():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_DETERMINISTIC_OPS="1", PYTHONPATH=REPO)


def _run_to_end(workdir, timeout, relative, steps):
    result = subprocess.run(
        _command(workdir, relative, steps),
        cwd=os.path.dirname(workdir),
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"run in {workdir} failed:\n{result.stderr[-3000:]}")
    return result.stderr


def _unreadable_checkpoints(directory):
    import tensorflow as tf

    from rawtf_ae.training import checkpoints

    bad = []
    for path in checkpoints.candidates(directory):
        try:
            reader = tf.train.load_checkpoint(path)
            for name in reader.get_variable_to_shape_map():
                reader.get_tensor(name)
        except Exception:  # any failure to read counts
            bad.append(path)
    return bad


def _named(directory) -> set:
    """The checkpoints the state file names (what a restart trusts first)."""
    import tensorflow as tf

    try:
        state = tf.train.get_checkpoint_state(directory)
    except Exception:  # an unreadable state file names nothing
        return set()
    if state is None:
        return set()
    named = {*state.all_model_checkpoint_paths, state.model_checkpoint_path}
    return {p if os.path.isabs(p) else os.path.join(directory, p) for p in named}


def _weights(directory):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(directory))
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if name.startswith(("model/", "optimizer/", "step"))
    }


def _has_checkpoint(workdir) -> bool:
    directory = os.path.join(workdir, "checkpoints")
    return os.path.isdir(directory) and any(name.endswith(".index") for name in os.listdir(directory))


def campaign(
    kills: int,
    root: str,
    seed: int = 0,
    delay=(2.0, 7.0),
    timeout: float = 300,
    relative: bool = True,
    num_steps: int = 1500,
) -> dict:
    """Runs the campaign in `root` (emptied first); returns its figures.

    `num_steps` must outlast the kills: a run that finishes ends the campaign early.
    """
    import numpy as np

    rng = random.Random(seed)
    root = os.path.abspath(root)
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    reference, chaos = os.path.join(root, "reference"), os.path.join(root, "chaos")
    _run_to_end(reference, timeout, relative, num_steps)
    landed, corrupt, named_bad, lost, log, fresh_starts = 0, 0, 0, [], [], 0
    last_seen = None
    for _ in range(kills):
        wait = rng.uniform(*delay)
        had_checkpoint = _has_checkpoint(chaos)
        process = subprocess.Popen(
            _command(chaos, relative, num_steps),
            cwd=root,
            env=_environment(),
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        time.sleep(wait)
        finished = process.poll() is not None
        if not finished:
            os.killpg(process.pid, signal.SIGKILL)
            landed += 1
        stderr = process.communicate(timeout=timeout)[1]
        resumed = re.search(r"resumed from \S+ at step (\d+)", stderr)
        fresh_starts += int(had_checkpoint and "starting from scratch" in stderr)
        if last_seen is not None and resumed:
            lost.append(max(0, last_seen - int(resumed.group(1))))
        steps = [int(s) for s in re.findall(r"step (\d+)/", stderr)]
        last_seen = max(steps) if steps else (int(resumed.group(1)) if resumed else last_seen)
        bad = _unreadable_checkpoints(os.path.join(chaos, "checkpoints"))
        corrupt += len(bad)
        # A kill in the middle of TensorFlow's write leaves an unnamed, partial checkpoint, which
        # the next run moves aside; a *named* unreadable one would break the promise.
        named_bad += len(set(bad) & _named(os.path.join(chaos, "checkpoints")))
        log.append(
            {"delay_s": round(wait, 2), "killed": not finished, "last_step": last_seen, "unreadable": bad}
        )
        if finished:
            break
    had_checkpoint = _has_checkpoint(chaos)
    final = _run_to_end(chaos, timeout, relative, num_steps)
    resumed = re.search(r"resumed from \S+ at step (\d+)", final)
    fresh_starts += int(had_checkpoint and not resumed)
    if last_seen is not None and resumed:
        lost.append(max(0, last_seen - int(resumed.group(1))))
    expected, got = (
        _weights(os.path.join(reference, "checkpoints")),
        _weights(os.path.join(chaos, "checkpoints")),
    )
    identical = expected.keys() == got.keys() and all(np.array_equal(expected[k], got[k]) for k in expected)
    return {
        "kills_landed": landed,
        "checkpoints_unreadable": corrupt,
        "named_unreadable": named_bad,
        "max_steps_lost": max(lost) if lost else 0,
        "final_weights_identical": bool(identical),
        "fresh_starts": fresh_starts,
        "relative_workdir": relative,
        "runs": log,
    }


def main():
    from absl import app, flags

    kills = flags.DEFINE_integer("kills", 20, "How many times to kill the run.")
    seed = flags.DEFINE_integer("seed", 0, "Seeds the kill delays.")
    workdir = flags.DEFINE_string("workdir", "/tmp/rawtf_ae_chaos", "Where the two runs go (emptied first).")
    steps = flags.DEFINE_integer("steps", 8000, "Training steps of each run (enough to outlast the kills).")
    relative = flags.DEFINE_boolean(
        "relative", True, "Run each command in --workdir with a relative --workdir=chaos, as users type it."
    )

    def run(argv):
        del argv
        started = time.time()
        result = campaign(
            kills.value, workdir.value, seed.value, relative=relative.value, num_steps=steps.value
        )
        print(json.dumps(result["runs"]))
        print(
            "\n| workdir | kills landed | partial checkpoints left (unnamed) | named checkpoints "
            "unreadable | fresh starts despite a checkpoint | max steps lost | final weights identical | "
            "minutes |"
        )
        print("|---|---:|---:|---:|---:|---:|---|---:|")
        print(
            f"| {'relative' if result['relative_workdir'] else 'absolute'} | {result['kills_landed']} | "
            f"{result['checkpoints_unreadable'] - result['named_unreadable']} | "
            f"{result['named_unreadable']} | "
            f"{result['fresh_starts']} | {result['max_steps_lost']} | "
            f"{'yes' if result['final_weights_identical'] else 'NO'} | {(time.time() - started) / 60:.1f} |"
        )

    app.run(run)


if __name__ == "__main__":
    main()
