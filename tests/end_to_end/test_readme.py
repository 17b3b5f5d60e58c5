"""The README tells the truth: its research-code example runs, its test command is CI's."""

import os
import re

import numpy as np

from tests.conftest import REPO


def _readme(page="README.md"):
    with open(os.path.join(REPO, page)) as f:
        return f.read()


def _python_blocks(page="README.md"):
    return re.findall(r"```python\n(.*?)```", _readme(page), flags=re.S)


def test_the_readme_is_a_front_door_and_every_moved_page_is_one_link_away():
    readme = _readme()
    assert len(readme.splitlines()) < 200
    pages = sorted(set(re.findall(r"\]\((docs/[\w-]+\.md)\)", readme)))
    assert sorted(f"docs/{name}" for name in os.listdir(os.path.join(REPO, "docs"))) == pages
    for page in pages:
        assert "](../README.md)" in _readme(page), page
        for target in re.findall(r"\]\(((?:\.\./|[\w-]+\.md)[^)#]*)\)", _readme(page)):
            assert os.path.exists(os.path.join(REPO, "docs", target)), f"{page} links to {target}"


def test_readme_research_example_runs():
    snippet = _python_blocks()[0]
    namespace = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert tuple(namespace["codes"].shape) == (128, 196)
    assert float(namespace["loss"]) < 0.2  # BCE per pixel of curves: ~0.69 at initialization


def test_readme_pieces_example_runs():
    namespace = {}
    exec(compile(_python_blocks("docs/library.md")[0], "docs/library.md", "exec"), namespace)
    assert int(namespace["trained"].step.numpy()) == 100
    assert 0 < float(namespace["mean_loss"]) < 0.69  # below BCE at initialization


def test_library_pretraining_and_fine_tuning_example_runs():
    namespace = {}
    exec(compile(_python_blocks("docs/library.md")[1], "docs/library.md", "exec"), namespace)
    assert len(namespace["layers"]) == 2
    assert namespace["error"] < 0.25  # the two classes separate easily; chance is 0.5


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n# Install and run the tests\n(.*?)\n```", _readme())
    with open(os.path.join(REPO, ".ci", "run")) as f:
        assert commands and commands[0] in f.read()


def test_readme_loading_example_runs_on_an_exported_workdir(tmp_path, monkeypatch):
    from rawtf_ae.program import train
    from tests.conftest import tiny_config

    monkeypatch.chdir(tmp_path)
    train.train_and_evaluate(tiny_config(**{"train.num_steps": 10}), "runs/x")
    namespace = {"images": np.random.default_rng(0).uniform(size=(4, 784)).astype(np.float32)}
    exec(compile(_python_blocks()[1], "README.md", "exec"), namespace)
    assert tuple(namespace["codes"].shape) == (4, 16)
    np.testing.assert_allclose(
        namespace["model"].encode(namespace["images"]).numpy(),
        namespace["codes"].numpy(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_readme_recommend_example_runs_on_a_ratings_workdir(tmp_path, monkeypatch):
    from rawtf_ae.program import train
    from rawtf_ae.recommender import ratings_file
    from rawtf_ae.recommender.synthetic import synthetic_ratings
    from tests.conftest import tiny_ratings_config

    monkeypatch.chdir(tmp_path)
    path = ratings_file.write_ratings("r.csv", synthetic_ratings(num_users=100, num_items=50, density=0.2))
    config = tiny_ratings_config(path, **{"train.num_steps": 10})
    train.train_and_evaluate(config, "runs/ratings")
    namespace = {}
    exec(compile(_python_blocks("docs/recommender.md")[0], "docs/recommender.md", "exec"), namespace)
    top = namespace["top"]
    assert len(top) == 10 and not {"12", "40", "7"} & {item for item, _ in top}



def _pages():
    return ["README.md", *(f"docs/{name}" for name in sorted(os.listdir(os.path.join(REPO, "docs"))))]


def _resolve(dotted):
    """Imports and reads `rawtf_ae.a.b.c` as far as it names modules and attributes."""
    import importlib

    parts = dotted.split(".")
    value = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], 2):
        try:
            value = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            if not hasattr(value, part):
                return False
            value = getattr(value, part)
    return True


def test_every_rawtf_ae_name_the_docs_give_is_today_s():
    # Every `rawtf_ae.x.y` a page names (prose, commands and code blocks alike) and every
    # import in its code blocks resolves, with no DeprecationWarning: no page teaches an old
    # flat path. The blocks not run above at least compile.
    import ast
    import warnings

    checked = 0
    for page in _pages():
        text = _readme(page)
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            for dotted in sorted(set(re.findall(r"\brawtf_ae(?:\.[A-Za-z_]\w*)+", text))):
                assert _resolve(dotted), f"{page} names {dotted}, which does not exist"
                checked += 1
            for block in _python_blocks(page):
                for node in ast.walk(ast.parse(block, page)):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "rawtf_ae":
                        exec(compile(ast.Module([node], []), page, "exec"), {})
                        checked += 1
    assert checked > 30
