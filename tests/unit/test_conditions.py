"""Conditions: transition times move only on a flip, Ready summarises its parts, events follow changes."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from tenant_operator.api import conditions, fields
from tenant_operator.api.conditions import (
    Condition,
    find,
    is_true,
    merge,
    summary,
    transitions,
)
from tenant_operator.api.tenant import TenantStatus

T1 = "2026-05-01T12:00:00Z"
T2 = "2026-05-01T12:05:00Z"


def ready_namespace(**changes) -> Condition:
    fields = {"type": conditions.NAMESPACE_READY, "ok": True, "reason": "NamespaceReady", "message": "in place"}
    return Condition(**{**fields, **changes})


def test_condition_status_is_kubernetes_text():
    assert [Condition("X", ok, "R").status for ok in (True, False, None)] == ["True", "False", "Unknown"]


def test_new_condition_gets_every_field():
    merged = merge([], [ready_namespace()], generation=4, timestamp=T1)

    assert merged == [{"type": "NamespaceReady", "status": "True", "reason": "NamespaceReady",
                       "message": "in place", "observedGeneration": 4, "lastTransitionTime": T1}]


def test_transition_time_kept_when_status_unchanged():
    first = merge([], [ready_namespace()], 1, T1)

    again = merge(first, [ready_namespace(reason="Reapplied", message="again")], 2, T2)

    (condition,) = again
    assert condition["lastTransitionTime"] == T1
    assert condition["reason"] == "Reapplied" and condition["message"] == "again"
    assert condition["observedGeneration"] == 2


def test_transition_time_moves_when_status_flips():
    first = merge([], [ready_namespace()], 1, T1)

    flipped = merge(first, [ready_namespace(ok=False, reason="ApplyFailed")], 1, T2)

    assert flipped[0]["status"] == "False"
    assert flipped[0]["lastTransitionTime"] == T2


def test_unknown_to_true_is_a_transition():
    first = merge([], [ready_namespace(ok=None, reason="Pending")], 1, T1)

    assert merge(first, [ready_namespace()], 1, T2)[0]["lastTransitionTime"] == T2


def test_conditions_not_updated_are_kept_as_they_are():
    foreign = {"type": "example.com/Audited", "status": "True", "reason": "Audited", "message": "",
               "lastTransitionTime": T1}

    merged = merge([foreign], [ready_namespace()], 5, T2)

    assert find(merged, "example.com/Audited") == foreign


def test_merge_does_not_modify_the_current_list():
    current = merge([], [ready_namespace()], 1, T1)
    snapshot = copy.deepcopy(current)

    merge(current, [ready_namespace(ok=False, reason="ApplyFailed")], 2, T2)

    assert current == snapshot


def test_conditions_come_in_a_stable_order_ready_first():
    updates = [Condition(kind, True, "Fine") for kind in (
        conditions.MIGRATING, conditions.WORKLOADS_READY, "Zeta", conditions.DATABASE_READY, "Alpha",
        conditions.QUOTA_READY, conditions.NAMESPACE_READY, conditions.READY)]

    merged = merge([], updates, 1, T1)

    assert [c["type"] for c in merged] == ["Ready", "NamespaceReady", "QuotaReady", "DatabaseReady",
                                           "WorkloadsReady", "Migrating", "Alpha", "Zeta"]


def test_merged_conditions_are_a_valid_status():
    parts = [ready_namespace(), Condition(conditions.DATABASE_READY, False, "DatabaseUnavailable", "down")]

    merged = merge([], [*parts, summary(parts)], 3, conditions.now())

    status = TenantStatus.model_validate({"conditions": merged})
    assert status.condition("Ready").status == "False"
    assert status.condition("Ready").observed_generation == 3


def test_now_is_an_rfc3339_utc_timestamp():
    assert fields.RFC3339_PATTERN.match(conditions.now())
    assert conditions.now().endswith("Z")


# --- summary -----------------------------------------------------------------------------


def test_summary_is_ready_when_every_part_is_true():
    ready = summary([ready_namespace(), Condition(conditions.QUOTA_READY, True, "QuotaApplied")])

    assert (ready.type, ready.ok, ready.reason) == ("Ready", True, "TenantReady")


def test_summary_picks_the_first_part_that_is_not_true():
    parts = [
        ready_namespace(),
        Condition(conditions.QUOTA_READY, False, "ApplyFailed", "quota refused"),
        Condition(conditions.DATABASE_READY, False, "DatabaseUnavailable", "connection refused"),
    ]

    ready = summary(parts)

    assert (ready.type, ready.ok, ready.reason) == ("Ready", False, "ApplyFailed")
    assert ready.message == "QuotaReady: quota refused"


def test_summary_of_an_unknown_part_is_unknown():
    parts = [Condition(conditions.DATABASE_READY, None, "Provisioning", "creating"),
             Condition(conditions.WORKLOADS_READY, False, "TemplateError", "no template")]

    ready = summary(parts)

    assert ready.ok is None and ready.status == "Unknown"
    assert ready.reason == "Provisioning"


# --- transitions and lookups ---------------------------------------------------------------


def test_transitions_lists_only_changed_status_or_reason():
    before = merge([], [ready_namespace(), Condition(conditions.QUOTA_READY, True, "QuotaApplied"),
                        Condition(conditions.DATABASE_READY, True, "DatabaseReady")], 1, T1)
    after = merge(before, [
        ready_namespace(message="a new message only"),                          # message only: no event
        Condition(conditions.QUOTA_READY, True, "QuotaReapplied"),             # reason changed
        Condition(conditions.DATABASE_READY, False, "DatabaseReady"),          # status changed
    ], 2, T2)

    assert [c["type"] for c in transitions(before, after)] == ["QuotaReady", "DatabaseReady"]


def test_a_new_condition_is_a_transition():
    after = merge([], [ready_namespace()], 1, T1)

    assert transitions([], after) == after


def test_nothing_changed_means_no_transitions():
    current = merge([], [ready_namespace()], 1, T1)

    assert transitions(current, merge(current, [ready_namespace()], 2, T2)) == []


def test_find_and_is_true():
    current = merge([], [ready_namespace(), Condition(conditions.QUOTA_READY, False, "ApplyFailed")], 1, T1)

    assert find(current, "NamespaceReady")["reason"] == "NamespaceReady"
    assert find(current, "Ready") is None
    assert is_true(current, "NamespaceReady")
    assert not is_true(current, "QuotaReady")
    assert not is_true(current, "Ready")


# --- restating costs no write --------------------------------------------------------------------

updates = st.lists(
    st.builds(Condition,
              type=st.sampled_from([conditions.READY, *conditions.PARTS, conditions.MIGRATING]),
              ok=st.sampled_from([True, False, None]),
              reason=st.sampled_from(["Fine", "ApplyFailed", "Provisioning"]),
              message=st.sampled_from(["", "details"])),
    max_size=8,
    unique_by=lambda condition: condition.type,  # a reconcile states each condition once
)


@settings(max_examples=50)
@given(current=updates, restated=updates)
def test_restating_the_same_conditions_changes_nothing(current, restated):
    before = merge([], current, 1, T1)
    once = merge(before, restated, 2, T2)

    assert merge(once, restated, 2, "2030-01-01T00:00:00Z") == once
    assert transitions(once, merge(once, restated, 2, T2)) == []
