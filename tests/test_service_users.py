"""`evsed run` as root never runs a network service as root: each runs as its own user ([control],
the users `evsed install` creates), or the daemon refuses to start, naming the users to create. A
service it starts gets its role from the channel it is handed, not from its uid."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from evsed import config
from evsed.errors import StartError
from evsed.shell.daemon import Daemon
from evsed.shell.services import AS_ROOT_ENV
from test_daemon import running, until, write_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="what evsed run does as root")


def test_as_root_without_the_service_users_the_daemon_refuses_naming_them(tmp_path, monkeypatch):
    monkeypatch.delenv(AS_ROOT_ENV, raising=False)
    cfg = config.load(write_config(tmp_path, '[web]\nport = 0\n[control]\nweb_user = "evsed-no-such-user"\n'
                                             'mqtt_user = "evsed-nor-this"\n[mqtt]\nurl = "mqtt://127.0.0.1:9"\n'))
    with pytest.raises(StartError, match="these do not exist: .*evsed install") as refused:
        Daemon(cfg)
    assert "evsed-no-such-user" in str(refused.value) and "evsed-nor-this" in str(refused.value)


def test_as_root_a_service_runs_as_its_own_user_holding_the_channel_it_was_handed(monkeypatch):
    monkeypatch.delenv(AS_ROOT_ENV, raising=False)
    where = Path(tempfile.mkdtemp(prefix="evsed-users-"))  # reachable by the service's user (pytest's is root's)
    os.chmod(where, 0o755)
    told = where / "told"  # where the service's user may write
    told.mkdir(mode=0o1777)
    told.chmod(0o1777)
    # The service's program says who it runs as and what it was handed (this interpreter lives where
    # another user cannot run it: a stand-in does; the channel itself is tests/test_roles.py's)
    program = where / "service"
    program.write_text('#!/bin/sh\n{ grep ^Uid: /proc/$$/status; [ -S /proc/self/fd/$EVSED_CONTROL_FD ] && echo channel; }'
                       f' > {told}/said.new && mv {told}/said.new {told}/said\nexec sleep 60\n')
    program.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(program))
    cfg = config.load(write_config(where, '[mqtt]\nurl = "mqtt://127.0.0.1:9"\n[control]\nmqtt_user = "65534"\n'))

    async def scenario():
        async with running(cfg):
            await until(lambda: (told / "said").exists(), timeout_s=30)
            return (told / "said").read_text().split()

    try:
        said = asyncio.run(scenario())
    finally:
        shutil.rmtree(where, ignore_errors=True)
    assert said == ["Uid:", "65534", "65534", "65534", "65534", "channel"]  # real, effective, saved, fs: never root


def test_a_network_service_is_never_configured_to_run_as_root(tmp_path):
    with pytest.raises(config.ConfigError, match="ocpp_user.*never runs as root"):
        config.load(write_config(tmp_path, '[control]\nocpp_user = "root"\n'))
