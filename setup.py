"""Install mammo_keras: `pip install -e .` (add `[test]` for the test runner)."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
RUNTIME = [
    line.strip()
    for line in (HERE / "requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#") and not line.startswith("pytest")
]

setup(
    name="mammo_keras",
    version="0.1.0",
    description="Keras/TensorFlow replications of deep-learning mammography papers",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["mammo_keras", "mammo_keras.*"]),
    package_data={"mammo_keras.data": ["*.json"]},
    install_requires=RUNTIME,
    extras_require={"test": ["pytest>=7.4"]},
    entry_points={"console_scripts": ["mammo-keras=mammo_keras.cli:main"]},
)
