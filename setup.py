"""Packaging for mailerq-gevent. Dependencies are pinned in requirements.txt."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def requirements():
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="mailerq-gevent",
    version="0.1.0",
    description="A gevent-based bulk-mail transfer agent in the spirit of MailerQ",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(exclude=["tests", "tests.*"]),
    python_requires=">=3.11",
    install_requires=requirements(),
    entry_points={"console_scripts": ["mailerq-gevent = mailerq_gevent.__main__:main"]},
)
