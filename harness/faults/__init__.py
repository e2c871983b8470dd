"""Problems the harness attributes to one host: stable fault codes (codes.py),
their occurrences (Fault), and the quarantine that keeps a bad host out of the
next jobs (quarantine.py, results/quarantine.json)."""
