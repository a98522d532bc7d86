"""The trigger index files ``data`` equalities by value; loose equality (3 == "3", true == "true") still holds."""

from __future__ import annotations

from rules_support import parse

from aiwg_service.protocol import Event
from aiwg_service.rules.matching import TriggerIndex
from aiwg_service.rules.schema import rules_for


def test_data_equality_index_keeps_loose_matching() -> None:
    rules = [{"id": f"ev-{i}", "triggers": [{"type": "webhook.github", "data": {"event": f"e{i}"}}],
              "actions": [{"shell": "true"}]} for i in range(50)]
    rules += [{"id": "num", "triggers": [{"type": "webhook.github", "data": {"data.payload.number": "3"}}],
               "actions": [{"shell": "true"}]},
              {"id": "flag", "triggers": [{"type": "webhook.github", "data": {"draft": "true", "event": "pr"}}],
               "actions": [{"shell": "true"}]},
              {"id": "any", "triggers": [{"type": "webhook.*"}], "actions": [{"shell": "true"}]}]
    compiled, errors = rules_for(parse(rules), "/p")
    assert errors == []
    idx = TriggerIndex(compiled)

    def hits(data: dict[str, object]) -> list[str]:
        return sorted(r.id for r, _t in idx.match(Event("e1", "webhook.github", "", "/p", "webhook", data), []))

    assert hits({"event": "e7"}) == ["any", "ev-7"]
    assert hits({"event": "nope"}) == ["any"]
    assert hits({"event": "e7", "payload": {"number": 3}}) == ["any", "ev-7", "num"]  # 3 == "3"
    assert hits({"event": "pr", "draft": True}) == ["any", "flag"]  # true == "true"
    assert hits({"event": "pr", "draft": False}) == ["any"]
    assert hits({}) == ["any"]
