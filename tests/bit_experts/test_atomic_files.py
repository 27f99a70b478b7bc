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
