"""Files and folders the package writes get the mode the umask asks for, not mkstemp's 0600/0700."""

import os
import stat

import pytest

from bit_experts import atomic_files


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_current_umask_reads_without_changing_it(umask):
    assert atomic_files.current_umask() == umask
    assert atomic_files.current_umask() == umask  # still the same: reading did not reset it


def test_written_json_and_bytes_get_the_umask_file_mode(tmp_path, umask):
    path = atomic_files.write_json(tmp_path / "sub" / "manifest.json", {"a": 1})
    assert _mode(path) == 0o666 & ~umask  # 0644 under 022: readable by other users
    assert _mode(tmp_path / "sub") == 0o777 & ~umask
    os.chmod(path, 0o600)  # an overwrite gets the umask mode again, not the old file's
    atomic_files.write_bytes(path, b"{}")
    assert _mode(path) == 0o666 & ~umask
    assert not [p for p in os.listdir(tmp_path / "sub") if p.endswith(".tmp")]


def test_a_folder_moved_into_place_gets_the_umask_folder_mode(tmp_path, umask):
    tmp = atomic_files.make_temp_dir(str(tmp_path), prefix=".tmp-")
    atomic_files.write_text(os.path.join(tmp, "info.json"), "{}\n")
    final = tmp_path / "models"
    os.replace(tmp, final)
    assert _mode(final) == 0o777 & ~umask  # mkdtemp alone gives 0700 whatever the umask
    assert _mode(final / "info.json") == 0o666 & ~umask


def test_downstream_task_folder_is_readable_by_others(tmp_path, umask):
    from bit_experts.world import downstream  # noqa: PLC0415 (renders glyphs; keep it local)

    out = tmp_path / "tasks"
    downstream.write_downstream_tasks(str(out), tasks=["glyph_count"], test_images=10)
    (task_dir,) = [p for p in out.iterdir() if p.is_dir()]
    assert _mode(task_dir) == 0o777 & ~umask
    assert _mode(task_dir / downstream.TASK_FILE) == 0o666 & ~umask


# --- confinement (issue 24): nothing outside a folder is reached through a link in it ----------


@pytest.mark.parametrize("relative", ["../x", "/etc/passwd", "a//b", "a\\b", "gs://b/x", ""])
def test_confined_refuses_a_path_that_leaves_its_root_by_syntax(tmp_path, relative):
    with pytest.raises(ValueError, match="leaves .*expected a relative path inside it"):
        atomic_files.confined(str(tmp_path), relative, "entry")


def test_confined_follows_a_link_only_while_it_stays_inside(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "real").mkdir(parents=True)
    outside.mkdir()
    os.symlink("real", root / "alias")  # inside: fine
    os.symlink(outside, root / "away")
    os.symlink("../away", root / "real" / "back")  # inside, then out through another link
    assert atomic_files.confined(str(root), "alias/x", "entry") == str(root / "alias" / "x")
    for relative, link in (("away/x", root / "away"), ("real/back/x", root / "real" / "back")):
        with pytest.raises(ValueError) as info:
            atomic_files.confined(str(root), relative, "entry")
        assert f"entry {relative!r} leaves {root} through the symbolic link {link}" in str(
            info.value
        )


def test_walk_files_refuses_a_link_to_a_file_or_a_folder(tmp_path):
    (tmp_path / "m" / "sub").mkdir(parents=True)
    (tmp_path / "m" / "sub" / "a").write_text("a")
    (tmp_path / "secret").write_text("s")
    assert atomic_files.walk_files(str(tmp_path / "m")) == ["sub/a"]
    os.symlink(tmp_path / "secret", tmp_path / "m" / "sub" / "b")
    with pytest.raises(ValueError, match=r"m: sub/b is a symbolic link \(to .*secret\)"):
        atomic_files.walk_files(str(tmp_path / "m"))
    os.remove(tmp_path / "m" / "sub" / "b")
    os.symlink(tmp_path, tmp_path / "m" / "up")  # os.walk does not enter it: it was left out
    with pytest.raises(ValueError, match="m: up is a symbolic link"):
        atomic_files.walk_files(str(tmp_path / "m"))
    assert atomic_files.islink(str(tmp_path / "m" / "up"))
    assert not atomic_files.islink(str(tmp_path / "m" / "sub"))


def test_refuse_links_out_names_a_link_anywhere_below_that_leaves_the_folder(tmp_path):
    root, outside = tmp_path / "out", tmp_path / "elsewhere"
    (root / "results" / "task").mkdir(parents=True)
    outside.mkdir()
    (root / "results" / "task" / "inside").symlink_to(root / "results")
    atomic_files.refuse_links_out(str(root), "--output_dir")  # a link that stays inside is fine
    atomic_files.refuse_links_out(str(tmp_path / "missing"), "--output_dir")  # nothing to check
    (root / "results" / "task" / "models").symlink_to(outside)
    with pytest.raises(
        ValueError, match=r"'results/task/models' is a symbolic link to .*elsewhere"
    ):
        atomic_files.refuse_links_out(str(root), "--output_dir")
    (root / "results" / "task" / "models").unlink()
    (root / "report.md").symlink_to(outside / "report.md")  # a dangling link to a file outside
    with pytest.raises(ValueError, match=r"^--output_dir .*: 'report\.md' is a symbolic link"):
        atomic_files.refuse_links_out(str(root), "--output_dir")
    # Only the named entries (what a command writes) are looked at, when names are given; a link's
    # name with a line break stays on one line.
    atomic_files.refuse_links_out(str(root), "--output_dir", names=["results", "plots"])
    (root / "results" / "bad\nname").symlink_to(outside)
    with pytest.raises(ValueError) as err:
        atomic_files.refuse_links_out(str(root), "--output_dir", names=["results"])
    assert len(str(err.value).splitlines()) == 1 and "'results/bad\\nname'" in str(err.value)
