"""Committed file writes on a local disk and on any `tf.io.gfile` filesystem (docs/workdir.md).

Local paths: a temporary file in the target's directory, then `os.replace`, so a process killed at
any moment (SIGKILL included) leaves either the old file or the new one, never a half-written one.

URLs (`gs://`, `s3://`, `ram://`, ...; anything with a `scheme://`): object stores have no atomic
rename, so nothing here renames. A single file is built in memory and written with one
`tf.io.gfile.GFile` write (on GCS and S3 an object appears only once its upload completes, and
replaces the old one whole). A unit of several files (a model folder, a checkpoint, a task folder, a
feature-cache entry) is committed by writing its marker file last (`write_marker`): readers trust a
unit only when its marker is there (`is_committed`), and a rerun rewrites a unit without one. The
writers of work directories, collections, the feature cache and evaluation outputs go through here
(docs/workdir.md lists them, and what stays local-only: those refuse a URL in one line,
`require_local`); the path helpers below (`exists`, `listdir`, `open_file`, ...) pick `os` or
`tf.io.gfile` by the path, so local behaviour is unchanged.

`file://` paths are local paths (`normalize` strips the scheme), so they keep the local rename
protocol. A URL whose scheme has no registered `tf.io.gfile` filesystem (`mylocal://x`, and `GS://`:
schemes are case-sensitive) is refused with one ValueError line naming the path before anything is
written; so is a `file://` URL that does not name an absolute path.

Symbolic links are never followed out of a folder the package owns (a collection, a work
directory, a module folder): `confined` joins a relative path from a manifest or a folder listing
to its root and refuses one that leaves it (`..`, an absolute path, a URL, or a link whose real path
is outside the root's); `walk_files` refuses a link anywhere under the folder it lists; `islink`
lets a cleaner leave links alone. Object stores have no links, so on a URL only the syntax counts.

`tempfile.mkstemp` and `tempfile.mkdtemp` create their results private (0600 / 0700) whatever the
umask; renamed into place they would stay private and another user could not read a published
collection. So every temporary file or folder made here gets the mode a plain `open` or `os.mkdir`
would have given it: 0666 & ~umask for files, 0777 & ~umask for folders.
"""

import io
import json
import os
import re
import shutil
import tempfile
import threading

_UMASK_LOCK = threading.Lock()
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_FILE_URL = re.compile(r"^file://(localhost)?", re.IGNORECASE)
_KNOWN_SCHEMES = set()  # schemes found registered (a plugin may register more later)
MARKER_FILE = "COMMITTED"  # the commit marker of a multi-file unit (`write_marker`)


def normalize(path) -> str:
    """`path` as a string, with a `file://` URL turned into its local path (`file:///a/b` and
    `file://localhost/a/b` -> `/a/b`); any other path as it is.

    Raises:
      ValueError: a `file://` URL without an absolute path (`file://a/b`).
    """
    path = os.fspath(path)
    match = _FILE_URL.match(path)
    if not match:
        return path
    local = path[match.end() :]
    if not local.startswith("/"):
        raise ValueError(f"{path!r}: a file:// URL must name an absolute path (file:///dir/file)")
    return local


def is_url(path) -> bool:
    """Whether `path` names a `tf.io.gfile` filesystem by a scheme (`gs://b/x`, `ram://x`), where
    `os` functions do not apply and rename is not atomic. `file://` paths are local (`normalize`).
    Syntax only: `check_url` (called by every helper here) checks the scheme is registered."""
    return bool(_URL.match(normalize(path)))


def check_url(path) -> str:
    """`path` if it is local or a URL whose scheme has a registered `tf.io.gfile` filesystem.

    Raises:
      ValueError: one line naming `path`, for an unregistered scheme (`mylocal://x`, `GS://b`).
    """
    path = normalize(path)
    match = _URL.match(path)
    if not match or match.group(1) in _KNOWN_SCHEMES:
        return path
    scheme = match.group(1)
    gfile = _gfile_module()
    try:
        known = set(gfile.get_registered_schemes())
    except AttributeError:  # older TF: probe the filesystem (no network for an unknown scheme)
        known = set()
        try:
            gfile.exists(path)
            known.add(scheme)
        except Exception as err:  # noqa: BLE001 (tf.errors.UnimplementedError: not registered)
            if type(err).__name__ != "UnimplementedError":
                known.add(scheme)
    if scheme not in known:
        hint = (
            f"; schemes are case-sensitive: {scheme.lower()}://?" if scheme.lower() in known else ""
        )
        raise ValueError(
            f"{path!r}: no tf.io.gfile filesystem for scheme {scheme!r} (registered: "
            f"{', '.join(sorted(s for s in known if s))}){hint}"
        )
    _KNOWN_SCHEMES.add(scheme)
    return path


