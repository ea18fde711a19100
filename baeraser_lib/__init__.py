"""baeraser_lib: the tested library behind the BAERASER notebooks.

Ground floor: data, models, config, triggers; then train, metrics, artifacts; then attacks
(and, in later issues, defenses); on top, the report runner. Imports only point down.
"""

__version__ = "0.1.0"
