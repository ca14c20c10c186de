"""StackClient.items(): each item exactly once, even while a sweep moves items between states."""

from __future__ import annotations

from typing import Any

from flywheel.adapters import items
from flywheel.domain.items import TRAINING_META_ID

from dataflywheel.stack_client import StackClient


class MovingTable:
    """The DynamoDB client, but every read is followed by a sweep moving items on a state."""

    def __init__(self, ddb: Any, table: str) -> None:
        self.ddb, self.table = ddb, table

    def _sweep(self) -> None:
        pages = self.ddb.get_paginator("scan").paginate(TableName=self.table)
        for raw in (r for p in pages for r in p["Items"]):
            state = raw.get("state", {}).get("S")
            after = {"unlabeled": "auto_labeled"}.get(state)  # what a relabel sweep does
            if after:
                self.ddb.update_item(
                    TableName=self.table,
                    Key={"item_id": raw["item_id"]},
                    UpdateExpression="SET #s = :s",
                    ExpressionAttributeNames={"#s": "state"},
                    ExpressionAttributeValues={":s": {"S": after}},
                )

    def scan(self, **kwargs: Any) -> dict:
        page = self.ddb.scan(**kwargs)
        self._sweep()
        return page

    def query(self, **kwargs: Any) -> dict:
        page = self.ddb.query(**kwargs)
        self._sweep()
        return page


def client_for(stack) -> StackClient:
    c = StackClient.__new__(StackClient)
    c.outputs = {"ItemsTableName": stack.table}
    c._clients = {"dynamodb": MovingTable(stack.ddb, stack.table)}
    return c


def test_items_returns_each_item_once_while_a_sweep_moves_them(stack):
    # Given 30 unlabeled items, 5 human-labeled ones and the training meta record
    for n in range(35):
        state = "unlabeled" if n < 30 else "human_labeled"
        items.put_new(stack.table, {"item_id": f"{n:064x}", "state": state, "image_key": "k"})
    items.put_training_meta(stack.table, {"job_name": "dfw-x"})

    # When all items are listed while every read is followed by a sweep changing states
    listed = client_for(stack).items()

    # Then the table's 35 items come back once each (the meta record is not an item)
    assert len(listed) == 35 and len({i["item_id"] for i in listed}) == 35
    assert TRAINING_META_ID not in {i["item_id"] for i in listed}


def test_items_filters_by_state(stack):
    for n, state in enumerate(["unlabeled", "human_labeled", "human_labeled", "rejected"]):
        items.put_new(stack.table, {"item_id": f"{n:064x}", "state": state})
    c = StackClient.__new__(StackClient)
    c.outputs, c._clients = {"ItemsTableName": stack.table}, {"dynamodb": stack.ddb}
    assert sorted(i["item_id"][-1] for i in c.items(("human_labeled",))) == ["1", "2"]
    assert c.items(("auto_labeled",)) == []


class RecordingTable:
    """The DynamoDB client; keeps every Query request and response page it passed on."""

    def __init__(self, ddb: Any) -> None:
        self.ddb, self.pages = ddb, []
        self.meta = ddb.meta

    def get_paginator(self, name: str) -> Any:
        paginator = self.ddb.get_paginator(name)
        pages = self.pages

        class Recording:
            def paginate(self, **kwargs: Any) -> Any:
                for page in paginator.paginate(**kwargs):
                    pages.append((kwargs, page))
                    yield page

        return Recording()

    def scan(self, **kwargs: Any) -> dict:
        raise AssertionError("counts must not Scan the table")


def test_counts_are_count_queries_on_the_state_index_across_pages(stack):
    # Given 260 unlabeled items of ~5 KB (more than the 1 MB a Query page covers), 3 auto-labeled
    # ones by two models, a rejected one and the training meta record
    big = "x" * 5000
    for n in range(260):
        items.put_new(stack.table, {"item_id": f"{n:064x}", "state": "unlabeled", "note": big})
    for n, version in enumerate(["m1", "m2", "m2"], start=300):
        items.put_new(
            stack.table, {"item_id": f"{n:064x}", "state": "auto_labeled", "model_version": version}
        )
    items.put_new(stack.table, {"item_id": f"{400:064x}", "state": "rejected"})
    items.put_training_meta(stack.table, {"job_name": "dfw-x"})
    recording = RecordingTable(stack.ddb)
    c = StackClient.__new__(StackClient)
    c.outputs, c._clients = {"ItemsTableName": stack.table}, {"dynamodb": recording}

    # When the CLI's status line and the demo count items
    counts = c.counts()
    stale = c.count("auto_labeled", "model_version <> :v", v="m2")

    # Then every state is counted exactly, the filtered count too
    assert counts == {
        "unlabeled": 260,
        "auto_labeled": 3,
        "needs_review": 0,
        "human_labeled": 0,
        "rejected": 1,
    }
    assert stale == 1
    # And only COUNT queries on the state index ran, paged, with no item bodies returned
    assert all(
        k["IndexName"] == "state-index" and k["Select"] == "COUNT" for k, _ in recording.pages
    )
    assert all("Items" not in page for _, page in recording.pages)
    unlabeled_pages = [
        p
        for k, p in recording.pages
        if k["ExpressionAttributeValues"][":state"]["S"] == "unlabeled"
    ]
    assert len(unlabeled_pages) >= 2


def test_the_demo_counts_the_review_items_a_sweep_has_yet_to_reach(stack):
    from dataflywheel.demo import STALE_REVIEW

    # Given needs_review items: labeled by the old model, by the new one, audit draws, and
    # one with no model label yet
    for n, extra in enumerate(
        [
            {"model_version": "old", "review_reason": "uncertain"},
            {"model_version": "old"},
            {"model_version": "new", "review_reason": "uncertain"},
            {"review_reason": "audit"},
            {"model_version": "old", "review_reason": "audit"},
            {},
        ]
    ):
        items.put_new(stack.table, {"item_id": f"{n:064x}", "state": "needs_review", **extra})
    c = StackClient.__new__(StackClient)
    c.outputs, c._clients = {"ItemsTableName": stack.table}, {"dynamodb": stack.ddb}
    # Then the old model's two non-audit items and the unlabeled one are still to do
    assert c.count("needs_review", STALE_REVIEW, version="new", audit="audit") == 3
