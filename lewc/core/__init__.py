"""What every layer of lewc shares: the conventions, errors and exit codes, atomic I/O, the device."""
