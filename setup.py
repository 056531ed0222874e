"""Install mammo_keras: `pip install -e .` (add `[test]` for the test runner)."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _requirements() -> tuple[list[str], list[str]]:
    """requirements.txt: runtime needs, then, after the `# Tests` line, what only the tests need."""
    runtime, tests = [], []
    current = runtime
    for line in (HERE / "requirements.txt").read_text().splitlines():
        if line.startswith("# Tests"):
            current = tests
        elif line.strip() and not line.startswith("#"):
            current.append(line.strip())
    return runtime, tests


RUNTIME, TEST = _requirements()

setup(
    name="mammo_keras",
    version="0.1.0",
    description="Keras/TensorFlow replications of deep-learning mammography papers",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["mammo_keras", "mammo_keras.*"]),
    package_data={"mammo_keras.data": ["*.json"], "mammo_keras.app": ["templates/*.html"]},
    install_requires=RUNTIME,
    # JPEG 2000 DICOMs (many RSNA 2023 files): pip install mammo_keras[jpeg2000]
    extras_require={"test": TEST, "jpeg2000": ["pylibjpeg>=2.0", "pylibjpeg-openjpeg>=2.0"]},
    entry_points={"console_scripts": ["mammo-keras=mammo_keras.cli:main"]},
)
