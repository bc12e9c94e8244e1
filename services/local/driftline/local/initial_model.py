"""`spec.model.initial` on a laptop: `driftline up` imports the model before the parts start.

The operator runs the trainer's import command as a Job; `driftline up` runs the same
command (`python -m driftline.trainer import ... --if-no-version`) against its own
servers, before it starts the parts, so inference finds version 1 when it starts. A
run that has a champion already (a state directory kept with `fresh=False`) imports
nothing. A relative path in the spec is taken from the model file's folder, where the
user keeps the YAML beside the model; URIs (`file://`, `s3://`, `runs:/`...) are
passed on as they are.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from driftline.api.spec import InitialModelSpec
from driftline.common.import_command import import_arguments as spec_arguments


def _local(value: str, base: Path) -> str:
    if urlparse(value).scheme:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def import_arguments(initial: InitialModelSpec, model_file: Path) -> list[str]:
    """The arguments after `python -m driftline.trainer import`, paths made absolute
    (`--if-no-version` included)."""
    resolved = initial.model_copy(
        update={
            "uri": _local(initial.uri, model_file.parent),
            "sample": _local(initial.sample, model_file.parent) if initial.sample else None,
        }
    )
    return spec_arguments(resolved)
