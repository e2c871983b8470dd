"""Is the figure right for the hardware: reference data (reference.py), MFU and % of
expected (efficiency.py), and how they read in the reports (text.py)."""
