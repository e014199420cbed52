"""The state and runtime directories: exact modes whatever the umask, and no directory another
user could tamper with (the /tmp fallback, a group- or world-writable one, someone else's)."""

import os
import stat
from pathlib import Path

import pytest

from evsed import dirs
from evsed.control.client import socket_path

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory to another user")


@pytest.fixture(params=[0o000, 0o022, 0o077], ids=["umask 000", "umask 022", "umask 077"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_state_dir_is_created_0750_and_runtime_dir_0750_whatever_the_umask(tmp_path, umask):
    assert dirs.ensure_dir(tmp_path / "state", dirs.STATE_DIR_MODE) == tmp_path / "state"
    dirs.ensure_dir(tmp_path / "run", dirs.RUNTIME_DIR_MODE)
    assert mode(tmp_path / "state") == 0o750 and mode(tmp_path / "run") == 0o750


def test_missing_parents_are_created_with_the_same_mode(tmp_path, umask):
    dirs.ensure_dir(tmp_path / "home" / ".local" / "state" / "evsed", dirs.STATE_DIR_MODE)
    for part in ("home", "home/.local", "home/.local/state", "home/.local/state/evsed"):
        assert mode(tmp_path / part) == 0o750, part


def test_the_services_directory_is_3770_whatever_the_umask_and_fixed_when_it_is_not(tmp_path, umask):
    state = dirs.ensure_dir(tmp_path / "state", dirs.STATE_DIR_MODE)
    assert dirs.ensure_services_dir(state) == state / "services"
    assert stat.S_IMODE(os.stat(state / "services").st_mode) == 0o3770
    os.chmod(state / "services", 0o777)
    dirs.ensure_services_dir(state)
    assert stat.S_IMODE(os.stat(state / "services").st_mode) == 0o3770


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as two service users")
def test_one_service_cannot_rename_or_remove_anothers_file_in_the_services_directory(tmp_path):
    # evsed-web (uid 994) and evsed-ocpp (992) share group evsed (990): the web page may write
    # services/ but must not move the OCPP queue aside nor plant its own in its place.
    state = dirs.ensure_dir(tmp_path / "state", dirs.STATE_DIR_MODE)
    services = dirs.ensure_services_dir(state)
    os.chown(services, 0, 990)  # as the daemon's user evsed would have it
    dirs.ensure_services_dir(state)
    queue = services / "ocpp.sqlite"
    queue.write_bytes(b"SQLite format 3\0")
    os.chown(queue, 992, 990)
    os.chmod(queue, 0o600)
    assert rename_as(994, 990, queue) == "PermissionError"
    assert queue.exists()
    assert rename_as(992, 990, queue) == "renamed"  # its owner may


def rename_as(uid: int, gid: int, path: Path) -> str:
    """Rename path to path.x in a child that runs as uid in group gid; what happened. The child
    enters path's directory first (pytest's are root's alone) and names the file relative to it."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never back into pytest
        outcome = b"renamed"
        try:
            os.chdir(path.parent)
            os.setgroups([gid])
            os.setgid(gid)
            os.setuid(uid)
            os.rename(path.name, f"{path.name}.x")
        except OSError as exc:
            outcome = type(exc).__name__.encode()
        finally:
            os.write(write, outcome)
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        outcome = f.read().decode()
    os.waitpid(pid, 0)
    return outcome


def test_a_services_directory_that_is_a_link_or_not_the_daemons_is_refused(tmp_path):
    state = dirs.ensure_dir(tmp_path / "state", dirs.STATE_DIR_MODE)
    (tmp_path / "elsewhere").mkdir()
    (state / "services").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(dirs.DirectoryError, match="not a directory"):
        dirs.ensure_services_dir(state)
    assert stat.S_IMODE(os.stat(tmp_path / "elsewhere").st_mode) != 0o2770  # not chmod'ed through the link
    if os.geteuid() == 0:
        (state / "services").unlink()
        (state / "services").mkdir()
        os.chown(state / "services", NOBODY, NOBODY)
        with pytest.raises(dirs.DirectoryError, match="owned by uid 65534"):
            dirs.ensure_services_dir(state)


def test_an_existing_private_directory_is_used_as_it_is(tmp_path):
    (tmp_path / "state").mkdir(mode=0o755)
    (tmp_path / "state" / "sessions.db").write_text("kept")
    dirs.ensure_dir(tmp_path / "state", dirs.STATE_DIR_MODE)
    assert mode(tmp_path / "state") == 0o755 and (tmp_path / "state" / "sessions.db").read_text() == "kept"


def test_a_world_writable_runtime_directory_is_refused(tmp_path):
    # /tmp/evsed-UID made 0777 beforehand: another user could swap the socket in it
    planted = tmp_path / "evsed-1000"
    planted.mkdir()
    planted.chmod(0o777)
    with pytest.raises(dirs.DirectoryError, match="writable by others.*mode 0777"):
        dirs.ensure_dir(planted, dirs.RUNTIME_DIR_MODE)


def test_a_group_writable_directory_is_refused(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state").chmod(0o770)
    with pytest.raises(dirs.DirectoryError, match="writable by its group"):
        dirs.ensure_dir(tmp_path / "state", dirs.STATE_DIR_MODE)


@as_root
def test_a_directory_owned_by_another_user_is_refused(tmp_path):
    planted = tmp_path / "evsed-0"
    planted.mkdir(mode=0o700)
    os.chown(planted, NOBODY, NOBODY)
    with pytest.raises(dirs.DirectoryError, match=f"owned by uid {NOBODY}, not by this user"):
        dirs.ensure_dir(planted, dirs.RUNTIME_DIR_MODE)


@as_root
def test_a_symlink_planted_by_another_user_is_refused(tmp_path):
    (tmp_path / "mine").mkdir(mode=0o700)
    link = tmp_path / "evsed-0"
    link.symlink_to(tmp_path / "mine")
    os.lchown(link, NOBODY, NOBODY)
    with pytest.raises(dirs.DirectoryError, match="symlink owned by uid"):
        dirs.ensure_dir(link, dirs.RUNTIME_DIR_MODE)


def test_a_symlink_of_our_own_is_followed(tmp_path):
    (tmp_path / "data").mkdir(mode=0o700)
    (tmp_path / "state").symlink_to(tmp_path / "data")
    assert dirs.ensure_dir(tmp_path / "state", dirs.STATE_DIR_MODE) == tmp_path / "state"


def test_a_directory_in_a_world_writable_parent_without_the_sticky_bit_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(dirs.DirectoryError, match="without the sticky bit"):
        dirs.ensure_dir(shared / "evsed", dirs.RUNTIME_DIR_MODE)


def test_a_directory_of_our_own_in_a_sticky_parent_like_tmp_is_fine(tmp_path):
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    dirs.ensure_dir(sticky / f"evsed-{os.geteuid()}", dirs.RUNTIME_DIR_MODE)
    assert mode(sticky / f"evsed-{os.geteuid()}") == 0o750


def test_a_file_where_the_directory_should_be_is_refused(tmp_path):
    (tmp_path / "state").write_text("")
    with pytest.raises(dirs.DirectoryError, match="exists and is not a directory"):
        dirs.ensure_dir(tmp_path / "state", dirs.STATE_DIR_MODE)
    with pytest.raises(dirs.DirectoryError, match="exists and is not a directory"):
        dirs.ensure_dir(tmp_path / "state" / "evsed", dirs.STATE_DIR_MODE)


@pytest.mark.parametrize("path, words", [
    ("/proc/evsed", "under /proc"),
    ("/sys/fs/evsed", "under /sys"),
    ("relative/evsed", "not an absolute path"),
])
def test_path_problem_names_places_no_directory_of_ours_can_be(path, words):
    assert words in dirs.path_problem(Path(path))


def test_path_problem_knows_the_unix_socket_length_limit():
    room = dirs.SOCKET_PATH_MAX - len("/x/") - len("/" + dirs.SOCKET_NAME)
    fits = Path("/x") / ("d" * room)
    assert dirs.path_problem(fits, socket=True) is None
    assert "too long for the control socket" in dirs.path_problem(Path(f"{fits}d"), socket=True)
    assert dirs.path_problem(Path(f"{fits}d"), socket=False) is None


def test_the_socket_name_is_the_one_the_control_socket_uses():
    assert socket_path(Path("/run/evsed")) == Path("/run/evsed") / dirs.SOCKET_NAME


@as_root
def test_a_client_trusts_a_runtime_directory_of_the_daemons_user_and_no_one_elses(tmp_path, monkeypatch):
    # `evsed status` run by an administrator reaches /run/evsed, owned by the daemon's user
    run = tmp_path / "run"
    run.mkdir(mode=0o750)
    os.chown(run, NOBODY, NOBODY)
    with pytest.raises(dirs.DirectoryError, match=f"owned by uid {NOBODY}, not by this user .* root or evsed"):
        dirs.check_runtime_dir(run)
    monkeypatch.setattr(dirs, "DAEMON_USER", "nobody")  # uid 65534 plays the evsed user
    dirs.check_runtime_dir(run)
    run.chmod(0o770)
    with pytest.raises(dirs.DirectoryError, match="writable by its group"):
        dirs.check_runtime_dir(run)
    dirs.check_runtime_dir(tmp_path / "absent")  # no daemon: connect() says so
