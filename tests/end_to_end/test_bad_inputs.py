"""The bad-input campaign: `python train.py` given what users get wrong, on every input path.

Each case runs `train.py` as a user types it (from its own folder, a relative `--workdir`; a
process forked from one that has imported TensorFlow, `forked_train_py`), and asserts: exit
status 1, exactly one error line `train.py: error: ...` that
names the flag or the file, no traceback, and a workdir left exactly as it was (nothing
created where there was none; every file, size and modification time unchanged where there
was one). The cases run two at a time, once per session, so that CI holds them.
"""

import concurrent.futures
import json
import os
import queue
import shutil
import subprocess

import numpy as np
import pytest

from tests.conftest import REPO, tiny_config, tiny_ratings_config
from tests.end_to_end import forked_train_py

TINY = [
    "--config.data.num_train=300",
    "--config.data.num_validation=50",
    "--config.model.layer_sizes=(784,32,8)",
    "--config.model.activation=selu,linear",
    "--config.train.num_steps=5",
    "--config.train.batch_size=16",
]
RATINGS = ["--config=configs/recommender_synthetic.py", "--config.data.path=r.csv", "--config.train.num_steps=5"]


def _write(name, text, mode="w"):
    def setup(folder):
        with open(os.path.join(folder, name), mode) as f:
            f.write(text)

    return setup


def _ratings(text):
    return _write("r.csv", text)


def _configs(folder):
    shutil.copytree(os.path.join(REPO, "configs"), os.path.join(folder, "configs"))


def _both(*setups):
    def setup(folder):
        for each in setups:
            each(folder)

    return setup


def _in_workdir(name, text):
    return _write(os.path.join("w", name), text)


def _file_for_folder(name):
    """The trained workdir's `name/` folder replaced by a plain file."""

    def setup(folder):
        shutil.rmtree(os.path.join(folder, "w", name))
        _in_workdir(name, "a file\n")(folder)

    return setup


def _npy(name, array):
    return lambda folder: np.save(os.path.join(folder, name), array)


def _idx_folder(folder):
    os.makedirs(os.path.join(folder, "idx"))
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        with open(os.path.join(folder, "idx", name), "wb") as f:
            f.write(b"not gzip at all")


def _damage_checkpoint(folder):
    checkpoints = os.path.join(folder, "w", "checkpoints")
    for name in os.listdir(checkpoints):
        if ".data-" in name:
            with open(os.path.join(checkpoints, name), "r+b") as f:
                f.truncate(10)


_GOOD_RATINGS = "user,item,rating\n" + "".join(f"{u},{i},{1 + (u + i) % 5}\n" for u in range(40) for i in range(6))

