"""Everything about the package is in pyproject.toml except one thing pyproject cannot say
together with package discovery: the Hydra config tree ``conf/`` (the repository's top level
is its source) ships inside the installed package as ``pipeline/conf``, in wheels and in
editable installs alike (pipeline.config.CONF_DIR finds it there)."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["sgdsweep*", "pipeline*"]), "pipeline.conf"],
    package_dir={"pipeline.conf": "conf"},
    package_data={"pipeline.conf": ["*.yaml", "*/*.yaml"]},
)
