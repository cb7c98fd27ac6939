"""Keel's test kit: model stand-ins, a worker on a fresh queue, gate and ledger helpers,
replay checks, and a pytest plugin.

What an app team's own tests import. Nothing here talks to a real model: ``ScriptedModel``
answers from a script, ``FunctionModel`` from the test's own function, and the offline
model from the app's rules. Real model calls are refused while ``ALLOW_MODEL_REQUESTS`` is
False, which the pytest plugin (``keel.testing.pytest_plugin``, loaded automatically once
Keel is installed) sets for the whole session; a test that means to call a real SDK client
(against a local fake server) opts in with ``allow_model_requests()`` or
``@pytest.mark.allow_model_requests``.

Example:
    A test of an app's routing, on the offline model::

        async def test_small_claims_are_approved_by_rule(keel_env, keel_worker) -> None:
            async with keel_worker(apps=[APP]) as task_queue:
                handle = await keel_env.client.start_workflow(
                    ExpenseApprovalWorkflow.run, SMALL_CLAIM, id="exp-1", task_queue=task_queue
                )
                result = await handle.result()
            assert events_of(result.ledger, Routed)[0].route == "auto-approve"

    See ``examples/expense-approval`` in Keel's repository for a whole app tested this way.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.activities.providers.base import ModelProvider, ModelReply, ModelRequest
    from keel.testing._environment import (
        keel_worker,
        offline_settings,
        temporal_test_server_path,
        time_skipping_env,
    )
    from keel.testing._helpers import (
        approve,
        decide,
        events_of,
        ledger_of,
        modify,
        reject,
        review_payload,
        wait_for_gate,
    )
    from keel.testing._models import FunctionModel, ScriptedModel
    from keel.testing._replay import HistorySource, assert_replays, replay_histories
    from keel.testing._reviews import (
        kit_review_env,
        kit_review_key,
        kit_review_key_file,
        kit_review_trust,
        kit_reviewer_keys_file,
        signed_review,
    )

from keel.activities.providers import guard as _guard
from keel.activities.providers.guard import (
    ModelRequestsBlocked,
    allow_model_requests,
    check_model_requests_allowed,
)

# The rest is imported on first use, so the providers' guard costs one tiny import.
_EXPORTS = {
    "ModelProvider": "keel.activities.providers.base",
    "ModelReply": "keel.activities.providers.base",
    "ModelRequest": "keel.activities.providers.base",
    "FunctionModel": "keel.testing._models",
    "ScriptedModel": "keel.testing._models",
    "keel_worker": "keel.testing._environment",
    "offline_settings": "keel.testing._environment",
    "temporal_test_server_path": "keel.testing._environment",
    "time_skipping_env": "keel.testing._environment",
    "approve": "keel.testing._helpers",
    "decide": "keel.testing._helpers",
    "signed_review": "keel.testing._reviews",
    "kit_review_key": "keel.testing._reviews",
    "kit_review_env": "keel.testing._reviews",
    "kit_review_key_file": "keel.testing._reviews",
    "kit_review_trust": "keel.testing._reviews",
    "kit_reviewer_keys_file": "keel.testing._reviews",
    "events_of": "keel.testing._helpers",
    "ledger_of": "keel.testing._helpers",
    "modify": "keel.testing._helpers",
    "reject": "keel.testing._helpers",
    "review_payload": "keel.testing._helpers",
    "wait_for_gate": "keel.testing._helpers",
    "HistorySource": "keel.testing._replay",
    "assert_replays": "keel.testing._replay",
    "replay_histories": "keel.testing._replay",
}


def __getattr__(name: str) -> Any:
    if name == "ALLOW_MODEL_REQUESTS":  # read through: the providers' guard holds it
        return _guard.ALLOW_MODEL_REQUESTS
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'keel.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ALLOW_MODEL_REQUESTS",
    "FunctionModel",
    "HistorySource",
    "ModelProvider",
    "ModelReply",
    "ModelRequest",
    "ModelRequestsBlocked",
    "ScriptedModel",
    "allow_model_requests",
    "approve",
    "assert_replays",
    "check_model_requests_allowed",
    "decide",
    "events_of",
    "keel_worker",
    "kit_review_env",
    "kit_review_key",
    "kit_review_key_file",
    "kit_review_trust",
    "kit_reviewer_keys_file",
    "ledger_of",
    "modify",
    "offline_settings",
    "reject",
    "replay_histories",
    "review_payload",
    "signed_review",
    "temporal_test_server_path",
    "time_skipping_env",
    "wait_for_gate",
]