# (id, workdir: None | "trained" | "ratings", setup, arguments, what the error line must name)
CASES = [
    # flags
    ("unknown flag", None, None, ["--nosuchflag"], "nosuchflag"),
    ("unknown mode", None, None, ["--mode=fit"], "--mode"),
    ("unknown config key", None, None, ["--config.train.nosuch=1"], "nosuch"),
    ("config value of the wrong type", None, None, ["--config.train.num_steps=abc"], "num_steps"),
    ("batch size 0", None, None, ["--config.train.batch_size=0"], "train.batch_size"),
    ("unknown optimizer", None, None, ["--config.train.optimizer=adagrad"], "train.optimizer"),
    ("one width", None, None, ["--config.model.layer_sizes=(784,)"], "model.layer_sizes"),
    ("an activation too many", None, None, ["--config.model.activation=selu,selu,linear"], "model.activation"),
    ("batch larger than the data", None, None, ["--config.train.batch_size=100000"], "train.batch_size"),
    ("unknown corruption", None, None, ["--config.train.corruption=blur"], "train.corruption"),
    ("multi-worker without TF_CONFIG", None, None, ["--config.train.strategy=multi_worker_mirrored"], "TF_CONFIG"),
    ("a device that is not there", None, None, ["--config.train.strategy=one_device",
                                                "--config.train.devices=/gpu:7"], "/gpu:7"),
    ("batch not divisible by replicas", None, None, ["--config.train.strategy=mirrored",
                                                     "--config.train.logical_cpus=2",
                                                     "--config.train.batch_size=15"], "train.batch_size"),
    # parameter servers (train.strategy=parameter_server, --mode=server): TF_CONFIG in _CASE_ENV
    ("parameter servers without TF_CONFIG", None, None, ["--config.train.strategy=parameter_server"], "TF_CONFIG"),
    ("TF_CONFIG that is not JSON", None, None, ["--config.train.strategy=parameter_server"],
     "TF_CONFIG is not valid JSON"),
    ("TF_CONFIG without parameter servers", None, None, ["--config.train.strategy=parameter_server"],
     "no 'ps' task"),
    ("the chief's command on a worker task", None, None, ["--config.train.strategy=parameter_server"],
     "--mode=server"),
    ("a server without TF_CONFIG", None, None, ["--mode=server"], "--mode=server needs the TF_CONFIG"),
    ("a server for the chief task", None, None, ["--mode=server"], "--mode=server is for the 'worker' and 'ps'"),
    ("a server task beyond the cluster", None, None, ["--mode=server"], "has 1 'worker' task(s)"),
    ("XLA on parameter servers", None, None, ["--config.train.strategy=parameter_server",
                                              "--config.train.jit_compile=True"], "train.jit_compile"),
    ("negative parameter-server shards", None, None, ["--config.train.ps_shards=-1"], "train.ps_shards"),
    ("pretraining on parameter servers", None, None, ["--config.train.strategy=parameter_server",
                                                      "--config.pretrain.steps_per_layer=5"], "pretrain.steps_per_layer"),
    # config files
    ("missing config file", None, None, ["--config=nope.py"], "nope.py"),
    ("config file is a folder", None, lambda f: os.makedirs(os.path.join(f, "cfg.py")), ["--config=cfg.py"],
     "cfg.py is a folder"),
    ("config file without get_config", None, _write("cfg.py", "x = 1\n"), ["--config=cfg.py"], "cfg.py defines no get_config"),
    ("config file with a syntax error", None, _write("cfg.py", "def get_config():\n    return (\n"),
     ["--config=cfg.py"], "cfg.py: syntax error on line"),
    ("config file whose import fails", None, _write("cfg.py", "import no_such_module\ndef get_config():\n    pass\n"),
     ["--config=cfg.py"], "cfg.py: ModuleNotFoundError"),
    # data files
    ("missing MNIST file", None, None, ["--config.data.name=mnist", "--config.data.path=nope.npz"], "nope.npz"),
    ("MNIST folder of damaged IDX files", None, _idx_folder, ["--config.data.name=mnist", "--config.data.path=idx"],
     "t10k-images-idx3-ubyte.gz"),
    ("text file named .npy", None, _write("x.npy", "1 2 3\n"), ["--config.data.name=array", "--config.data.path=x.npy"],
     "x.npy (data.path) is not a NumPy array file"),
    ("text file named .npz", None, _write("x.npz", "1 2 3\n"), ["--config.data.name=array", "--config.data.path=x.npz"],
     "x.npz"),
    ("array of strings", None, _npy("s.npy", np.array([["a", "b"]] * 400)),
     ["--config.data.name=array", "--config.data.path=s.npy"], "s.npy"),
    ("missing ratings file", None, _configs, [*RATINGS[:1], "--config.data.path=nope.csv"], "nope.csv"),
    ("ragged ratings row", None, _both(_configs, _ratings(_GOOD_RATINGS + "1,2\n")), RATINGS, "r.csv, line 242"),
    ("rating that is no number", None, _both(_configs, _ratings(_GOOD_RATINGS + "7,99,good\n")), RATINGS,
     "r.csv, line 242"),
    ("timestamp that is no number", None, _both(_configs, _ratings(_GOOD_RATINGS + "7,99,4,extra\n")), RATINGS,
     "r.csv, line 242: the 4th field 'extra'"),
    ("empty ratings file", None, _both(_configs, _ratings("")), RATINGS, "r.csv"),
    ("ratings separated by tabs read as commas", None, _both(_configs, _ratings(_GOOD_RATINGS.replace(",", "\t"))),
     RATINGS, "r.csv, line 1"),
    ("sparse batches with weight decay", None, _both(_configs, _ratings(_GOOD_RATINGS)),
     [*RATINGS, "--config.data.ratings_batches=sparse", "--config.train.weight_decay=0.1"], "data.ratings_batches"),
    ("ratings with the bce loss", None, _both(_configs, _ratings(_GOOD_RATINGS)), [*RATINGS, "--config.train.loss=bce"],
     "train.loss"),
    # workdirs, saved configs, checkpoints, exports, modes
    ("workdir is a file", None, _write("w", "a file\n"), [], "w cannot be created"),
    ("workdir below a file", None, _write("afile", "x\n"), ["--workdir=afile/run"],
     "afile/run cannot be created: "),
    ("workdir where nothing can be written", None, None, ["--workdir=/proc/forbidden"],
     "Workdir /proc/forbidden cannot be"),
    ("missing config file below the folder", None, None, ["--config=configs/nope.py"],
     "--config file configs/nope.py does not exist (in "),
    ("checkpoints/ is a file", "trained", _file_for_folder("checkpoints"), ["--config.train.num_steps=20"], "checkpoints is a file, not a folder"),
    ("export/ is a file", "trained", _file_for_folder("export"), ["--mode=export"], "export is a file, not a folder"),
    ("eval of an empty workdir", None, lambda f: os.makedirs(os.path.join(f, "w")), ["--mode=eval"], "no checkpoint"),
    ("encode without --output", "trained", None, ["--mode=encode"], "--output"),
    ("encode to an unknown format", "trained", None, ["--mode=encode", "--output=codes.txt"], "codes.txt"),
    ("damaged saved config", "trained", _in_workdir("config.json", "{not json"), ["--mode=eval"], "config.json is damaged"),
    ("saved config with an unknown key", "trained", _in_workdir("config.json", '{"model": {"widths": [1]}}'),
     ["--mode=eval"], "unknown key model.widths"),
    ("another architecture over a trained workdir", "trained", None,
     ["--mode=eval", "--config.model.layer_sizes=(784,10,4)"], "changes the architecture"),
    ("the test split where there is none", "trained", None, ["--mode=eval", "--split=test"], "test"),
    ("a ratings workdir asked for its test split", "ratings", None, ["--mode=eval", "--split=test"],
     "held-out ratings only"),
    ("the only checkpoint damaged", "trained", _damage_checkpoint, ["--mode=eval"], "No readable checkpoint in"),
]


