"""Hyperparameter tuning jobs (placeholder until the optuna driver lands)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .protocol import AwsError

if TYPE_CHECKING:
    from .service import LocalSageMaker


class Tuning:
    def __init__(self, svc: LocalSageMaker) -> None:
        self.svc = svc

    def _todo(self, *_: Any) -> dict[str, Any]:
        raise AwsError("UnknownOperationException", "tuning jobs are not implemented yet")

    create = describe = list = list_children = stop = _todo

    def on_training_finished(self, name: str) -> None:
        pass

    def resume_all(self) -> None:
        pass

    def shutdown(self) -> None:
        pass
