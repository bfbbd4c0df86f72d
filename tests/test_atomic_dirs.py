"""Writing a folder, then swapping it in (atomic.fresh_partial_dir / swap_in_dir): the one way the exporter,
`rerank train` and training's `final` folder replace what they wrote before."""

from __future__ import annotations

from leanpremise.atomic import fresh_partial_dir, partial_dir, swap_in_dir


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*") if p.is_file()}


def test_a_killed_runs_leftovers_are_not_carried_into_the_new_folder(tmp_path):
    out = tmp_path / "bundle"
    left = partial_dir(out)
    left.mkdir()
    (left / "half-written.npy").write_text("x")
    work = fresh_partial_dir(out)
    assert work == left and work.is_dir() and not any(work.iterdir())


def test_swap_replaces_the_old_folder_whole_and_leaves_nothing_beside_it(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "old-only.json").write_text("old")
    (out / "both.json").write_text("old")
    work = fresh_partial_dir(out)
    (work / "both.json").write_text("new")
    (work / "sub").mkdir()
    (work / "sub" / "model.txt").write_text("new")
    swap_in_dir(work, out)
    assert _files(out) == {"both.json": "new", "sub/model.txt": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_swap_into_a_new_place(tmp_path):
    out = tmp_path / "deeper" / "reranker"
    work = fresh_partial_dir(out)
    (work / "reranker.json").write_text("{}")
    swap_in_dir(work, out)
    assert _files(out) == {"reranker.json": "{}"} and not work.exists()
