"""``python -m lewc`` is ``python -m lewc.verify``."""

from lewc.verify import main

main()
