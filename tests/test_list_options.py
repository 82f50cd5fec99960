"""Comma-separated CLI values and distinct subject names: hand-worked cases."""

from __future__ import annotations

import pytest

from kdlens.cli import list_options as lists
from kdlens.errors import KdlensError
from kdlens.store.analysis import distinct_names


def test_numbers_parse_and_name_the_option_on_a_bad_value():
    assert lists.numbers(" 3, 6,,9 ", "--temperatures") == [3.0, 6.0, 9.0]
    assert lists.numbers("", "--x") == [] and lists.numbers(None, "--x") == []
    with pytest.raises(KdlensError, match=r"--seeds: 'a' is not an integer .*e\.g\. 0,1,2"):
        lists.numbers("1,a", "--seeds", int)


def test_class_ids_and_alphas_are_checked():
    classes = ["zero", "one", "two"]
    assert lists.class_ids("2,0", classes) == [2, 0]
    assert lists.class_ids(None, classes) is None
    with pytest.raises(KdlensError, match=r"unknown class id\(s\) \[3\]; allowed 0\.\.2 \(0=zero, 1=one, 2=two\)"):
        lists.class_ids("0,3", classes)
    with pytest.raises(KdlensError, match="repeated class ids"):
        lists.class_ids("1,1", classes)
    assert lists.ls_alphas("0,0.5,1") == [0.0, 0.5, 1.0]
    with pytest.raises(KdlensError, match=r"must lie in \[0, 1\], got \[1\.5\]"):
        lists.ls_alphas("0.1,1.5")
    with pytest.raises(KdlensError, match="--T"):
        lists.temperatures("0", "--T")


def test_distinct_names_of_runs_and_files(tmp_path):
    (tmp_path / "a" / "teacher").mkdir(parents=True)
    (tmp_path / "b" / "teacher").mkdir(parents=True)
    (tmp_path / "w.pt").write_bytes(b"")
    refs = [tmp_path / "a" / "teacher", tmp_path / "b" / "teacher", tmp_path / "w.pt", tmp_path / "a" / "teacher"]
    assert distinct_names(refs) == ["teacher", "teacher-2", "w", "teacher-3"]
