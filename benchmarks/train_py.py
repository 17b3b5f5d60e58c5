"""`train.py` as the README runs it, in a subprocess, and what its log says: the program users
run, measured (`benchmarks.catalog_scale --end_to_end` and `--recipe` print these reports)."""

import dataclasses
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class Run:
    log: str  # stdout and stderr together
    peak_kib: int  # the child's own peak resident memory
    wall: float  # seconds, from starting Python to its exit

    @property
    def rates(self) -> list[int]:
        """The logged examples/s of each window after the first (which includes tracing),
        or the one window when only one was logged."""
        rates = [int(r) for r in re.findall(r"step \d+/\d+: loss \S+, (\d+) examples/s", self.log)]
        return rates[1:] or rates

    @property
    def saves(self) -> list[tuple[str, str]]:
        """`(size, seconds)` of each checkpoint the run logged."""
        return re.findall(r"\] saved \S+ \((.+?) in (\S+) s\)", self.log)

    def logged(self, pattern: str) -> str:
        """The rest of the first log line matching `pattern` (a regex after the `] `)."""
        found = re.search(r"\] " + pattern + r"(.*)", self.log)
        return found.group(1) if found else "(not logged)"


def run(config: str, data: str, workdir: str, *overrides: str) -> Run:
    """Runs `python train.py --config=configs/<config> --config.data.path=<data> --workdir=...`
    with `overrides` (e.g. `--config.train.num_steps=100`); exits naming the failure."""
    command = [
        sys.executable,
        os.path.join(REPO, "train.py"),
        f"--config={os.path.join(REPO, 'configs', config)}",
        f"--config.data.path={data}",
        f"--workdir={workdir}",
        *overrides,
    ]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with process.stdout:
        log = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)  # this child's own peak memory
    code = os.waitstatus_to_exitcode(status)
    if code:
        last = log.strip().splitlines()[-1] if log.strip() else "(no output)"
        sys.exit(f"train.py --config=configs/{config} on {data} failed (exit {code}): {last}")
    return Run(log, usage.ru_maxrss, time.perf_counter() - started)


def write_catalog(path: str, users: int, items: int, per_user: int) -> str:
    """A synthetic ratings CSV (`rawtf_ae.recommender.synthetic`, flat popularity) at `path`."""
    subprocess.run(
        [sys.executable, "-m", "rawtf_ae.recommender.synthetic", path, f"--users={users}",
         f"--items={items}", f"--ratings_per_user={per_user}", "--popularity_exponent=0"],
        check=True, capture_output=True, cwd=REPO,
    )  # fmt: skip
    return path


def spread(rates) -> str:
    """`median (min-max)` of some rates."""
    return f"{statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f})"


def print_end_to_end(data: str, catalog: tuple, steps: int, count: int) -> None:
    """`train.py` as the README runs it (`configs/catalog_synthetic.py`) on `data`, or on a
    synthetic `catalog` of `(users, items, ratings per user)`, `count` times in
    subprocesses (nothing else of this benchmark in memory): users/s (the median and range of
    every run's logged windows, and each run's median), peak RSS, checkpoints, wall time."""
    with tempfile.TemporaryDirectory() as folder:
        path = data or write_catalog(os.path.join(folder, "catalog.csv"), *catalog)
        steps = [f"--config.train.num_steps={steps}"] if steps else []
        runs = [
            run("catalog_synthetic.py", path, os.path.join(folder, f"run{i}"), *steps) for i in range(count)
        ]
    print(
        f"\ntrain.py end to end, configs/catalog_synthetic.py on {os.path.basename(path)}, {len(runs)} run(s):\n"
    )
    print(f"- {runs[0].logged('data: ')}")
    rates = [r for each in runs for r in each.rates]
    medians = ", ".join(f"{statistics.median(each.rates):,.0f}" for each in runs)
    print(f"- users/s over the logged windows after each run's first: {spread(rates)}; per run {medians}")
    peaks = ", ".join(f"{each.peak_kib / 2**20:.2f}" for each in runs)
    print(f"- peak RSS: {peaks} GiB (largest {max(each.peak_kib for each in runs):,} KiB)")
    for index, each in enumerate(runs):
        saves = ", ".join(f"{size} saved in {took} s" for size, took in each.saves) or "none logged"
        minutes, seconds = divmod(round(each.wall), 60)
        print(
            f"- run {index + 1}: checkpoints {saves}; {minutes} min {seconds} s from starting Python to the export"
        )


def print_recipe(sizes: list, users: int, per_user: int, count: int, before: bool) -> None:
    """The shipped small recipe (`configs/recommender_synthetic.py`) with its defaults, by
    `train.py`, on files of the same users and ratings over `--recipe_items` items: the runs
    alternate (small, large, small, ...), and each file's users/s pools the logged windows;
    `before`: also 60 steps of the largest with the old defaults (adam, one re-feeding step)."""
    with tempfile.TemporaryDirectory() as folder:
        files = {n: write_catalog(os.path.join(folder, f"{n}.csv"), users, n, per_user) for n in sizes}
        runs = {n: [] for n in sizes}
        for index in range(count):
            for n in sizes:
                runs[n].append(
                    run("recommender_synthetic.py", files[n], os.path.join(folder, f"{n}-{index}"))
                )
        if before:  # what the recipe did before 'auto': adam, one re-feeding step
            overrides = ["--config.train.optimizer=adam", "--config.train.dense_refeeding=1"]
            steps = ["--config.train.num_steps=60", "--config.train.log_every_steps=20"]
            before = run(
                "recommender_synthetic.py",
                files[sizes[-1]],
                os.path.join(folder, "before"),
                *overrides,
                *steps,
            )
    print(
        f"\ntrain.py --config=configs/recommender_synthetic.py (its defaults), {users:,} users x "
        f"{per_user} ratings, {count} runs per file, alternating; users/s: the median "
        "(range) of the logged windows after each run's first\n"
    )
    print("| items | batches | optimizer | re-feeding | users/s | per-run medians | x the smallest |")
    print("|---:|---|---|---:|---:|---|---:|")
    smallest = statistics.median([r for each in runs[sizes[0]] for r in each.rates])
    for n in sizes:
        rates = [r for each in runs[n] for r in each.rates]
        first = runs[n][0]
        batches = first.logged(r"data.ratings_batches='auto': ").split(" ")[0]
        choice = first.logged(r"train.optimizer='auto': ").split(" ")[0]
        refeeding = first.logged(r"train.dense_refeeding='auto': ").split(" ")[0]
        medians = ", ".join(f"{statistics.median(each.rates):,.0f}" for each in runs[n])
        ratio = statistics.median(rates) / smallest
        print(f"| {n:,} | {batches} | {choice} | {refeeding} | {spread(rates)} | {medians} | {ratio:.2f}x |")
    if before:
        print(
            f"\nBefore (`--config.train.optimizer=adam --config.train.dense_refeeding=1`, 60 steps) at "
            f"{sizes[-1]:,} items: {spread(before.rates)} users/s, "
            f"{statistics.median(before.rates) / smallest:.3f}x the smallest"
        )
