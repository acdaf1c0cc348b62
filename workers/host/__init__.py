"""The service host (`python -m workers.host`): in-process services (`services/`) in supervised
threads, and the supervisor of every Vigil process (`supervisor.py`, `pools.py`)."""
