"""A torch module saved as TorchScript, exported to ONNX with torch.onnx.

Only a TorchScript archive (`torch.jit.script(model).save(path)` or
`torch.jit.trace(...)`) is read, with `torch.jit.load`: TorchScript's own loader
builds TorchScript types from the archive and compiles its TorchScript code; it runs
no Python from the file. A file written by `torch.save` (a whole module or a state
dict) is a pickle and is refused before anything reads it: it is told apart by the
archive's entries, not loaded to find out. A state dict alone is not a model either
(it holds weights, not the computation).

The module's `forward` takes either one float tensor [N, k] (the spec's numeric
features in order) or one tensor per numeric feature, each argument named after its
feature ([N, 1]). Its output is what the contract serves: probabilities [N, C] (end a
classifier with a softmax) or values [N] / [N, 1]. The exported graph goes through
the same input mapping as any ONNX model, and parity is checked against the
TorchScript module itself on the same float32 rows.
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray

from driftline.common.features import FeatureLayout
from driftline.trainer import export
from driftline.trainer.import_sources import ModelImportError, Source


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive holds its compiled code (`<name>/code/...`) and constants."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    has_code = any("/code/" in n for n in names)
    has_constants = any(n.endswith("/constants.pkl") for n in names)
    return has_code and has_constants


def refuse_torch_save(path: Path) -> ModelImportError:
    return ModelImportError(
        f"{path.name} is not a TorchScript archive: a file written by torch.save (a whole "
        "module or a state dict) is a pickle, and Driftline never unpickles (a state dict "
        "holds weights, not the model's computation). Save the module with "
        "`torch.jit.script(model).save('model.pt')`, or export it yourself with "
        "torch.onnx.export and import the .onnx file"
    )


def torchscript_source(path: Path, layout: FeatureLayout, task: str) -> Source:
    """Load a TorchScript module, export it to ONNX; answers with the module itself."""
    if not is_torchscript(path):
        raise refuse_torch_save(path)
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    except RuntimeError as exc:
        raise ModelImportError(f"{path.name}: torch cannot load it as TorchScript: {exc}") from exc
    module.eval()
    arguments = [a.name for a in module.forward.schema.arguments][1:]  # after self
    names = _input_names(arguments, layout)
    # Arguments named after features are one [N, 1] tensor each; one other is [N, k].
    per_feature = len(names) > 1 or names[0] in layout.numeric_names
    width = len(layout.numeric)
    example = tuple(torch.zeros(2, 1) for _ in names) if per_feature else (torch.zeros(2, width),)
    with tempfile.TemporaryDirectory(prefix="driftline-torch-") as tmp:
        exported = Path(tmp) / "model.onnx"
        try:
            torch.onnx.export(
                module,
                example,
                str(exported),
                dynamo=False,  # the TorchScript exporter: it takes a ScriptModule as it is
                input_names=names,
                output_names=["output"],
                dynamic_axes={**{n: {0: "N"} for n in names}, "output": {0: "N"}},
                opset_version=export.OPSET,
            )
        except Exception as exc:  # torch's tracing and export errors, said plainly
            shapes = ", ".join(f"{n} [N, {1 if per_feature else width}]" for n in names)
            raise ModelImportError(
                f"torch cannot export the module fed {shapes} (the spec's numeric features): {exc}"
            ) from exc
        graph = onnx.load_model(str(exported))

    def answers(numeric: NDArray[np.float32], _categorical: NDArray[Any]) -> NDArray[Any]:
        x = torch.from_numpy(np.ascontiguousarray(numeric, np.float32))
        feeds = tuple(x[:, [layout.numeric_names.index(n)]] for n in names) if per_feature else (x,)
        with torch.no_grad():
            out = module(*feeds)
        values = np.asarray(out.detach().numpy(), np.float64)
        return values if task == "classification" else values.ravel()

    return Source("torchscript", graph, answers)


def _input_names(arguments: list[str], layout: FeatureLayout) -> list[str]:
    """The export's input names: the forward's own; checked against the spec here."""
    if not arguments:
        raise ModelImportError("the TorchScript module's forward takes no input")
    text = [a for a in arguments if a in layout.categorical_names]
    if text:
        raise ModelImportError(
            f"the TorchScript module's input(s) {text} are categorical features (text), which a "
            "torch module cannot take: export the module with torch.onnx and put the encoding "
            "in the graph, or make them numeric features of the spec"
        )
    if len(arguments) == 1:
        if layout.categorical and arguments[0] not in layout.numeric_names:
            raise ModelImportError(
                f"the TorchScript module's input {arguments[0]!r} is one tensor, but the spec "
                f"has categorical features ({', '.join(layout.categorical_names)}) a torch "
                "module cannot take as text"
            )
        return arguments
    unknown = [a for a in arguments if a not in layout.numeric_names]
    if unknown:
        raise ModelImportError(
            f"the TorchScript module's inputs {unknown} are not numeric features of the spec "
            f"({', '.join(layout.numeric_names) or '-'}); name each argument of forward after "
            "its feature, or take one [N, k] tensor of the numeric features in order"
        )
    return arguments