def require_local(path, name, advice) -> None:
    """Raises ValueError (one line: `name`, `path`, `advice`) if `path` is a URL, for the places
    that work on a local disk only (docs/workdir.md, "Not yet on a URL")."""
    if is_url(path):
        raise ValueError(f"{name}={os.fspath(path)!r} is a URL; it must be a local path: {advice}")


def _gfile_module():
    import tensorflow as tf  # noqa: PLC0415 (only URLs need it; importing TF takes seconds)

    return tf.io.gfile


def _gfile(path=None):
    """`tf.io.gfile`, after checking `path`'s scheme is registered (`check_url`)."""
    if path is not None:
        check_url(path)
    return _gfile_module()


def _url_parent(path):
    """The folder of URL `path` to create before writing it, or None when that is the scheme's
    root (`os.path.dirname("ram://x")` is `ram:`, which gfile would create on the local disk)."""
    parent = os.path.dirname(path)
    match = _URL.match(parent + "/")
    return parent if match and (parent + "/")[match.end() :].strip("/") else None


def abspath(path) -> str:
    """`os.path.abspath` for a local path (a `file://` URL becomes one); a URL as it is, after
    `check_url`."""
    path = check_url(path)
    return path if is_url(path) else os.path.abspath(path)


def exists(path) -> bool:
    path = check_url(path)
    return _gfile().exists(path) if is_url(path) else os.path.exists(path)


def isdir(path) -> bool:
    path = check_url(path)
    return _gfile().isdir(path) if is_url(path) else os.path.isdir(path)


def isfile(path) -> bool:
    path = check_url(path)
    if is_url(path):
        return _gfile().exists(path) and not _gfile().isdir(path)
    return os.path.isfile(path)


def listdir(path) -> list:
    """The entry names in folder `path` (without gfile's trailing `/` on sub-folders)."""
    path = check_url(path)
    if is_url(path):
        return [name.rstrip("/") for name in _gfile().listdir(path)]
    return os.listdir(path)


def makedirs(path) -> None:
    path = check_url(path)
    if is_url(path):
        if _url_parent(path.rstrip("/") + "/x"):  # not a scheme's root (`ram://`)
            _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def remove(path) -> None:
    path = check_url(path)
    if is_url(path):
        _gfile().remove(path)
    else:
        os.remove(path)


