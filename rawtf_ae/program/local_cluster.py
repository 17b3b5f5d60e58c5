"""A parameter-server cluster on this machine, for trying `train.strategy=parameter_server`.

    python -m rawtf_ae.program.local_cluster --ps=2 --workers=2 train.py --config=... --workdir=...

starts `--ps` parameter servers and `--workers` workers (`train.py --mode=server`, each with its
own `TF_CONFIG`) on free ports of 127.0.0.1, then the chief (`train.py` with the arguments
given and `--config.train.strategy=parameter_server`), and ends the servers when the chief
ends; its exit status is the chief's. The servers' output goes to `--logs` (one file each).
`--isolate` first moves the whole cluster into a new network namespace with only loopback up
(`unshare -n`, as root): `tf.distribute.Server` listens on every interface whatever address its
cluster names, and this keeps it off the network. `--timeout` ends everything after that many
seconds (a step that crashes every worker leaves the chief waiting for them). `--serve_only`
starts the servers alone and prints their cluster, for chiefs started by hand (or by tests).

On real machines, give every task the same cluster and its own task, e.g. for parameter
server 1: `TF_CONFIG='{"cluster": {"chief": ["h0:2222"], "worker": ["h1:2222", "h2:2222"],
"ps": ["h3:2222", "h4:2222"]}, "task": {"type": "ps", "index": 1}}' python train.py
--mode=server`; the chief (`"task": {"type": "chief", "index": 0}`) runs the training command.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports of 127.0.0.1 (held open together while chosen)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def cluster_spec(num_ps: int, num_workers: int) -> dict:
    """`{"chief": [...], "worker": [...], "ps": [...]}` on free ports of 127.0.0.1."""
    ports = iter(free_ports(1 + num_workers + num_ps))
    return {
        role: [f"127.0.0.1:{next(ports)}" for _ in range(count)]
        for role, count in (("chief", 1), ("worker", num_workers), ("ps", num_ps))
    }


def tf_config(cluster: dict, role: str, index: int) -> str:
    return json.dumps({"cluster": cluster, "task": {"type": role, "index": index}})


def start_servers(script: str, cluster: dict, logs: str) -> dict:
    """`{(role, index): Popen}`: `python script --mode=server` for each worker and ps task."""
    servers = {}
    for role in ("ps", "worker"):
        for index in range(len(cluster[role])):
            env = dict(os.environ, TF_CONFIG=tf_config(cluster, role, index))
            log = open(os.path.join(logs, f"{role}_{index}.log"), "w")
            servers[role, index] = subprocess.Popen(
                [sys.executable, script, "--mode=server"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
            log.close()
    return servers


class ServerExited(RuntimeError):
    """A server exited before it listened (e.g. its port was taken)."""


def wait_until_listening(cluster: dict, servers: dict, timeout: float = 120) -> None:
    """Returns once every server accepts connections on its port and is still running;
    `ServerExited` if one exits first, `RuntimeError` if `timeout` seconds pass."""
    deadline = time.monotonic() + timeout

    def check_running(role, index, process):
        if process.poll() is not None:
            raise ServerExited(f"local_cluster: {role} {index} exited with status {process.returncode}")

    for (role, index), process in servers.items():
        host, port = cluster[role][index].rsplit(":", 1)
        while True:
            check_running(role, index, process)
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    message = f"local_cluster: {role} {index} did not listen within {timeout:g} s"
                    raise RuntimeError(message) from None
                time.sleep(0.1)
    for (role, index), process in servers.items():  # one that answered may have exited since
        check_running(role, index, process)


def start_cluster(
    script: str, num_ps: int, num_workers: int, logs: str, tries: int = 3, timeout: float = 120
) -> tuple:
    """`(cluster, servers)` once every server listens. The free ports are released before the
    servers bind them, so another process may take one in between: a server that exits before
    it listens (its port taken) makes a new cluster on other ports, `tries` times in all (a
    server that does not listen in time is an error at once)."""
    for attempt in range(max(tries, 1)):
        cluster = cluster_spec(num_ps, num_workers)
        servers = start_servers(script, cluster, logs)
        try:
            wait_until_listening(cluster, servers, timeout)
            return cluster, servers
        except RuntimeError as e:
            _stop(servers.values())
            if not isinstance(e, ServerExited) or attempt >= tries - 1:
                raise


def _stop(processes) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
    for process in processes:
        process.wait()


def run(script: str, arguments: list, num_ps: int, num_workers: int, logs: str, timeout: float) -> int:
    """Starts the servers and the chief, waits for the chief, ends the servers; the chief's status."""
    os.makedirs(logs, exist_ok=True)
    try:
        cluster, servers = start_cluster(script, num_ps, num_workers, logs)
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 1
    env = dict(os.environ, TF_CONFIG=tf_config(cluster, "chief", 0))
    command = [sys.executable, script, *arguments, "--config.train.strategy=parameter_server"]
    print(f"local_cluster: {num_ps} ps, {num_workers} worker(s) on 127.0.0.1 (logs in {logs})", flush=True)
    chief = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + timeout if timeout else None
    try:
        while chief.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                print(f"local_cluster: the chief ran past --timeout={timeout:g} s: ending it", flush=True)
                chief.kill()
                chief.wait()
                return 124
            time.sleep(0.2)
        return chief.returncode
    finally:
        _stop([chief, *servers.values()])