def _snapshot(folder):
    """Every path below `folder` with its size and modification time (None: no such folder)."""
    if not os.path.exists(folder):
        return None
    if not os.path.isdir(folder):
        return os.stat(folder).st_size, os.stat(folder).st_mtime_ns
    found = {}
    for parent, names, files in os.walk(folder):
        for name in names + files:
            path = os.path.join(parent, name)
            stat = os.stat(path)
            found[os.path.relpath(path, folder)] = (os.path.isdir(path), stat.st_size, stat.st_mtime_ns)
    return found


@pytest.fixture(scope="module")
def trained_workdirs(tmp_path_factory):
    """A tiny trained workdir of each kind, copied for each case that needs one."""
    from rawtf_ae.program import train
    from rawtf_ae.recommender.ratings_file import write_ratings
    from rawtf_ae.recommender.synthetic import synthetic_ratings

    folder = tmp_path_factory.mktemp("trained")
    overrides = {"train.num_steps": 10, "train.checkpoint_every_steps": 10, "train.keep_checkpoints": 1}
    train.train_and_evaluate(tiny_config(**overrides), str(folder / "trained"))
    path = write_ratings(str(folder / "r.csv"), synthetic_ratings(num_users=60, num_items=30, density=0.2))
    train.train_and_evaluate(tiny_ratings_config(path, **{"train.num_steps": 10}), str(folder / "ratings"))
    return folder


