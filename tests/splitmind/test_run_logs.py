from splitmind.run_logs import LATEST, new_run_dir


def test_each_run_gets_its_own_folder_and_latest_follows(tmp_path) -> None:
    (tmp_path / "gateway.log").write_text("a log from before runs had folders")
    first = new_run_dir(tmp_path)
    (first / "decode-0.log").write_text("first run")
    second = new_run_dir(tmp_path)
    assert first != second and (first / "decode-0.log").read_text() == "first run"  # not overwritten
    assert (tmp_path / LATEST).resolve() == second.resolve()
    assert (tmp_path / "gateway.log").exists()  # files that are not run folders are left alone


def test_old_runs_beyond_the_limit_are_removed(tmp_path) -> None:
    runs = []
    for i in range(4):
        run = tmp_path / f"2026010{i}-000000-1"
        run.mkdir()
        runs.append(run)
    newest = new_run_dir(tmp_path, keep=3)
    left = sorted(p.name for p in tmp_path.iterdir() if not p.is_symlink())
    assert left == sorted([runs[2].name, runs[3].name, newest.name])
