"""The trainer's import command for `spec.model.initial`: one spelling for every face.

The operator's import Job and `driftline up` both run
`python -m driftline.trainer import ARGS --if-no-version`; ARGS come from here, so
the two never drift from each other or from the trainer's own flags (a test parses
them with the trainer's parser).
"""

from __future__ import annotations

from driftline.api.spec import InitialModelSpec

IF_NO_VERSION = "--if-no-version"
"""Import only while the registry has no champion: the command is safe to run again."""


def import_arguments(initial: InitialModelSpec) -> list[str]:
    """The arguments after `import`: the model's URI and the options the spec sets."""
    args = [initial.uri]
    if initial.sample is not None:
        args += ["--sample", initial.sample]
    if initial.format is not None:
        args += ["--format", initial.format]
    if initial.label_column != "label":
        args += ["--label-column", initial.label_column]
    if initial.output is not None:
        args += ["--output", initial.output]
    for name in initial.trust:
        args += ["--trust", name]
    if initial.signature is not None:
        args += ["--signature", initial.signature]
    return [*args, IF_NO_VERSION]
