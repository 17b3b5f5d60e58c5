"""`python -m rawtf_ae.program.local_cluster`'s start: a server that exits before it listens
(its port taken between choosing and binding it) gets the cluster started again on new ports.
The servers here are stand-ins that listen on 127.0.0.1 (the real ones: test_parameter_server)."""

import subprocess
import sys

import pytest

from rawtf_ae.program import local_cluster

_LISTEN = (
    "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); "
    "s.listen(); time.sleep(120)"
)


def _stand_ins(fail_first: int, failure="raise SystemExit(1)"):
    clusters = []

    def start_servers(script, cluster, logs):
        clusters.append(cluster)
        servers = {}
        for role in ("ps", "worker"):
            for index, address in enumerate(cluster[role]):
                port = address.rsplit(":", 1)[1]
                failing = len(clusters) <= fail_first and role == "ps" and index == 1
                command = (
                    [sys.executable, "-c", failure]
                    if failing
                    else [sys.executable, "-c", _LISTEN, port]
                )
                servers[role, index] = subprocess.Popen(command)
        return servers

    return clusters, start_servers


def test_a_server_that_exits_before_listening_gets_a_new_cluster(monkeypatch, tmp_path):
    clusters, start_servers = _stand_ins(fail_first=1)
    monkeypatch.setattr(local_cluster, "start_servers", start_servers)
    cluster, servers = local_cluster.start_cluster("train.py", 2, 2, str(tmp_path))
    try:
        assert len(clusters) == 2 and cluster is clusters[1]
        assert all(process.poll() is None for process in servers.values())
    finally:
        local_cluster._stop(servers.values())


def test_a_server_that_never_listens_is_one_error_after_the_tries(monkeypatch, tmp_path):
    clusters, start_servers = _stand_ins(fail_first=5)
    monkeypatch.setattr(local_cluster, "start_servers", start_servers)
    with pytest.raises(RuntimeError, match="ps 1 exited with status 1"):
        local_cluster.start_cluster("train.py", 2, 1, str(tmp_path), tries=3)
    assert len(clusters) == 3


def test_a_server_that_does_not_listen_in_time_is_an_error_at_once(monkeypatch, tmp_path):
    clusters, start_servers = _stand_ins(fail_first=5, failure="import time; time.sleep(60)")
    monkeypatch.setattr(local_cluster, "start_servers", start_servers)
    with pytest.raises(RuntimeError, match="ps 1 did not listen within 1 s"):
        local_cluster.start_cluster("train.py", 2, 1, str(tmp_path), timeout=1)
    assert len(clusters) == 1  # not retried: a slow server stays slow