def serve_only(script: str, num_ps: int, num_workers: int, logs: str) -> int:
    """`--serve_only`: starts the servers, prints `{"cluster": ..., "pids": {"ps_0": ...}}` as
    one JSON line once they all listen, and ends them when its standard input closes."""
    os.makedirs(logs, exist_ok=True)
    try:
        cluster, servers = start_cluster(script, num_ps, num_workers, logs)
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 1
    try:
        pids = {f"{role}_{index}": process.pid for (role, index), process in servers.items()}
        print(json.dumps({"cluster": cluster, "pids": pids}), flush=True)
        sys.stdin.read()  # until the caller closes it
        return 0
    finally:
        _stop(servers.values())


def isolated(command: list) -> int:
    """Runs `command` in a new network namespace with only loopback up (`unshare -n`, as
    root); its exit status. Everything it starts stays off the network, and the namespace's
    `lo` counters (`/proc/net/dev`) count its traffic alone (`benchmarks.parameter_server`)."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        sys.exit("local_cluster: --isolate needs `unshare` and `ip` (util-linux, iproute2).")
    shell = "ip link set lo up && exec " + " ".join(_quoted(a) for a in command)
    return subprocess.call(["unshare", "-n", "sh", "-c", shell])


def _isolated(argv) -> int:
    """Runs this command again inside a new network namespace with only loopback up."""
    rest = [a for a in argv if a != "--isolate"]
    return isolated([sys.executable, "-m", "rawtf_ae.program.local_cluster", *rest])


def _quoted(argument: str) -> str:
    return "'" + argument.replace("'", "'\\''") + "'"


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m rawtf_ae.program.local_cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ps", type=int, default=2, help="parameter servers (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="workers (default 2)")
    parser.add_argument("--logs", default=None, help="folder for the servers' output (default: a new one)")
    parser.add_argument("--timeout", type=float, default=0, help="end all after this many s (0: never)")
    parser.add_argument("--isolate", action="store_true", help="in a network namespace with only loopback")
    parser.add_argument(
        "--serve_only",
        action="store_true",
        help="start the servers only, print the cluster (JSON), serve until stdin closes",
    )
    parser.add_argument("script", help="train.py (or another script whose --mode=server serves)")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="the chief's arguments")
    args = parser.parse_args(argv)
    if args.ps < 1 or args.workers < 1:
        parser.error(f"--ps and --workers must be at least 1, got --ps={args.ps} --workers={args.workers}")
    if not os.path.isfile(args.script):
        parser.error(f"{args.script} does not exist (in {os.getcwd()})")
    if args.isolate:
        sys.exit(_isolated(argv))
    logs = args.logs or tempfile.mkdtemp(prefix="rawtf_ae_cluster_")
    if args.serve_only:
        sys.exit(serve_only(args.script, args.ps, args.workers, logs))
    sys.exit(run(args.script, args.arguments, args.ps, args.workers, logs, args.timeout))


if __name__ == "__main__":
    main()
