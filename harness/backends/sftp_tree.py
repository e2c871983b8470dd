"""Folders over SFTP, both ways, for harness/backends/ssh.py, every step kicking
the session's watchdog so a host that stops answering ends the copy.

Downloads trust nothing the host says: only regular files are copied (a
symlink a container planted is listed as skipped, never followed), names are
taken one path component at a time and `.`/`..` or names holding `/` are
refused, and an entry that cannot be read is noted while the rest still come.
"""

from __future__ import annotations

import contextlib
import stat
from pathlib import Path, PurePosixPath

from harness.backends.ssh_watchdog import SftpSession
from harness.backends.transport import FetchedFiles

_READ_CHUNK = 32768
_SEGMENT = 32 << 20  # SFTP reads pipelined per segment of a file


def upload_tree(session: SftpSession, local: Path, remote: str) -> None:
    """Every file and folder under `local` into the (existing, empty) folder `remote`."""
    sftp, dog = session.sftp, session.dog
    for path in sorted(local.rglob("*")):
        target = str(PurePosixPath(remote) / path.relative_to(local).as_posix())
        if path.is_dir():
            sftp.mkdir(target)
        elif path.is_file():
            sftp.put(str(path), target, callback=dog.kick)
            dog.kick()
            sftp.chmod(target, path.stat().st_mode & 0o777)
        dog.kick()


def _safe_name(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


def download_tree(session: SftpSession, remote: str, local: Path) -> FetchedFiles:
    """Every regular file under `remote`, copied under `local`. An entry that
    cannot be copied (unreadable, vanished, not a regular file, an unsafe name,
    a local write error) is listed in `skipped` and the rest still come; a
    transport failure raises ConnectionLost, leaving the files copied so far."""
    sftp, dog = session.sftp, session.dog
    written: list[Path] = []
    skipped: list[str] = []

    def skip(path: PurePosixPath, exc: OSError) -> None:
        if not session.healthy() or isinstance(exc, TimeoutError):
            raise exc
        skipped.append(f"{path}: {exc.strerror or exc}")

    try:
        sftp.stat(remote)
    except FileNotFoundError:
        return FetchedFiles()
    dog.kick()
    pending = [PurePosixPath(remote)]
    while pending:
        folder = pending.pop()
        try:
            entries = sftp.listdir_attr(str(folder))
        except OSError as exc:
            skip(folder, exc)
            continue
        dog.kick()
        for entry in sorted(entries, key=lambda e: e.filename):
            if not _safe_name(entry.filename):
                skipped.append(f"{folder}/{entry.filename!r}: unsafe name")
                continue
            remote_path = folder / entry.filename
            mode = entry.st_mode or 0  # lstat: a symlink is a symlink, not its target
            if stat.S_ISDIR(mode):
                pending.append(remote_path)
                continue
            if not stat.S_ISREG(mode):
                skipped.append(f"{remote_path}: not a regular file")
                continue
            dest = local / remote_path.relative_to(remote)
            try:
                download(session, str(remote_path), entry.st_size or 0, dest)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    dest.unlink()
                skip(remote_path, exc)
                continue
            written.append(dest)
    return FetchedFiles(written, skipped)


def download(session: SftpSession, remote: str, size: int, dest: Path) -> None:
    """Copy one file, pipelined a segment at a time: each segment's read
    requests are all sent at once (paramiko's prefetch thread, done in a
    moment) and then collected, so no prefetch thread is ever blocked on a
    host that stops answering. Read to the end rather than sftp.get(): a log
    that grows or shrinks meanwhile is copied as far as it goes."""
    dog = session.dog
    dest.parent.mkdir(parents=True, exist_ok=True)
    with session.sftp.open(remote, "rb") as source, dest.open("wb") as out:
        dog.kick()
        offset = 0
        try:
            while True:
                end = min(offset + _SEGMENT, size)
                if offset < end:
                    source.seek(offset)
                    source.prefetch(end)  # read requests for [offset, end), sent at once
                else:
                    end = offset + _SEGMENT  # past the listed size: it grew, read on unpipelined
                while offset < end:
                    data = source.read(min(_READ_CHUNK, end - offset))
                    if not data:
                        return  # the end of the file
                    out.write(data)
                    offset += len(data)
                    dog.kick()
        except EOFError:
            if not session.healthy():
                raise  # the connection, not the file, ended
