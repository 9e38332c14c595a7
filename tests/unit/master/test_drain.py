"""When a drain ends by itself (decisions.drain_over) and what ending it keeps; the admin
flags' codec with the drain's session, and flags written before it existed."""

from __future__ import annotations

from master.decisions import drain_ended, drain_over
from master.store import AdminFlags, decode_admin, encode_admin


def test_a_drain_is_of_one_process() -> None:
    drained = AdminFlags(cordoned=False, draining=True, drain_started_tasks=3, drain_session=7)
    assert not drain_over(drained, 7)          # the same process: still draining
    assert not drain_over(drained, None)       # gone, nobody registered yet: still draining
    assert drain_over(drained, 8)              # another process registered: over
    assert not drain_over(AdminFlags(draining=True), 8)   # session unknown: uncordon ends it
    assert not drain_over(AdminFlags(cordoned=True), 8)   # not draining at all


def test_ending_a_drain_keeps_the_cordon() -> None:
    assert drain_ended(AdminFlags(True, True, 3, 7)) == AdminFlags(cordoned=True)
    assert drain_ended(AdminFlags(False, True, 3, 7)) == AdminFlags()


def test_admin_codec() -> None:
    flags = AdminFlags(True, True, 4, 123456789012345)
    assert decode_admin(encode_admin(flags)) == flags
    old = b'{"cordoned": false, "draining": true, "drain_started_tasks": 2}'
    assert decode_admin(old) == AdminFlags(False, True, 2, 0)
