"""The review app's queue: lease the next items, take answers, undo, progress.

Every answer goes through ``services.human_labels.apply_label`` (labels) or
``items.reject``: the same write path as labels files, plus who, when and the model's
suggestion on the item and in the answer log (ReviewAnswersTable), in one transaction.
"""

from __future__ import annotations

import time
from collections import Counter

from flywheel.adapters import answers, items, parameters, storage
from flywheel.domain import answers as rules
from flywheel.domain.items import State, image_key, now_iso
from flywheel.domain.labels import InvalidLabel
from flywheel.domain.review import order_for_review
from flywheel.errors import BadRequest, Conflict, NotFound
from flywheel.services.human_labels import apply_label
from flywheel.settings import ReviewApiSettings

# A skipped item is not offered again to the same reviewer for this long.
SKIP_MEMORY_SECONDS = 3600


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(epoch))


def _reviewable(s: ReviewApiSettings) -> tuple[list[dict], list[dict], tuple[State, ...]]:
    """needs_review items, plus unlabeled ones while there is no champion (cold start)."""
    pending = list(items.query_state(s.ITEMS_TABLE, State.NEEDS_REVIEW))
    if parameters.get_champion(s.CHAMPION_PARAMETER) is not None:
        return pending, [], (State.NEEDS_REVIEW,)
    cold = list(items.query_state(s.ITEMS_TABLE, State.UNLABELED))
    return pending, cold, (State.NEEDS_REVIEW, State.UNLABELED)


def _with_item_ids(rows: list[dict]) -> list[dict]:
    return [i for i in rows if rules.ITEM_ID.fullmatch(str(i.get("item_id")))]


def _image_url(s: ReviewApiSettings, item_id: str) -> str:
    # The key comes from the (validated) item id only: never from a request or a record.
    return storage.presigned_get(
        s.DATA_BUCKET, image_key(rules.parse_item_id(item_id)), s.IMAGE_URL_SECONDS
    )


def next_items(s: ReviewApiSettings, reviewer: str, count: int, now: float | None = None) -> dict:
    """Up to ``count`` items leased to ``reviewer``, most informative first.

    The reviewer's own live leases come first (renewed), so a reload or a prefetch gets
    the same items back; then free ones in active-learning order, each taken with a
    conditional write (a lost race just moves on to the next item).
    """
    now = time.time() if now is None else now
    until = now + s.LEASE_SECONDS
    pending, cold, states = _reviewable(s)
    skipped = {
        a["item_id"]
        for a in answers.since(s.ANSWERS_TABLE, reviewer, _iso(now - SKIP_MEMORY_SECONDS))
        if a.get("action") == rules.SKIP
    }
    # A row whose id is not a content hash (never written by ingest) is never offered: its
    # image key could not be built, and it must not turn every reviewer's request into a 400.
    pending, cold = _with_item_ids(pending), _with_item_ids(cold)
    ordered = order_for_review(pending, len(pending) + len(cold), cold)
    mine = [i for i in ordered if rules.lease_holder(i, now) == reviewer]
    free = [
        i for i in ordered if rules.lease_holder(i, now) is None and i["item_id"] not in skipped
    ]
    out: list[dict] = []
    for item in mine + free:
        if len(out) >= count:
            break
        if items.take_lease(s.ITEMS_TABLE, item["item_id"], reviewer, now, until, states):
            out.append(rules.view(item, _image_url(s, item["item_id"]), until))
    return {"items": out, "lease_seconds": s.LEASE_SECONDS}


def _answerer(
    s: ReviewApiSettings, reviewer: str, answer: rules.Answer, now: float
) -> items.Answerer:
    answered_at = now_iso()

    def attributes(current: dict) -> dict:
        return {
            "answered_by": reviewer,
            "answered_at": answered_at,
            "model_suggestion": rules.recorded_suggestion(current),
        }

    def log(previous: dict, updated_at: str) -> dict:
        return answers.put_entry(
            s.ANSWERS_TABLE,
            {
                "reviewer": reviewer,
                "answered_at": answered_at,
                "answered_epoch": now,
                "item_id": answer.item_id,
                "action": answer.action,
                "label": answer.label,
                "model_suggestion": rules.recorded_suggestion(previous),
                "previous": rules.restorable(previous),
                "item_updated_at": updated_at,
            },
        )

    return items.Answerer(reviewer, now, attributes, log)


