"""ucwasim: a UCWA 2.0 (Skype for Business REST API) server simulator for tests and demos.

Start it in-process with ``Simulator(SimConfig(...)).start()`` or from the ``ucwasim`` CLI.
"""

from ucwasim.config import SimConfig, SimUser
from ucwasim.simulator import Simulator

__all__ = ["SimConfig", "SimUser", "Simulator"]
