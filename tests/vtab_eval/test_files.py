"""`vtab_eval.files`: the one place JSON, text and names are written and read back."""

import hashlib
import json
import os

import pytest

from vtab_eval import files


def test_task_slug_is_readable_and_injective():
    slug = files.task_slug("my flowers")
    assert slug.startswith("my_flowers-")
    # Injective: names that give the same readable part still get different slugs.
    assert files.task_slug("my_flowers") != slug
    assert files.task_slug("a/b") != files.task_slug("a_b")
    # A registered task's slug is its name and the hash, as before names were shortened.
    assert files.task_slug("cifar100") == "cifar100-" + hashlib.sha256(b"cifar100").hexdigest()[:10]
    # A long name keeps its leading whole words within 48 characters, then the hash.
    long = files.task_slug("flowers_of_the_" + "x" * 40 + "_valley")
    readable, digest = long.rsplit("-", 1)
    assert readable == "flowers_of_the" and len(digest) == 10
    assert files.task_slug("y" * 60).rsplit("-", 1)[0] == "y" * 48  # no word: cut at 48
    assert files.name_slug("a b/c:d") == "a_b_c_d"


def test_json_is_written_atomically_and_read_back(tmp_path):
    path = str(tmp_path / "sub" / "a.json")
    files.write_json(path, {"b": 1, "a": [1.5, None]})
    assert files.read_json(path) == {"b": 1, "a": [1.5, None]}
    text = (tmp_path / "sub" / "a.json").read_text()
    assert text.index('"a"') < text.index('"b"')  # key-sorted, so equal content is equal text
    assert files.read_json(str(tmp_path / "missing.json")) is None
    assert os.listdir(tmp_path / "sub") == ["a.json"]  # no temporary file left behind
    files.write_text(str(tmp_path / "t.md"), "# title\n")
    assert (tmp_path / "t.md").read_text() == "# title\n"


@pytest.mark.parametrize(
    "content",
    [b'{"key": "abc", "result": {"sco', b"", b"\xff\xfe not utf-8"],
    ids=["truncated", "empty", "not-utf8"],
)
def test_an_unreadable_state_file_is_one_line_naming_the_file(tmp_path, content):
    path = tmp_path / "finetunes" / "abc.json"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(files.StateFileError) as info:
        files.read_json(str(path), "fine-tune record")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: this fine-tune record cannot be read")
    assert message.endswith("delete it to have it written again")
    assert isinstance(info.value, ValueError)  # commands print ValueErrors as one line
    assert path.read_bytes() == content  # left as it was for the user to look at
    # The same file, whole, reads.
    path.write_text(json.dumps({"key": "abc"}))
    assert files.read_json(str(path)) == {"key": "abc"}
