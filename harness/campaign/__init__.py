"""Overnight campaigns: a suite file of jobs, validated before the first starts,
run in order with retries of infrastructure failures, resumable from the state
kept on disk, locked per host, gated before each job, summarised in the morning.

    suite.py    the suite file as a validated model, and its jobs resolved
    check.py    every job checked before anything starts (no host touched)
    state.py    the durable state (results/campaigns/<name>/<stamp>/state.json)
    lock.py     one campaign per host: a lock directory taken over SSH
    gates.py    health gates before each job
    runner.py   the campaign loop: attempts, retries with backoff, resume
    recover.py  records of attempts the core runner did not record (gates, a dead controller)
    backend.py  the campaign's one backend: connections, environments and images kept
    stats.py    statistics over repeats
    summary.py  summary.md and summary.html; plots.py their matplotlib figures
    notify.py   webhook and command notifications
    view.py     the live job list (rich) or timestamped lines
    cli.py      `campaign run` and `campaign status`
"""
