"""A card learned on the page goes into the config file: tap, name, group; the daemon appends a
[[card]] table after the host's text (kept as written, comments and all), reloads, and the card
charges. Across the real control socket, as the web service's link, against a running daemon."""

from __future__ import annotations

import asyncio
import os

import pytest

from evsed import config
from evsed import protocol as p
from evsed.services.link import Link
from test_daemon import ask, running, until, write_config

NEW_CARD = "0E0F1011"


def comments(tmp_path):
    path = write_config(tmp_path, "\n# the host's own note, kept word for word\n")
    return path, path.read_text()


async def learn(cfg, link: Link) -> p.LearnedCard:
    assert isinstance(await link.command(p.Learn(timeout_s=30)), p.LearnReply)
    await ask(cfg, p.Tap(card=NEW_CARD.lower()))
    reply = await link.command(p.Learned())
    assert isinstance(reply, p.LearnedReply) and reply.card is not None
    return reply.card


def test_a_learned_card_is_written_after_the_hosts_text_and_charges_at_once(tmp_path):
    path, before = comments(tmp_path)
    cfg = config.load(path)

    async def scenario():
        async with running(cfg) as daemon:
            link = await Link.connect(cfg.store.runtime_dir, "web")
            try:
                card = await learn(cfg, link)
                assert card.uid == NEW_CARD and not card.known
                reply = await link.command(p.AddCard(uid=card.uid, name="Dana's car", group="family"))
                assert isinstance(reply, p.AddCardReply) and reply.result == "Accepted"
                await until(lambda: daemon.charger.auth.local.card(NEW_CARD) is not None)
                await ask(cfg, p.Plug())
                await ask(cfg, p.Tap(card=NEW_CARD))
                await until(lambda: daemon.connectors[1].state.contactor_closed)
                again = await learn(cfg, link)
                assert again.known and again.name == "Dana's car" and again.group == "family"
            finally:
                await link.close()

    asyncio.run(scenario())
    after = path.read_text()
    assert after.startswith(before.rstrip("\n"))  # the host's text, comments and all, as it was
    assert after.endswith('[[card]]\nuid = "0E0F1011"\nname = "Dana\'s car"\ngroup = "family"\n')
    loaded = config.load(path)
    assert [c for c in loaded.cards if c.uid == NEW_CARD][0].group == "family"
    assert not list(tmp_path.glob(".*evsed-new"))


@pytest.mark.parametrize("uid, group, why", [
    ("04A1B2C3", "", "already in"),  # Alice's card
    (NEW_CARD, "nobody", "no group named 'nobody'"),
])
def test_a_card_that_is_known_or_names_no_group_is_refused_and_nothing_is_written(tmp_path, uid, group, why):
    path, before = comments(tmp_path)
    cfg = config.load(path)

    async def scenario():
        async with running(cfg):
            await ask(cfg, p.Learn(timeout_s=30))
            await ask(cfg, p.Tap(card=uid))
            return await ask(cfg, p.AddCard(uid=uid, name="x", group=group))

    reply = asyncio.run(scenario())
    assert isinstance(reply, p.Failure) and why in reply.error
    assert path.read_text() == before


@pytest.mark.parametrize("tapped", [None, "0E0F1012"])
def test_a_card_nobody_tapped_for_learn_cannot_be_added_not_even_by_the_page(tmp_path, tapped):
    # a compromised web page must not be able to let a card of its own making charge
    path, before = comments(tmp_path)
    cfg = config.load(path)

    async def scenario():
        async with running(cfg):
            link = await Link.connect(cfg.store.runtime_dir, "web")
            try:
                if tapped:
                    await link.command(p.Learn(timeout_s=30))
                    await ask(cfg, p.Tap(card=tapped))
                return await link.command(p.AddCard(uid=NEW_CARD, name="mallory", group=""))
            finally:
                await link.close()

    reply = asyncio.run(scenario())
    assert isinstance(reply, p.Failure) and "not the card last tapped for learn" in reply.error
    assert path.read_text() == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes any directory")
def test_a_config_the_daemon_may_not_write_is_refused_with_the_table_to_paste(tmp_path):
    path, before = comments(tmp_path)
    cfg = config.load(path)

    async def scenario():
        async with running(cfg):
            await ask(cfg, p.Learn(timeout_s=30))
            await ask(cfg, p.Tap(card=NEW_CARD))
            path.parent.chmod(0o555)
            try:
                return await ask(cfg, p.AddCard(uid=NEW_CARD, name="Dana", group=""))
            finally:
                path.parent.chmod(0o755)

    reply = asyncio.run(scenario())
    assert isinstance(reply, p.Failure) and "not writable" in reply.error and '[[card]]\nuid = "0E0F1011"' in reply.error
    assert path.read_text() == before


def test_a_directory_the_daemons_user_may_not_write_is_found_before_anything_is_written(tmp_path):
    """The check itself, as another user than the directory's owner (a child process, as root drops
    to nobody; root itself may write anywhere, so the daemon test above runs only as a user)."""
    from evsed.config import edit

    path = tmp_path / "etc" / "evsed.toml"
    path.parent.mkdir(mode=0o755)
    path.write_text("# the host's\n")
    tmp_path.chmod(0o755)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: another user when run as root
        try:
            os.close(read)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            else:
                path.parent.chmod(0o555)
            os.write(write, (edit.writable(path) or "").encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as f:
        why = f.read()
    path.parent.chmod(0o755)
    assert why.startswith(f"{path.parent} is not writable")
