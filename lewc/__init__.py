"""lewc: verify permutation-free linear mode connectivity and LEWC of wide networks.

Reference: Ito, Yamada, Chijiwa, Kumagai, "Do We Really Need Permutations? Impact of Width
Expansion on Linear Mode Connectivity", arXiv 2510.08023 (ICLR 2026).
"""

from lewc.core.errors import quiet_startup_interrupts

__version__ = "0.1.0"

quiet_startup_interrupts()  # only when run as ``python -m lewc...``: Ctrl-C during imports is one line
