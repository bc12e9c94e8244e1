"""The Driftline contract: the DynamicModel resource, the event schemas and the parts.

The ground floor. It imports nothing else of Driftline, and every other package
reads the same YAML and the same Kafka messages through it.
"""

from driftline.api.parts import PARTS, Part
from driftline.api.resource import DynamicModel, SpecError, load_dynamic_model, parse_dynamic_model
from driftline.api.spec import API_VERSION, GROUP, KIND, PLURAL, VERSION, DynamicModelSpec
from driftline.api.status import DynamicModelStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PARTS",
    "PLURAL",
    "VERSION",
    "DynamicModel",
    "DynamicModelSpec",
    "DynamicModelStatus",
    "Part",
    "SpecError",
    "load_dynamic_model",
    "parse_dynamic_model",
]