def answer(
    s: ReviewApiSettings, reviewer: str, given: rules.Answer, now: float | None = None
) -> dict:
    """Apply one answer; 'applied' or 'unchanged' (the same answer again)."""
    now = time.time() if now is None else now
    if given.action == rules.SKIP:
        return _skip(s, reviewer, given.item_id, now)
    by = _answerer(s, reviewer, given, now)
    if given.action == rules.REJECT:
        written = items.reject(s.ITEMS_TABLE, given.item_id, rules.REJECT_REASON, by)
    else:
        try:
            written = apply_label(
                s.ITEMS_TABLE, s.CLASS_NAMES, given.item_id, str(given.label), by, alarm=s
            )
        except InvalidLabel as exc:
            raise BadRequest(exc.reason, exc.code) from exc
    if written.outcome == "unknown":
        raise NotFound("no such item, or it cannot be labeled", "unknown_item")
    return {"outcome": written.outcome, "item_id": given.item_id, "action": given.action}


def _skip(s: ReviewApiSettings, reviewer: str, item_id: str, now: float) -> dict:
    item = items.get(s.ITEMS_TABLE, item_id)
    if item is None:
        raise NotFound("no such item", "unknown_item")
    holder = rules.lease_holder(item, now)
    if holder is not None and holder != reviewer:
        raise Conflict("another reviewer holds this item", "leased_by_other")
    record = {
        "reviewer": reviewer,
        "answered_at": now_iso(),
        "answered_epoch": now,
        "item_id": item_id,
        "action": rules.SKIP,
    }
    if holder is None or not items.release_lease(
        s.ITEMS_TABLE, item_id, reviewer, answers.put_entry(s.ANSWERS_TABLE, record)
    ):
        return {"outcome": "unchanged", "item_id": item_id, "action": rules.SKIP}
    return {"outcome": "applied", "item_id": item_id, "action": rules.SKIP}


def undo(s: ReviewApiSettings, reviewer: str, now: float | None = None) -> dict:
    """Revert the reviewer's last answer if the item is still as that answer left it.

    The item comes back leased to the reviewer (to answer it again) and is returned.
    """
    now = time.time() if now is None else now
    until = now + s.LEASE_SECONDS
    last = answers.last(s.ANSWERS_TABLE, reviewer)
    if last is None:
        raise NotFound("nothing to undo", "nothing_to_undo")
    item_id = rules.parse_item_id(last["item_id"])
    if last["action"] == rules.SKIP:
        _, _, states = _reviewable(s)
        if not items.take_lease(s.ITEMS_TABLE, item_id, reviewer, now, until, states):
            raise Conflict("the item was taken or changed since the skip", "changed_since")
        answers.delete(s.ANSWERS_TABLE, reviewer, last["answered_at"])
    else:
        lease = {"lease_owner": reviewer, "lease_expires": until}
        restored = items.restore(
            s.ITEMS_TABLE,
            rules.restorable(last["previous"]),
            last["item_updated_at"],
            lease,
            answers.delete_entry(s.ANSWERS_TABLE, reviewer, last["answered_at"]),
            label=last.get("label") if last["action"] == rules.LABEL else None,
        )
        if not restored:
            raise Conflict("the item changed since your answer", "changed_since")
    item = items.get(s.ITEMS_TABLE, item_id) or {"item_id": item_id}
    return {
        "outcome": "undone",
        "action": last["action"],
        "item": rules.view(item, _image_url(s, item_id), until),
    }


def stats(s: ReviewApiSettings, reviewer: str, now: float | None = None) -> dict:
    """The reviewer's progress, what is left, items by state, the retrain counter, and the
    classes the app offers as buttons."""
    now = time.time() if now is None else now
    mine = answers.since(s.ANSWERS_TABLE, reviewer, "0")
    actions = Counter(a.get("action") for a in mine)
    by_state = {state.value: items.count_state(s.ITEMS_TABLE, state) for state in State}
    champion = parameters.get_champion(s.CHAMPION_PARAMETER)
    cold_start = champion is None
    left = by_state[State.NEEDS_REVIEW] + (by_state[State.UNLABELED] if cold_start else 0)
    meta = items.get_training_meta(s.ITEMS_TABLE)
    new_labels = items.count_state(s.ITEMS_TABLE, State.HUMAN_LABELED, meta.get("started_at"))
    answered = [float(a["answered_epoch"]) for a in mine if a.get("action") != rules.SKIP]
    return {
        "reviewer": reviewer,
        "done": actions[rules.LABEL] + actions[rules.REJECT],
        "labeled": actions[rules.LABEL],
        "rejected": actions[rules.REJECT],
        "skipped": actions[rules.SKIP],
        "labels_per_minute": rules.labels_per_minute(answered, now),
        "left": left,
        "cold_start": cold_start,
        "items_by_state": by_state,
        "retrain": {"new_human_labels": new_labels, "needed": s.MIN_NEW_HUMAN_LABELS},
        "classes": rules.offered_classes(s.CLASS_NAMES, champion.classes if champion else None),
    }