def rmtree(path) -> None:
    """Removes a folder and its contents; nothing if it is absent; errors are ignored."""
    path = check_url(path)
    if not is_url(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        if _gfile().exists(path):
            _gfile().rmtree(path)
    except Exception:  # noqa: BLE001 (tf.errors.OpError: best effort, as ignore_errors above)
        pass


def open_file(path, mode="rb"):
    """`open(path, mode)` for a local path, `tf.io.gfile.GFile(path, mode)` for a URL (which
    raises tf.errors.NotFoundError, not FileNotFoundError, for a missing file: test `exists`)."""
    path = check_url(path)
    if is_url(path):
        return _gfile().GFile(path, mode)
    return open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"}))  # noqa: SIM115


def read_bytes(path) -> bytes:
    with open_file(path, "rb") as f:
        return f.read()


def getsize(path) -> int:
    path = check_url(path)
    return _gfile().stat(path).length if is_url(path) else os.path.getsize(path)


def upload_file(local_path, path) -> None:
    """Copies the local file `local_path` onto `path` (a URL or a local path) in one write, as
    `write_atomic` writes (used for files too big to build in memory: models, archives)."""
    path = check_url(path)
    local_path = normalize(local_path)
    if not is_url(path):
        write_atomic(path, lambda f: _copy_from(local_path, f))
        return
    if _url_parent(path):  # not at a scheme's root
        _gfile().makedirs(_url_parent(path))
    _forget_ram_file(path)
    _gfile().copy(os.fspath(local_path), path, overwrite=True)


def _forget_ram_file(path):
    """TensorFlow's in-memory `ram://` filesystem (2.21) appends when a file is opened for writing
    again instead of truncating it; remove the old one first. Only there: it is local to this
    process, so no other reader sees the gap (on gs:// an upload replaces the object whole)."""
    if path.startswith("ram://") and _gfile().exists(path):
        _gfile().remove(path)


def walk_files(root) -> list:
    """Sorted relative POSIX paths of every file under folder `root` (local or a URL).

    Raises:
      ValueError: one line naming the first symbolic link under a local `root` (a link to a file
        would be read as if it were one of the folder's files, a link to a folder silently left
        out; neither is followed).
    """
    root = check_url(root)
    if is_url(root):
        walked = ((top, [], names) for top, _, names in _gfile().walk(root))
    else:
        walked = os.walk(root)
    files = []
    for top, folders, names in walked:
        for name in sorted(folders) + sorted(names):
            path = os.path.join(top, name.rstrip("/"))
            if os.path.islink(path):
                raise ValueError(
                    f"{root}: {os.path.relpath(path, root)} is a symbolic link (to "
                    f"{os.readlink(path)}); links are not followed: put the file itself there, "
                    "or remove the link"
                )
        for name in names:
            rel = os.path.relpath(os.path.join(top, name.rstrip("/")), root)
            files.append(rel.replace(os.sep, "/"))
    return sorted(files)


def refuse_links_out(root, what, names=None) -> None:
    """ValueError (one line naming `what`, the link and its real target) if a symbolic link under
    the local folder `root` leads outside `root`'s real path: writing through it would write, or
    replacing a folder delete, outside `root`. `names`: only these entries of `root` (what a
    command writes there) and everything below them are looked at; None: all of `root`. Links are
    not followed; a URL or a missing `root` passes (object stores have no links)."""
    if is_url(root) or not os.path.isdir(root):
        return
    real_root = os.path.realpath(root)
    tops = [root] if names is None else [os.path.join(root, n) for n in names]
    for top in tops:
        walked = os.walk(top) if os.path.isdir(top) and not os.path.islink(top) else []
        paths = [top] + [
            os.path.join(t, n) for t, folders, files in walked for n in folders + files
        ]
        for path in filter(os.path.islink, paths):  # one lstat each; links alone are resolved
            real = os.path.realpath(path)
            if os.path.commonpath([real_root, real]) != real_root:
                raise ValueError(
                    f"{what} {root}: {os.path.relpath(path, root)!r} is a symbolic link to {real!r}, "
                    "outside it; writing through it would change files there: remove the link, "
                    "or give another folder"
                )


def islink(path) -> bool:
    """Whether `path` is a symbolic link (never for a URL: object stores have none)."""
    path = check_url(path)
    return not is_url(path) and os.path.islink(path)


def plain_relative(relative) -> bool:
    """Whether `relative` is a POSIX path that cannot leave the folder it is joined to by its
    syntax: a non-empty string, not absolute, no `..` or empty part, no backslash (so no URL:
    `gs://b` has an empty part)."""
    if not isinstance(relative, str) or not relative or "\\" in relative:
        return False
    parts = relative.split("/")
    return not os.path.isabs(relative) and ".." not in parts and "" not in parts


def confined(root, relative, what) -> str:
    """`root`/`relative`, after checking that it stays inside folder `root`.

    `relative` is a POSIX path read from a manifest or a folder listing. It must be
    `plain_relative`, and locally no symbolic link on the way from `root` may lead outside
    `root`'s real path (a link to elsewhere inside it is fine). Nothing is read but the links.

    Raises:
      ValueError: one line naming `what`, `relative` and the link or the part at fault.
    """
    root = check_url(root)
    if not plain_relative(relative):
        raise ValueError(
            f"{what} {relative!r} leaves {root}: expected a relative path inside it (no '..', "
            "no absolute path, no URL)"
        )
    if is_url(root):
        return f"{root.rstrip('/')}/{relative}"
    real_root, path = os.path.realpath(root), root
    for part in relative.split("/"):
        path = os.path.join(path, part)
        if os.path.islink(path):
            real = os.path.realpath(path)
            if os.path.commonpath([real_root, real]) != real_root:
                raise ValueError(
                    f"{what} {relative!r} leaves {root} through the symbolic link {path} (to "
                    f"{os.readlink(path)})"
                )
    return path


def upload_tree(local_dir, path) -> None:
    """Copies every file of the local folder `local_dir` under `path` (a URL), file by file (no
    rename, not atomic: commit the copy afterwards, e.g. by listing it in a manifest)."""
    for rel in walk_files(local_dir):
        upload_file(os.path.join(local_dir, *rel.split("/")), f"{check_url(path)}/{rel}")


def _copy_from(local_path, handle):
    with open(local_path, "rb") as source:
        shutil.copyfileobj(source, handle, 1 << 20)


def write_marker(directory, payload=None) -> str:
    """Commits the unit in `directory` (every other file of it written already) by writing its
    marker file `MARKER_FILE` last: JSON of `payload` (default {}). Returns the marker's path."""
    return write_json(os.path.join(check_url(directory), MARKER_FILE), payload or {})


def remove_unit(directory) -> None:
    """Removes a committed unit: its marker first, so that a removal stopped half-way leaves an
    uncommitted folder (which readers skip), never a listed one with files missing."""
    directory = check_url(directory)
    marker = os.path.join(directory, MARKER_FILE)
    if is_url(directory) and exists(marker):
        remove(marker)
    rmtree(directory)


def is_committed(directory) -> bool:
    """Whether the unit in `directory` is committed: its `MARKER_FILE` is there. A local folder
    without one counts too, since local units appear in place only through `os.replace` (and
    folders written before markers existed have none)."""
    directory = check_url(directory)
    if is_url(directory):
        return isfile(os.path.join(directory, MARKER_FILE))
    return os.path.isdir(directory)


def current_umask() -> int:
    """The process's umask, read without changing it (Linux: /proc/self/status).

    Elsewhere it falls back to setting and restoring it under a lock, which is safe against the
    other callers of this function but not against threads that create files meanwhile.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode `open(path, "w")` gives a new file under the current umask."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode `os.mkdir(path)` gives a new folder under the current umask."""
    return 0o777 & ~current_umask()


def make_temp_dir(dir: str, prefix: str = ".tmp-") -> str:  # noqa: A002 (tempfile's name)
    """`tempfile.mkdtemp(dir=dir, prefix=prefix)` with the umask's folder mode instead of 0700.

    Use it for a folder that is filled and then renamed into place, so that the result is as
    readable as any other folder the user creates.
    """
    path = tempfile.mkdtemp(dir=dir, prefix=prefix)
    os.chmod(path, dir_mode())
    return path


def write_atomic(path, write, binary=True):
    """Calls `write(file)` on a temporary file next to `path`, then renames it onto `path`.

    For a URL `write(file)` fills an in-memory buffer, which then goes to `path` in one
    `tf.io.gfile` write (no rename; see the module docstring): an error in `write` leaves `path`
    as it was.
    """
    path = check_url(path)
    if is_url(path):
        buffer = io.BytesIO() if binary else io.StringIO()
        write(buffer)
        data = buffer.getvalue()
        if _url_parent(path):  # not at a scheme's root
            _gfile().makedirs(_url_parent(path))
        _forget_ram_file(path)
        with _gfile().GFile(path, "wb") as f:
            f.write(data if binary else data.encode("utf-8"))
        return path
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(
            fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})
        ) as f:
            os.fchmod(f.fileno(), file_mode())  # mkstemp made it 0600.
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_bytes(path, data):
    """Writes `data` (bytes) to `path` atomically."""
    return write_atomic(path, lambda f: f.write(data))


def write_text(path, text):
    """Writes `text` (UTF-8) to `path` atomically."""
    return write_atomic(path, lambda f: f.write(text), binary=False)


def write_json(path, obj, indent=2, sort_keys=False):
    """Writes `obj` as JSON (with a trailing newline) to `path` atomically."""
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def read_json(path, advice=""):
    """The JSON value in file `path`; ValueError naming the file, and `advice` (what to do), when
    it does not parse (a truncated or edited state file)."""
    try:
        return json.loads(read_bytes(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(
            f"{path} is not valid JSON ({e}){'; ' + advice if advice else ''}"
        ) from None


def free_bytes(path):
    """Free bytes on the disk that holds (or would hold) the local `path`; None for a URL."""
    path = check_url(path)
    if is_url(path):
        return None
    existing = os.path.abspath(path)
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    return shutil.disk_usage(existing).free
