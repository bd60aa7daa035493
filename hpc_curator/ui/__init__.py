"""What people see while a run goes: the progress model, terminal views, journal following."""
