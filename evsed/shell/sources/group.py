"""The group source: in free vend, the free-vend group's cap (a card's group cap comes with its
authorization, the core's own `authorization` link)."""

from __future__ import annotations

from typing import Protocol

from evsed.core import limits as lm
from evsed.shell.sources import Connected


class Groups(Protocol):
    @property
    def free_vend(self) -> bool: ...

    def group_of(self, ctrl: Connected) -> str: ...
    def group_cap_a(self, name: str) -> float | None: ...


def limit(groups: Groups, ctrl: Connected) -> lm.Limit:
    st = ctrl.state
    if st.auth_source == "free_vend" or (not st.session and groups.free_vend):
        name = groups.group_of(ctrl)
        return lm.group(name or None, groups.group_cap_a(name))
    return lm.group(None, None)
