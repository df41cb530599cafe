"""The URL rule's loopback test allowance reaches packs and source entries (the local cloud's
git server) and nothing else: without the `host:port` in the rule, such a pack is refused."""

from __future__ import annotations

import pytest

from comfyburst.domain.custom_node_sources import PackInvalid, SourcePolicy, parse_pack
from comfyburst.domain.environments import EnvironmentInvalid, canonical_packs

COMMIT = "a" * 40
LOOPBACK = "127.0.0.1:5000"


def test_a_loopback_pack_is_accepted_only_with_its_host_port_in_the_rule() -> None:
    text = f"http://{LOOPBACK}/owner/repo.git/@{COMMIT}"
    with pytest.raises(PackInvalid, match="https"):
        parse_pack(text)
    with pytest.raises(PackInvalid):
        parse_pack(f"http://127.0.0.1:5001/owner/repo@{COMMIT}", test_hostports=(LOOPBACK,))
    pack = parse_pack(text, test_hostports=(LOOPBACK,))
    assert pack.text == f"http://{LOOPBACK}/owner/repo@{COMMIT}"
    assert pack.host == LOOPBACK and pack.path == ("owner", "repo")
    with pytest.raises(EnvironmentInvalid):
        canonical_packs([text])
    assert canonical_packs([text], (LOOPBACK,)) == (pack,)
    # A deployed pack keeps its https canonical form.
    assert parse_pack(f"https://GitHub.com/o/r@{COMMIT}").host == "github.com"


def test_a_source_entry_may_name_the_rules_test_host_port() -> None:
    pack = parse_pack(f"http://{LOOPBACK}/owner/repo@{COMMIT}", test_hostports=(LOOPBACK,))
    with pytest.raises(PackInvalid):
        SourcePolicy.of([f"{LOOPBACK}/owner"])
    assert SourcePolicy.of([f"{LOOPBACK}/owner"], (LOOPBACK,)).allows(pack)
    assert not SourcePolicy.of([f"{LOOPBACK}/other"], (LOOPBACK,)).allows(pack)
    with pytest.raises(PackInvalid):  # an address alone is not the rule's host:port
        SourcePolicy.of(["127.0.0.1"], (LOOPBACK,))
