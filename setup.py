"""Packaging for deblurlayers.

The native kernels are compiled just in time on first use, so the wheel is pure
Python: the C++/CUDA sources in the top-level ``csrc/`` are shipped inside the
package as ``deblurlayers/_csrc`` (MANIFEST.in alone would only feed the sdist).
"""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC_SUFFIXES = (".cpp", ".h", ".cu", ".cuh")


def read_version():
    with open(os.path.join(HERE, "deblurlayers", "version.py")) as f:
        return re.search(r'__version__\s*=\s*"([^"]+)"', f.read()).group(1)


def csrc_packages():
    """Map every folder of csrc/ to a (data-only) sub-package of deblurlayers._csrc."""
    package_dir, package_data = {}, {}
    for root, _, files in os.walk(os.path.join(HERE, "csrc")):
        rel = os.path.relpath(root, HERE)  # csrc, csrc/haar/cpu, ...
        package = ".".join(["deblurlayers._csrc"] + rel.split(os.sep)[1:])
        package_dir[package] = rel.replace(os.sep, "/")
        package_data[package] = sorted(f for f in files if f.endswith(CSRC_SUFFIXES))
    return package_dir, package_data


csrc_dir, csrc_data = csrc_packages()

setup(
    name="deblurlayers",
    version=read_version(),
    description="Reusable video-deblurring layers with native C++/CUDA kernels",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    python_requires=">=3.9",
    packages=find_packages(include=["deblurlayers", "deblurlayers.*"]) + sorted(csrc_dir),
    package_dir=csrc_dir,
    package_data=csrc_data,
    include_package_data=False,
    install_requires=["torch>=2.4", "numpy", "einops", "ninja"],
    extras_require={
        "io": ["Pillow"],  # image frames: restore, evaluate, deblurlayers.data
        "video": ["av"],  # video files in and out (PyAV)
        "progress": ["tqdm"],  # a nicer progress bar (a plain stderr line without it)
        # scikit-image is the independent oracle of the metric tests only
        "test": ["pytest", "hypothesis", "Pillow", "av", "scikit-image"],
    },
    entry_points={"console_scripts": ["deblurlayers-info=deblurlayers.__main__:main"]},
)
