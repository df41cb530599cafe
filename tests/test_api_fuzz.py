"""Fuzz POST /jobs and POST /jobs:validate on the real app over the emulators with hostile
JSON: lone surrogates, numbers beyond 64 bits and beyond a double, NaN/Infinity, deep
nesting, Firestore-hostile keys, traversing file names, placed where a workflow carries
values. Every answer is below 500; after every 4xx nothing was written (Firestore documents,
bucket objects, VM leases and starts are counted before and after); every error body and every
verdict stays within a small multiple of its request. Bounded (a fixed example count) and
derandomized; the closing line says what was tried."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests._api_support import body
from tests.test_api_emulator import Cloud, cloud, settings, standin  # noqa: F401

pytestmark = pytest.mark.emulator

MIN_BUDGET_BYTES = 16 * 1024
MAX_ANSWER_BYTES = 1024 * 1024
_RAW = "\x00raw:"  # a placeholder replaced by a bare JSON token after dumping
_RAW_TOKEN = re.compile(r'"\\u0000raw:([^"\\]*)\\u0000"')


def _raw(token: str) -> str:
    return f"{_RAW}{token}\x00"


def _nest(depth: int, leaf: Any) -> Any:
    for index in range(depth):
        leaf = [leaf] if index % 2 else {"k": leaf}
    return leaf


surrogate_text = st.builds(
    lambda a, s, b: a + s + b,
    st.text(max_size=3),
    st.characters(categories=["Cs"]),
    st.text(max_size=3),
)
hostile_scalar = st.one_of(
    surrogate_text,
    st.integers(min_value=2**63, max_value=10**400),
    st.integers(max_value=-(2**63) - 1, min_value=-(10**30)),
    st.sampled_from([_raw("1e400"), _raw("-1e999"), _raw("NaN"), _raw("Infinity")]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        ["x.png [output]", "x.png[temp]", "../x.png", "/etc/passwd", "__x__", "", "a" * 3000]
    ),
)
hostile_key = st.one_of(
    st.sampled_from(["__x__", "__name__", "", ".", "..", "a/b", "a.b", "`x`", "k" * 1500]),
    surrogate_text,
)
hostile_value = st.one_of(
    st.recursive(
        hostile_scalar,
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(hostile_key, kids, max_size=3),
        max_leaves=6,
    ),
    st.builds(_nest, st.integers(min_value=15, max_value=300), hostile_scalar),
)


def _side_branch(request: dict[str, Any], node_id: str, value: Any) -> None:
    """An extra output whose wrong combo value ComfyUI echoes; the valid output still runs."""
    workflow = request["workflow"]
    workflow[f"{node_id}c"] = {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": value},
    }
    workflow[f"{node_id}e"] = {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1},
    }
    workflow[f"{node_id}d"] = {
        "class_type": "VAEDecode",
        "inputs": {"samples": [f"{node_id}e", 0], "vae": [f"{node_id}c", 2]},
    }
    workflow[node_id] = {"class_type": "PreviewImage", "inputs": {"images": [f"{node_id}d", 0]}}


def _place(where: str, key: str, value: Any) -> dict[str, Any]:
    request = body()
    workflow = request["workflow"]
    if where == "input_value":
        workflow["1"]["inputs"]["color"] = value
    elif where == "extra_input":
        workflow["2"]["inputs"][key] = value
    elif where == "side_branch":
        _side_branch(request, "9", value)
    elif where == "side_branch_node_id":
        _side_branch(request, key, {"v": value})
    elif where == "load_image":
        request["inputs"] = [{"name": "in.png", "data_b64": "iVBORw0KGgo="}]
        workflow["3"] = {"class_type": "LoadImage", "inputs": {"image": value}}
        workflow["4"] = {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}
    elif where == "meta":
        workflow["1"]["_meta"] = {key: value}
    elif where == "options":
        request["options"] = {key: value}
    elif where == "top_level":
        request[key] = value
    else:  # the whole workflow
        request["workflow"] = value
    return request


PLACES = [
    "input_value",
    "extra_input",
    "side_branch",
    "side_branch_node_id",
    "load_image",
    "meta",
    "options",
    "top_level",
    "workflow",
]


def _encode(request: dict[str, Any], raw_utf8: bool) -> bytes:
    """JSON text of the request, the placeholders made bare tokens (1e400, NaN), lone
    surrogates either escaped or as raw (invalid) UTF-8 bytes."""
    text = json.dumps(request, ensure_ascii=not raw_utf8)
    text = _RAW_TOKEN.sub(lambda m: m.group(1), text)
    return text.encode("utf-8", "surrogatepass")


class Writes:
    """What the emulators hold that a request could have written."""

    def __init__(self, cloud: Cloud) -> None:  # noqa: F811
        self.cloud = cloud

    def snapshot(self) -> tuple[Any, ...]:
        store = self.cloud.store
        jobs = sorted(s.id for s in store._jobs.select([]).stream())
        keys = sorted(s.id for s in store._idempotency.select([]).stream())
        vms = sorted((s.id, s.update_time) for s in store._vms.stream())
        objects = sorted(self.cloud.objects())
        started = {vm["name"] for vm in self.cloud.standin.instances()} - {
            vm["name"] for vm in self.cloud.standin.instances() if vm["status"] == "TERMINATED"
        }
        return jobs, keys, vms, objects, started

    @staticmethod
    def unchanged(before: tuple[Any, ...], after: tuple[Any, ...]) -> bool:
        *documents_before, started_before = before
        *documents_after, started_after = after
        return documents_before == documents_after and started_after <= started_before


STATS: dict[str, Counter[str]] = {}


def _fuzz(cloud: Cloud, path: str, request: dict[str, Any], raw_utf8: bool) -> None:  # noqa: F811
    stats = STATS.setdefault(path, Counter())
    data = _encode(request, raw_utf8)
    writes = Writes(cloud)
    before = writes.snapshot()
    response = cloud.client.post(path, data=data, content_type="application/json")
    stats["tried"] += 1
    status = response.status_code
    stats[f"{status // 100}xx"] += 1
    assert status < 500, (status, response.get_data(as_text=True)[:500], data[:300])
    budget = min(MAX_ANSWER_BYTES, max(MIN_BUDGET_BYTES, 2 * len(data)))
    if status >= 400 or path.endswith(":validate"):
        assert len(response.data) <= budget, (status, len(response.data), len(data))
    assert len(response.data) <= MAX_ANSWER_BYTES
    if status >= 400:
        after = writes.snapshot()
        if not Writes.unchanged(before, after):
            stats["writes_after_4xx"] += 1
        assert Writes.unchanged(before, after), (status, data[:300])
        assert response.get_json()["error"]["code"]


_EXAMPLES = hypothesis_settings(
    max_examples=45,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
    # No shrinking: on the emulators it outlasts the test timeout; the failure shows the input.
    phases=[Phase.explicit, Phase.generate],
)


@pytest.mark.parametrize("path", ["/jobs", "/jobs:validate"])
def test_hostile_json_never_gets_a_5xx_nor_writes_after_a_4xx(
    cloud: Cloud,  # noqa: F811
    path: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    STATS.pop(path, None)

    @_EXAMPLES
    @given(
        where=st.sampled_from(PLACES),
        key=hostile_key,
        value=hostile_value,
        raw_utf8=st.booleans(),
    )
    def run(where: str, key: str, value: Any, raw_utf8: bool) -> None:
        _fuzz(cloud, path, _place(where, key, value), raw_utf8)

    run()
    stats = STATS[path]
    with capsys.disabled():
        print(
            f"\nfuzz {path}: inputs tried {stats['tried']}, 2xx {stats['2xx']}, "
            f"4xx {stats['4xx']}, 5xx {stats['5xx']}, writes after 4xx "
            f"{stats['writes_after_4xx']}"
        )
    assert stats["5xx"] == 0 and stats["writes_after_4xx"] == 0
    assert stats["4xx"] > 0 and stats["tried"] >= 40
