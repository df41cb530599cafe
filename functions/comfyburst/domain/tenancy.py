"""Who may see a job: its owner, and the deployment's admin principals. Pure, no I/O.

The caller is the verified principal the API authenticated (`api._auth`), never a header a
client can set. A job records it as `Job.caller` when it is created. Status, cancel, outputs
and any listing use this one rule; a job the caller may not see answers exactly like one that
does not exist.
"""

from __future__ import annotations

from collections.abc import Collection

from comfyburst.schema import Job


def is_admin(caller: str | None, admins: Collection[str]) -> bool:
    """Whether the caller is one of the deployer's admin principals (they see every job)."""
    return caller is not None and caller in admins


def can_see(caller: str | None, job: Job, admins: Collection[str]) -> bool:
    """Whether `caller` may read or cancel `job`.

    Owners see their jobs; admins see all. A caller of None (an unauthenticated deployment,
    such as the local cloud in `iam` mode) sees only jobs created without a caller, and a job
    without a caller is seen by no authenticated caller but admins.
    """
    if is_admin(caller, admins):
        return True
    return job.caller == caller
