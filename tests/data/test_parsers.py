"""Safe parsers: hostile IDX, NumPy and ratings files give `ValueError` naming the file, never
a crash, a hang or a huge allocation; fuzzed with Hypothesis on a bounded budget."""

import gzip
import io
import os
import struct
import zipfile

import ml_collections
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawtf_ae.data import array_files, idx, sources
from rawtf_ae.recommender import ratings_file

pytestmark = pytest.mark.fault
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _idx_bytes(array, type_code=0x08):
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _load_folder(folder, **values):
    config = ml_collections.ConfigDict(
        dict(name="mnist", path=str(folder), num_train=0, num_validation=1, split_seed=0)
    )
    config.update(values)
    return sources.load(config, seed=0)


def test_absurd_dimensions_are_refused_before_reading(tmp_path):
    path = tmp_path / "huge"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**31, 2**16, 2**16) + b"\0" * 16)
    with pytest.raises(ValueError, match=r"over the \d+-byte limit: the header is corrupt"):
        idx.read_idx(str(path))
    path.write_bytes(bytes([0, 0, 8, 200]) + b"\0" * 64)
    with pytest.raises(ValueError, match="declares 200 dimensions"):
        idx.read_idx(str(path))


def test_trailing_bytes_wrong_kinds_and_bad_labels_are_refused(tmp_path):
    images = np.zeros((4, 28, 28), np.uint8)
    (tmp_path / "trailing").write_bytes(_idx_bytes(images) + b"extra")
    with pytest.raises(ValueError, match="has bytes after the data"):
        idx.read_idx(str(tmp_path / "trailing"))
    folder = tmp_path / "labels_as_images"
    folder.mkdir()
    (folder / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(ValueError, match=r"should hold uint8 images \[n, rows, cols\] \(magic 2051\)"):
        _load_folder(folder)
    folder = tmp_path / "bad_labels"
    folder.mkdir()
    (folder / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(images))
    (folder / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array([1, 2, 12, 3])))
    with pytest.raises(ValueError, match="has label 12; MNIST labels are 0 to 9"):
        _load_folder(folder)


def test_npz_that_decompresses_past_the_limit_is_refused(tmp_path, monkeypatch):
    np.savez_compressed(tmp_path / "big.npz", x_train=np.zeros((1000, 100), np.float32))
    monkeypatch.setattr(array_files, "MAX_ARRAY_BYTES", 10_000)
    config = ml_collections.ConfigDict(
        dict(name="array", path=str(tmp_path / "big.npz"), num_train=0, num_validation=1, split_seed=0)
    )
    with pytest.raises(ValueError, match="decompresses to .* over the 10000-byte limit"):
        sources.load(config, seed=0)


@FUZZ
@given(st.binary(max_size=300), st.booleans())
def test_fuzzed_idx_bytes_give_only_value_errors(tmp_path, blob, compress):
    path = tmp_path / "fuzz.idx"
    path.write_bytes(gzip.compress(blob) if compress else blob)
    try:
        array = idx.read_idx(str(path))
    except ValueError as e:
        assert str(path) in str(e)
    else:
        assert array.size * array.itemsize == len(blob) - 4 - 4 * array.ndim


@FUZZ
@given(st.data())
def test_mutated_valid_idx_files_give_only_value_errors(tmp_path, draw):
    valid = bytearray(_idx_bytes(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)))
    for _ in range(draw.draw(st.integers(1, 4))):
        kind = draw.draw(st.sampled_from(["flip", "cut", "append"]))
        if kind == "flip" and valid:
            i = draw.draw(st.integers(0, len(valid) - 1))
            valid[i] = draw.draw(st.integers(0, 255))
        elif kind == "cut":
            del valid[draw.draw(st.integers(0, len(valid))) :]
        else:
            valid += draw.draw(st.binary(max_size=8))
    path = tmp_path / "mutated.gz"
    path.write_bytes(gzip.compress(bytes(valid)))
    try:
        idx.read_idx(str(path))
    except ValueError as e:
        assert str(path) in str(e)


@FUZZ
@given(st.binary(max_size=400), st.sampled_from([".npy", ".npz"]))
def test_fuzzed_numpy_files_give_only_documented_errors(tmp_path, blob, suffix):
    path = tmp_path / f"fuzz{suffix}"
    if suffix == ".npz" and blob[:1] == b"Z":
        # Half the cases: a real zip holding a fuzzed .npy member.
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("x_train.npy", blob[1:])
        blob = buffer.getvalue()
    path.write_bytes(blob)
    config = ml_collections.ConfigDict(
        dict(name="array", path=str(path), num_train=0, num_validation=1, split_seed=0)
    )
    try:
        splits = sources.load(config, seed=0)
    except ValueError as e:
        assert str(path) in str(e)
    else:
        assert np.isfinite(splits.train).all()


_FIELDS = st.sampled_from(
    [
        "1",
        "2",
        "42",
        "u7",
        "",
        " ",
        "3.5",
        "-1",
        "1e3",
        "nan",
        "inf",
        "-inf",
        "NaN",
        '"',
        '"4"',
        "x",
        "\ufeff",
    ]
)


@FUZZ
@given(
    st.lists(st.lists(_FIELDS, min_size=0, max_size=6), max_size=8),
    st.sampled_from([",", "\t", "::"]),
    st.sampled_from(["\n", "\r\n"]),
    st.booleans(),
)
def test_fuzzed_ratings_files_give_only_value_errors_naming_the_file(tmp_path, rows, delimiter, newline, bom):
    path = tmp_path / "fuzz.csv"
    text = newline.join(delimiter.join(fields) for fields in rows)
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8", newline="")
    try:
        parsed = ratings_file.read_ratings(str(path), delimiter)
    except ValueError as e:
        assert str(path) in str(e)
    else:
        assert len(parsed) > 0 and np.isfinite(parsed.values).all()
        assert all(parsed.users) and all(parsed.items)
        assert len(set(zip(parsed.users, parsed.items))) == len(parsed)


@FUZZ
@given(st.binary(max_size=300))
def test_fuzzed_ratings_bytes_give_only_value_errors(tmp_path, blob):
    path = tmp_path / "fuzz.bin"
    path.write_bytes(blob)
    try:
        ratings_file.read_ratings(str(path))
    except ValueError as e:
        assert str(path) in str(e)


def test_valid_files_still_load(mnist_dir):
    images = idx.read_idx(os.path.join(mnist_dir, "t10k-images-idx3-ubyte.gz"))
    labels = idx.read_idx(os.path.join(mnist_dir, "t10k-labels-idx1-ubyte.gz"))
    assert images.shape == (10_000, 28, 28) and labels.shape == (10_000,) and labels.max() == 9
