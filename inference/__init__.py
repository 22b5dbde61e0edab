"""The pure labelling logic (retrieval, scoring, painting, outputs, evaluation, report), and the Python API.

    from inference import Labeller, ReferenceSet

    ref = ReferenceSet.open("out/reference")
    result = Labeller(ref, ["cat", "dog", "sky"]).label("photo.jpg")

See inference.api (and the README's "Python API" section).
"""

from inference.api import Labeller, LabelResult, ReferenceSet

__all__ = ["LabelResult", "Labeller", "ReferenceSet"]
