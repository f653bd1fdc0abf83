"""Domain state and rules: assets, accounts, clock, errors. Pure Python, no HTTP."""
