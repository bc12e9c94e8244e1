"""The model registry as the rollout sees it: three aliases, read and moved in MLflow.

`candidate` names the version to test next (the trainer moves it), `champion` the
version serving as stable, `baseline` the frozen bootstrap version scored beside it
(`driftline.api.artifacts`). MLflow is reached through `driftline.common.registry`,
which imports it on first use, so importing the rollout library stays cheap.
"""

from __future__ import annotations

from driftline.api.artifacts import ALIAS_BASELINE, ALIAS_CANDIDATE, ALIAS_CHAMPION
from driftline.common.registry import RegisteredModel, RegistryError
from driftline.rollout.snapshot import RegistryView

__all__ = ["ModelRegistry", "RegistryError"]


class ModelRegistry:
    def __init__(self, tracking_uri: str, name: str) -> None:
        self.name = name
        self.model = RegisteredModel(tracking_uri, name)

    def view(self) -> RegistryView:
        aliases = self.model.aliases()
        return RegistryView(
            champion=aliases.get(ALIAS_CHAMPION),
            candidate=aliases.get(ALIAS_CANDIDATE),
            baseline=aliases.get(ALIAS_BASELINE),
        )

    def set_alias(self, alias: str, version: str) -> None:
        self.model.set_alias(alias, version)

    def delete_alias(self, alias: str, version: str) -> None:
        """Remove `alias` if it still names `version` (a newer one keeps its alias)."""
        self.model.delete_alias(alias, if_version=version)
