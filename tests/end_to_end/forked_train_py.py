"""`python train.py` runs forked from one process that has loaded TensorFlow once (tests only).

Each `python train.py` spends ~3.5 s of its CPU importing TensorFlow before it reads a flag.
The bad-input campaign runs forty such commands: this server imports what `train.py` imports,
then for each request (a JSON line: argv, cwd, env, output files) forks a child that is that
command from there on (its own folder, environment, `sys.argv`, file descriptors 1 and 2, and
`__main__` run from `train.py`), and answers with the child's exit status. Nothing of a run
reaches the server: each child exits with `os._exit`, so what only an interpreter's shutdown
does (non-daemon threads joined, atexit handlers) is not exercised here; tests/end_to_end/
test_train_py.py runs `train.py` as real subprocesses, bad inputs included.
"""

import json
import os
import runpy
import select
import signal
import sys
import traceback


def _child(request) -> int:
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # not the server's request pipe
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))  # as `python train.py` sets it
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
        return 0
    except SystemExit as e:  # as the interpreter ends: a message is printed, and exits 1
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 (what the interpreter would print and exit with)
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def main() -> None:
    import tensorflow  # noqa: F401, PLC0415

    from rawtf_ae.program import cli  # noqa: F401, PLC0415

    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(request)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(json.dumps(os.waitstatus_to_exitcode(status)), flush=True)


if __name__ == "__main__":
    main()


class Server:
    """One forking server process; `run(argv, cwd, env, timeout)` -> `(returncode, stdout, stderr)`."""

    def __init__(self, env: dict):
        import subprocess  # noqa: PLC0415

        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.end_to_end.forked_train_py"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # its children in its process group, killed with it
            env=env,
            cwd=env["PYTHONPATH"],
        )

    def run(self, argv: list, cwd: str, env: dict, timeout: float = 300) -> tuple[int, str, str]:
        outputs = {name: os.path.join(cwd, f".{name}.txt") for name in ("stdout", "stderr")}
        request = {"argv": argv, "cwd": cwd, "env": env, **outputs}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:  # a command that hangs: end the server (and so its answer) with an error
            os.killpg(self.process.pid, signal.SIGKILL)
            raise TimeoutError(f"train.py {' '.join(argv[1:])} ran past {timeout} s")
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError("the forking train.py server died")
        texts = []
        for path in outputs.values():
            with open(path) as f:
                texts.append(f.read())
            os.remove(path)
        return json.loads(answer), *texts

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)
