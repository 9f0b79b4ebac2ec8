"""Statistics on a stored sweep: temperature, barriers, LEWC fits, sufficient conditions, ensembles, claims."""
