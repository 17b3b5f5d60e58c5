"""The README tells the truth: its research-code example runs, its test command is CI's."""

import os
import re

from tests.conftest import REPO


def _readme():
    with open(os.path.join(REPO, "README.md")) as f:
        return f.read()


def test_readme_research_example_runs():
    (snippet,) = re.findall(r"```python\n(.*?)```", _readme(), flags=re.S)
    namespace = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert tuple(namespace["codes"].shape) == (128, 196)
    assert float(namespace["loss"]) < 0.2  # BCE per pixel of curves: ~0.69 at initialization


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n# Install and run the tests\n(.*?)\n```", _readme())
    with open(os.path.join(REPO, ".ci", "run")) as f:
        assert commands and commands[0] in f.read()
