"""Datasets for the model landscapes: recorded fields, standardisation, digests and one-line errors."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from sgdsweep.errors import ConfigError
from sgdsweep.models.datasets import load_data


@pytest.mark.parametrize(("name", "n", "p", "task"), [("diabetes", 442, 10, "regression"),
                                                       ("breast_cancer", 569, 30, "binary"),
                                                       ("wine", 178, 13, "binary"),
                                                       ("iris", 150, 4, "binary"),
                                                       ("digits", 1797, 61, "binary")])
def test_bundled_sets_fields_and_standardisation(name, n, p, task):
    d = load_data(name)
    assert (d.n, d.p, d.task, d.name) == (n, p, task, name)
    assert d.X.flags.c_contiguous and d.X.dtype == np.float64 and d.y.shape == (n,)
    np.testing.assert_allclose(d.X.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(d.X.std(axis=0), 1.0, rtol=1e-12)
    if task == "regression":
        assert abs(d.y.mean()) < 1e-12 and abs(d.y.std() - 1.0) < 1e-12
    else:
        assert set(np.unique(d.y)) == {0.0, 1.0}


def test_digest_is_sha256_of_the_bytes_and_stable():
    a, b = load_data("wine", n=60, features=5, seed=3), load_data("wine", n=60, features=5, seed=3)
    expect = hashlib.sha256(a.X.tobytes() + a.y.tobytes()).hexdigest()[:16]
    assert a.digest == b.digest == expect
    assert (a.n, a.p) == (60, 5)
    assert load_data("wine", n=60, features=5, seed=4).digest != a.digest


def test_class_vs_rest_and_subsample_rows_come_from_the_set():
    full = load_data("iris", positive_class=2)
    assert full.y.sum() == 50  # iris has 50 of each class
    sub = load_data("iris", n=30, seed=1, positive_class=2)
    from sklearn.datasets import load_iris
    raw = load_iris().data
    rows = np.random.default_rng([1, 0x5AB5E7]).permutation(150)[:30]
    np.testing.assert_allclose(sub.X, (raw[rows] - raw[rows].mean(0)) / raw[rows].std(0), rtol=1e-12)


def test_teacher_student_planted_model():
    d = load_data("teacher_student", n=4000, features=8, noise=0.0, seed=2)
    # noise 0: y is exactly linear in x, so least squares leaves no residual
    coef, *_ = np.linalg.lstsq(d.X, d.y, rcond=None)
    assert np.abs(d.X @ coef - d.y).max() < 1e-10
    b = load_data("teacher_student", n=500, features=8, task="binary", seed=2)
    assert b.task == "binary" and 0 < b.y.mean() < 1


def test_file_npz_and_csv_agree(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((20, 3)), rng.standard_normal(20)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    np.savetxt(tmp_path / "d.csv", np.column_stack([X, y]), delimiter=",", header="a,b,c,t", comments="")
    a, b = load_data("file", path=tmp_path / "d.npz"), load_data("file", path=tmp_path / "d.csv")
    assert a.task == "regression" and (a.n, a.p) == (20, 3)
    np.testing.assert_allclose(a.X, b.X, rtol=1e-14)
    np.testing.assert_allclose(a.y, b.y, rtol=1e-14)


def test_errors_name_the_field(tmp_path):
    def err(**kw):
        with pytest.raises(ConfigError) as e:
            load_data(**kw)
        msg = str(e.value)
        assert "\n" not in msg
        return msg

    assert err(name="mnist").startswith("dataset: unknown 'mnist' (known: diabetes")
    assert err(name="file", path=tmp_path / "none.npz").startswith("path: no such file")
    X = np.ones((5, 2))
    X[:, 0] = np.arange(5)
    X[2, 1] = np.nan
    np.savez(tmp_path / "nan.npz", X=X, y=np.arange(5.0))
    assert err(name="file", path=tmp_path / "nan.npz").startswith("path: file holds 1 NaN/inf values")
    np.savez(tmp_path / "const.npz", X=np.column_stack([np.arange(5.0), np.ones(5)]), y=np.arange(5.0))
    assert err(name="file", path=tmp_path / "const.npz").startswith("features: column 1 ('x1') is constant")
    np.savez(tmp_path / "one.npz", X=np.arange(10.0).reshape(5, 2), y=np.ones(5))
    assert err(name="file", path=tmp_path / "one.npz", task="binary").startswith("task: the binary target")
    assert err(name="wine", n=500).startswith("n: 500 rows asked, wine has 178")
    assert err(name="wine", n=1).startswith("n: must be >= 2")
    assert err(name="wine", features=0).startswith("features: must be >= 1")
    assert err(name="teacher_student", n=10).startswith("n: the teacher_student dataset needs")
    assert err(name="diabetes", task="binary").startswith("task: diabetes has a continuous target")
    assert err(name="wine", positive_class=7).startswith("positive_class: 7 is not a class of wine")
