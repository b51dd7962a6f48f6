"""Finding the images of a source: folders, text lists, zip members, tar shards and glob patterns.

Everything here only lists; nothing is decoded. Discovered images come in a deterministic order:
folders, text lists and zip archives are sorted by path; tar shards keep their archive order
(WebDataset sample order), shard after shard.
"""
import glob
import os
import stat
import tarfile
import zipfile

# The reference package's extensions; matched case-insensitively.
IMAGE_EXTENSIONS = frozenset({"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"})

_GLOB_CHARS = frozenset("*?[")


def extension(path):
    """Lower-case extension of ``path`` without the dot ("" when none)."""
    return os.path.splitext(str(path))[1][1:].lower()


def has_image_extension(path):
    return extension(path) in IMAGE_EXTENSIONS


def is_glob_pattern(text):
    return any(c in _GLOB_CHARS for c in str(text))


def _is_hidden(name):
    # Hidden entries and macOS resource forks ("._x.jpg", "__MACOSX/") are never images; glob's
    # "**" (the reference's listing) also skips dot-files.
    return name.startswith(".") or name == "__MACOSX"


def _member_parts(name):
    """The folder parts of an archive member name, without the empty and "." parts ("./a/b.png",
    as ``tar -cf x.tar .`` writes names, is "a/b.png")."""
    return [part for part in name.split("/") if part not in ("", ".")]


def _unsafe_member(name):
    """Why an archive member's path is refused (".." parts or an absolute path), or None."""
    if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/"):
        return "unsafe member path ('..' or absolute): not read"
    return None


def non_regular_kind(path):
    """What ``path`` is when it exists and is not a regular file ("a FIFO", "a socket", "a device",
    "a folder", ...), else None (a regular file, or a path that cannot be examined: reading it will
    say why). Reading a FIFO would block for ever; a device may never end."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return None
    for test, kind in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return kind
    return "not a regular file"


def list_folder(root, skipped=None):
    """Image files under ``root`` (recursive, following symbolic links once), sorted by path.

    Paths are ``os.path.join(root, relative)``, as the reference's glob gives them. Entries with an
    image extension that are not regular files (FIFOs, sockets, devices) are left out and, when
    ``skipped`` is a list, appended to it as ``(path, reason)``.
    """
    found = []
    seen_dirs = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a symlink cycle or a second link to the same folder
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = [d for d in dirnames if not _is_hidden(d)]
        for name in filenames:
            if not _is_hidden(name) and has_image_extension(name):
                path = os.path.join(dirpath, name)
                kind = non_regular_kind(path)
                if kind is None:
                    found.append(path)
                elif skipped is not None:
                    skipped.append((path, f"{kind}, not an image file"))
    found.sort()
    if skipped is not None:
        skipped.sort()
    return found


def read_path_list(txt_path):
    """Image paths listed in a text file, one per line, sorted.

    Blank lines are ignored; relative paths are relative to the folder holding the text file.
    Raises ``ValueError`` for a line that is not an image path and ``FileNotFoundError`` for a
    missing file, naming the line.
    """
    base = os.path.dirname(os.path.abspath(txt_path))
    paths = []
    with open(txt_path, "r", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            entry = line.strip()
            if not entry:
                continue
            path = entry if os.path.isabs(entry) else os.path.join(base, entry)
            if not has_image_extension(path):
                raise ValueError(
                    f"{txt_path}, line {line_no}: {entry!r} is not an image file "
                    f"(extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})"
                )
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{txt_path}, line {line_no}: image file {path!r} does not exist")
            paths.append(path)
    paths.sort()
    return paths


def list_zip_members(archive, skipped=None):
    """Image members of an open ``zipfile.ZipFile``, sorted by member name.

    Members in subfolders are included; folders, hidden files and ``__MACOSX`` entries are not. A
    name stored twice is listed once (its last entry, which is what reading by name returns).
    Image members with ".." in their path (or an absolute path) are left out and, when ``skipped`` is
    a list, appended to it as ``("<archive>:<member>", reason)``.
    """
    by_name = {}
    for info in archive.infolist():
        if info.is_dir() or not has_image_extension(info.filename):
            continue
        reason = _unsafe_member(info.filename)
        if reason is not None:
            if skipped is not None:
                skipped.append((f"{archive.filename}:{info.filename}", reason))
            continue
        if any(_is_hidden(part) for part in _member_parts(info.filename)):
            continue
        by_name[info.filename] = info
    return [by_name[name] for name in sorted(by_name)]


def list_tar_members(tar_path, skipped=None):
    """``(member name, data offset, size)`` of the image members of one uncompressed tar shard.

    Archive order is kept. Compressed archives cannot be read at random offsets and are rejected.
    Image members with ".." in their path (or an absolute path) and image names that are links or
    devices rather than files are left out and, when ``skipped`` is a list, appended to it as
    ``("<shard>:<member>", reason)``.
    """
    try:
        with tarfile.open(tar_path, mode="r:") as archive:
            members = archive.getmembers()
    except tarfile.ReadError as exc:
        raise ValueError(
            f"{tar_path} is not an uncompressed tar archive ({exc}); tar shards must be plain .tar files"
        ) from exc
    found = []
    for m in members:
        if m.isdir() or not has_image_extension(m.name):
            continue
        reason = _unsafe_member(m.name) or (None if m.isreg() else "not a regular file in the archive (a link or "
                                                                    "device): not read")
        if reason is not None:
            if skipped is not None:
                skipped.append((f"{tar_path}:{m.name}", reason))
            continue
        if any(_is_hidden(part) for part in _member_parts(m.name)):
            continue
        found.append((m.name, m.offset_data, m.size))
    return found


def expand_glob(pattern):
    """Files matching a glob pattern (``**`` recursive), sorted; ``FileNotFoundError`` when none."""
    matches = sorted(p for p in glob.glob(str(pattern), recursive=True) if os.path.isfile(p))
    if not matches:
        raise FileNotFoundError(f"no file matches the pattern {str(pattern)!r}")
    return matches


def open_zip(path):
    """Open a zip archive, turning a corrupt one into a ``ValueError`` naming it."""
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path} is not a readable zip archive: {exc}") from exc
