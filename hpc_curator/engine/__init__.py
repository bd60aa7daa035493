"""What runs an attempt: begin and end, the one rank program and its loop, schedulers (static,
shared counter, elastic claims), commits, stages, signals, poison pills, the merge."""
