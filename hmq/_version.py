"""The release: calendar versioning, YY.MM.MICRO (PEP 440).

The numbering continues the earlier hmq releases (25.x) on the package index, so that
``pip install --upgrade hmq`` moves an installation of one of them to this line.
"""

__version__ = "26.12.0"