def _run_case(case, root, trained, servers):
    name, workdir, setup, arguments, _ = case
    folder = os.path.join(root, name.replace(" ", "_").replace("/", "_"))
    os.makedirs(folder)
    if workdir:
        shutil.copytree(os.path.join(trained, workdir), os.path.join(folder, "w"))
    if setup is not None:
        setup(folder)
    before = _snapshot(os.path.join(folder, "w"))
    given = TINY if workdir is None and not any(a.startswith("--config=configs/") for a in arguments) else []
    given = [flag for flag in given if flag.split("=")[0] not in {a.split("=")[0] for a in arguments}]
    workdir_flag = [] if any(a.startswith("--workdir=") for a in arguments) else ["--workdir=w"]
    command = [os.path.join(REPO, "train.py"), *given, *arguments, *workdir_flag]
    server = servers.get()  # one command at a time on each of the two servers
    try:
        returncode, stdout, stderr = server.run(command, folder, _ENV | _CASE_ENV.get(name, {}))
    finally:
        servers.put(server)
    result = subprocess.CompletedProcess(command, returncode, stdout, stderr)
    return result, before, _snapshot(os.path.join(folder, "w"))


_ENV = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"} | {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO}


def _tf_config(roles=("chief", "worker", "ps"), task=("chief", 0)):
    # Ports nothing listens on: every case fails before any connection is made.
    cluster = {role: [f"127.0.0.1:{9 + i}"] for i, role in enumerate(roles)}
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": task[0], "index": task[1]}})}


# Cases run with these variables added to _ENV.
_CASE_ENV = {
    "TF_CONFIG that is not JSON": {"TF_CONFIG": '{"cluster": '},
    "TF_CONFIG without parameter servers": _tf_config(roles=("chief", "worker")),
    "the chief's command on a worker task": _tf_config(task=("worker", 0)),
    "a server for the chief task": _tf_config(),
    "a server task beyond the cluster": _tf_config(task=("worker", 3)),
    "XLA on parameter servers": _tf_config(),
    "pretraining on parameter servers": _tf_config(),
}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, trained_workdirs):
    """Every case's `(result, workdir before, workdir after)`, two at a time. Each command is
    `python train.py` forked from a process that has imported TensorFlow already
    (`forked_train_py`): the same code from `train.py`'s `__main__` on, without 40 imports of
    TensorFlow (~3.5 s of CPU each)."""
    root = tmp_path_factory.mktemp("campaign")
    servers = queue.Queue()
    started = [forked_train_py.Server(_ENV) for _ in range(2)]
    for server in started:
        servers.put(server)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            trained = str(trained_workdirs)
            futures = {case[0]: pool.submit(_run_case, case, str(root), trained, servers) for case in CASES}
            return {name: future.result() for name, future in futures.items()}
    finally:
        for server in started:
            server.close()


def test_the_campaign_covers_forty_bad_inputs_on_every_path():
    assert len(CASES) >= 40 and len({case[0] for case in CASES}) == len(CASES)


# Cases refused before the data is read (the workdir is checked first).
_BEFORE_DATA = {"workdir is a file", "workdir below a file", "workdir where nothing can be written"}


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_a_bad_input_is_one_clear_line_and_changes_nothing(case, campaign):
    name, _, _, _, named = case
    result, before, after = campaign[name]
    errors = [line for line in result.stderr.splitlines() if line.startswith("train.py: error:")]
    assert result.returncode == 1, result.stderr[-3000:]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.rstrip().endswith(errors[0]), result.stderr[-3000:]  # the last line
    assert named in errors[0], errors[0]
    assert after == before, f"the workdir changed: {before} -> {after}"
    assert name not in _BEFORE_DATA or "data:" not in result.stderr, result.stderr[-3000:]
