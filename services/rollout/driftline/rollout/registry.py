"""The model registry as the rollout sees it: three aliases, read and moved in MLflow.

`candidate` names the version to test next (the trainer moves it), `champion` the
version serving as stable, `baseline` the frozen bootstrap version scored beside it
(`driftline.api.artifacts`). MLflow is imported when a registry is made, not when
this module is, so importing the rollout library stays cheap.
"""

from __future__ import annotations

from typing import Any

from driftline.api.artifacts import ALIAS_BASELINE, ALIAS_CANDIDATE, ALIAS_CHAMPION
from driftline.rollout.snapshot import RegistryView


class RegistryError(RuntimeError):
    """The registry could not be read or changed (unreachable, refused)."""


class ModelRegistry:
    def __init__(self, tracking_uri: str, name: str) -> None:
        from mlflow import MlflowClient

        self.name = name
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def _aliases(self) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            model = self._client.get_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}  # nothing registered yet: no versions, no aliases
            raise RegistryError(f"reading aliases of {self.name!r}: {exc}") from exc
        except Exception as exc:  # connection errors surface as requests exceptions
            raise RegistryError(f"reading aliases of {self.name!r}: {exc}") from exc
        return {alias: str(version) for alias, version in (model.aliases or {}).items()}

    def view(self) -> RegistryView:
        aliases = self._aliases()
        return RegistryView(
            champion=aliases.get(ALIAS_CHAMPION),
            candidate=aliases.get(ALIAS_CANDIDATE),
            baseline=aliases.get(ALIAS_BASELINE),
        )

    def set_alias(self, alias: str, version: str) -> None:
        self._call("set_registered_model_alias", alias, version)

    def delete_alias(self, alias: str, version: str) -> None:
        """Remove `alias` if it still names `version` (a newer one keeps its alias)."""
        if self._aliases().get(alias) == version:
            self._call("delete_registered_model_alias", alias)

    def _call(self, method: str, *args: Any) -> None:
        try:
            getattr(self._client, method)(self.name, *args)
        except Exception as exc:
            raise RegistryError(f"{method}{args} on {self.name!r}: {exc}") from exc
